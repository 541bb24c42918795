"""`driftline demo` as a new user runs it: the story's facts, read from its summary."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(420)
def test_demo_tells_the_whole_story(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "driftline", "demo", "--output-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=400,
        env={**__import__("os").environ, "COLUMNS": "120"},
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    facts = json.loads((tmp_path / "summary.json").read_text())

    # Validations and the shadow comparison flag exactly the requests they should.
    assert facts["smoke_test_failures"] == []
    assert "no_high_fraud" in facts["high_fraud_failures"]
    assert "no_model_drift" in facts["drifted_failures"]

    # The count alert's email went out on firing and on resolving.
    assert "FIRING: high_fraud_5m" in facts["firing_email"]["subject"]
    assert facts["firing_email"]["to"] == "ops@example.com"
    assert "RESOLVED: high_fraud_5m" in facts["resolved_email"]["subject"]
    assert facts["slack_posts"] >= 2

    # The assay: ok on normal traffic, then warning before alert once drift arrives.
    statuses = facts["assay_statuses"]
    assert len(statuses) == 18
    assert set(statuses[:11]) == {"ok"}
    assert statuses.index("warning") < statuses.index("alert")
    assert (tmp_path / "assay_scores.png").stat().st_size > 10_000

    # Replay recomputed the same windows, scores and transitions.
    replay = facts["replay"]
    assert replay["differences"] == 0
    assert replay["compared_assays"] >= 10 and replay["compared_notifications"] >= 1

    # What the user saw says the same, with numbers from the run.
    for step in ("1. Validations", "2. Shadow deploy", "3. Count alert", "4. Assay", "5. Replay"):
        assert step in proc.stdout
    assert "identical" in proc.stdout
    # librdkafka's own lines go through logging, never raw onto the story ("%4|…|GETPID|…")
    assert not re.search(r"^%\d\|", proc.stdout + proc.stderr, re.MULTILINE)
