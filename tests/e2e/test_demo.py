"""`driftline demo` as a new user runs it: the story's facts, read from its summary."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.e2e

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fraud"


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

    # Outcomes: every minute's window closed with an estimate and no label (revision 0); the
    # estimate dropped in the fraud wave; the late labels revised every window, the wave's
    # realized accuracy fell under the estimate and the spec's threshold, and the alert's
    # email fired, then resolved with the labels of normal traffic.
    perf = facts["performance"]
    spec = yaml.safe_load((EXAMPLE / "pipeline.yaml").read_text())["performance"][perf["name"]]
    threshold = float(spec["alerts"][perf["alert"]]["when"].split("<")[1])
    assert perf["threshold"] == threshold
    n = len(statuses)
    assert perf["labeled_at_close"] == [0] * n and perf["revision_at_close"] == [0] * n
    wave = perf["wave_windows"]
    before = [m for m in range(min(wave)) if m != 11]
    est, real = perf["estimated_accuracy"], perf["realized_accuracy"]
    assert len(est) == len(real) == n
    # the join's realized accuracy equals the demo's own count from the results and the labels
    assert real == pytest.approx(perf["offline_accuracy"], abs=1e-6)
    assert max(est[m] for m in wave) < min(est[m] for m in before)
    assert all(real[m] < min(est[m], threshold) for m in wave)
    assert all(real[m] >= threshold for m in range(n) if m not in wave)
    assert perf["labeled"] == perf["predictions"] and sum(perf["labeled"]) == perf["labels_sent"]
    assert all(r >= 1 for r in perf["revisions"])
    assert f"FIRING: {perf['alert']} " in perf["firing_email"]["subject"]
    assert f"RESOLVED: {perf['alert']} " in perf["resolved_email"]["subject"]
    assert perf["firing_email"]["to"] == spec["alerts"][perf["alert"]]["notify"][0].split(":")[1]

    # What the user saw says the same, with numbers from the run.
    for step in (
        "1. Validations",
        "2. Shadow deploy",
        "3. Count alert",
        "4. Assay",
        "5. Replay",
        "6. Outcomes",
    ):
        assert step in proc.stdout
    assert "identical" in proc.stdout
    # librdkafka's own lines go through logging, never raw onto the story ("%4|…|GETPID|…")
    assert not re.search(r"^%\d\|", proc.stdout + proc.stderr, re.MULTILINE)
