"""A monitor started after the results exist applies them all, whenever faust resumes its flow.

faust resumes the consumer's flow at the end of every rebalance, and resuming empties the
queues of its channels. A fetch read just before (between recovery's seek to the committed
offsets and the resume) used to be handed to the monitor through such a channel and dropped,
while the consumer's position had already moved past it: a pipeline's new results topic, with
no committed offsets, was then never read again, and the monitor sat idle with no error.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from driftline.config import KafkaSettings
from driftline.spec import spec_from_dict
from driftline.streams.control import ControlPlane, ensure_topics

from ._monitor_helpers import produce, result, start_monitor, stop, wait_for, wait_for_log

pytestmark = pytest.mark.integration

MODEL = Path(__file__).resolve().parents[2] / "examples" / "fraud" / "models" / "ccfraud.onnx"
MINUTE = 60_000
BASELINE = [round(float(x), 4) for x in np.linspace(0.0, 0.6, 100)]


def _rows(t0: int) -> list[tuple[int, bytes, int]]:
    """One result a second for two minutes, and one past them that closes both windows."""
    rows = [(0, result(t0 + j * 1000, 0.005 * (j % 60), j), t0 + j * 1000) for j in range(120)]
    end = t0 + 2 * MINUTE + 1000
    return [*rows, (0, result(end, 0.1, 120), end)]


def _counts(assays: list[dict[str, Any]], t0: int) -> dict[int, int]:
    return {a["window_start"] - t0: a["count"] for a in assays if a["window_start"] >= t0}


def test_a_fetch_handed_over_as_faust_resumes_its_flow_is_applied(
    topic_prefix: str, redis_prefix: str, tmp_path: Path
) -> None:
    k = KafkaSettings(topic_prefix=topic_prefix)
    ensure_topics(k, [k.topic("fraud", "results")], partitions=1)
    ensure_topics(k, [k.topic("assays"), k.topic("notifications")], partitions=1)
    t0 = (int(time.time() * 1000) // MINUTE - 10) * MINUTE
    produce(k.client_config(), k.topic("fraud", "results"), _rows(t0), txid=f"{topic_prefix}-w")
    conf = {
        "topic_prefix": topic_prefix,
        "key_prefix": redis_prefix,
        "group": f"{topic_prefix}-monitor",
        "datadir": str(tmp_path / "faust"),
        "resume_flow_after_first_batch": True,
        "pipelines": [
            {
                "name": "fraud",
                "partitions": 1,
                "assays": [
                    {
                        "name": "drift",
                        "iopath": "m.outputs[0][0]",
                        "baseline": BASELINE,
                        "width_ms": MINUTE,
                        "interval_ms": MINUTE,
                        "metric": "psi",
                        "thresholds": {"warning": 0.1, "alert": 0.25},
                    }
                ],
            }
        ],
    }
    path = tmp_path / "monitor.json"
    path.write_bytes(orjson.dumps(conf))
    log = tmp_path / "monitor.log"
    proc = start_monitor(path, tmp_path, log)
    try:
        wait_for_log(log, "flow resumed after the first batch", 90)
        assays = wait_for(
            k.client_config(), k.topic("assays"), lambda got: len(_counts(got, t0)) >= 2, 60
        )
    finally:
        stop(proc)
    text = log.read_text(errors="replace")
    assert _counts(assays, t0) == {0: 60, MINUTE: 60}, text
    assert "handling partition 0" in text


def test_driftline_monitor_started_after_the_results_exist_applies_them(
    topic_prefix: str, redis_prefix: str, tmp_path: Path, unique: str
) -> None:
    k = KafkaSettings(topic_prefix=topic_prefix)
    spec = {
        "name": "late",
        "models": [{"name": "ccfraud", "path": str(MODEL)}],
        "assays": {
            "drift": {
                "iopath": "ccfraud.outputs[0][0]",
                "baseline": {"values": BASELINE},
                "window": {"width": "1m", "interval": "1m"},
                "metric": "psi",
                "thresholds": {"warning": 0.1, "alert": 0.25},
            }
        },
        "options": {"lateness": "1s", "partitions": 1},
    }
    cp = ControlPlane(k)
    cp.deploy(spec_from_dict(spec))
    cp.close()
    t0 = (int(time.time() * 1000) // MINUTE - 10) * MINUTE
    rows = [
        (0, orjson.dumps({**orjson.loads(v), "outputs": {"ccfraud": [[0.3]]}}), t)
        for _p, v, t in _rows(t0)
    ]
    produce(k.client_config(), k.topic("late", "results"), rows, txid=f"{topic_prefix}-w")
    env = dict(
        os.environ,
        DRIFTLINE_TOPIC_PREFIX=topic_prefix,
        DRIFTLINE_KEY_PREFIX=redis_prefix,
        DRIFTLINE_MONITOR_GROUP=f"monitor-{unique}",
        DRIFTLINE_MONITOR_DATADIR=str(tmp_path / "faust"),
        DRIFTLINE_MONITOR_IDLE_CLOSE_MS="3600000",
    )
    env.pop("DRIFTLINE_METRICS_PORT", None)
    log = tmp_path / "monitor.log"
    with open(log, "ab") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "driftline", "monitor"],
            env=env,
            cwd=tmp_path,
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_log(log, re.escape(k.topic("late", "results")) + r"\s*\|\s*\{0", 90)
        assays = wait_for(
            k.client_config(), k.topic("assays"), lambda got: len(_counts(got, t0)) >= 2, 60
        )
    finally:
        stop(proc)
    assert _counts(assays, t0) == {0: 60, MINUTE: 60}, log.read_text(errors="replace")
