"""One pipeline with one assay per metric the detector registry lists, run by `driftline monitor`
on the real broker and Redis: every assay emits its windows, and `driftline replay --audit`
finds no difference."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import orjson
import pytest
from confluent_kafka import Producer

from driftline import Client
from driftline.config import KafkaSettings, Settings
from driftline.detectors import METRICS
from driftline.spec import spec_from_dict

from ._stack import Stack
from .test_fuzz import _json, _read

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fraud"
MINUTE = 60_000
WINDOWS = 4
PER_WINDOW = 300


def _result(i: int, t: int, score: float) -> bytes:
    return orjson.dumps(
        {
            "id": f"r{i}",
            "row": 0,
            "time": t,
            "pipeline": "every",
            "spec": "s",
            "inputs": [0.0] * 29,
            "outputs": {"ccfraud": [[score]]},
            "models": {"ccfraud": "x"},
        }
    )


def test_every_metric_runs_live_and_replay_audits_clean(
    topic_prefix: str, redis_prefix: str, tmp_path: Path, unique: str
) -> None:
    baseline = np.loadtxt(EXAMPLE / "data" / "baseline.csv", delimiter=",", skiprows=1)
    settings = Settings(
        model_store=tmp_path / "store", kafka=KafkaSettings(topic_prefix=topic_prefix)
    )
    spec = spec_from_dict(
        {
            "name": "every",
            "models": [{"name": "ccfraud", "path": str(EXAMPLE / "models" / "ccfraud.onnx")}],
            "assays": {
                f"a_{metric}": {
                    "iopath": "ccfraud.outputs[0][0]",
                    "baseline": {"file": "data/baseline.csv", "column": "score"},
                    "window": {"width": "1m"},
                    "metric": metric,
                }
                for metric in METRICS
            },
            "options": {"lateness": "0s", "partitions": 1},
        },
        EXAMPLE,
    )
    Client(settings).deploy(spec)
    env = dict(
        os.environ,
        DRIFTLINE_TOPIC_PREFIX=topic_prefix,
        DRIFTLINE_KEY_PREFIX=redis_prefix,
        DRIFTLINE_MODEL_STORE=str(settings.model_store),
        DRIFTLINE_MONITOR_GROUP=f"monitor-{unique}",
        DRIFTLINE_MONITOR_IDLE_CLOSE_MS=str(3_600_000),
    )
    env.pop("DRIFTLINE_METRICS_PORT", None)
    rng = np.random.default_rng(5)
    t0 = (int(time.time() * 1000) - 30 * MINUTE) // MINUTE * MINUTE
    stack = Stack(env, tmp_path / "logs")
    assays_topic = settings.kafka.topic("assays")
    try:
        stack.start("monitor", "monitor")
        producer = Producer(settings.kafka.client_config())
        topic = settings.kafka.topic("every", "results")
        i = 0
        for w in range(WINDOWS):
            shift = 0.0 if w < WINDOWS - 1 else 0.3  # the last window drifts
            scores = np.clip(rng.choice(baseline, PER_WINDOW) + shift, 0.0, 1.0)
            times = t0 + w * MINUTE + np.sort(rng.integers(0, MINUTE, PER_WINDOW))
            for t, s in zip(times.tolist(), scores.tolist(), strict=True):
                producer.produce(topic, _result(i, t, s), partition=0, timestamp=t)
                i += 1
        end = t0 + WINDOWS * MINUTE + 1
        producer.produce(topic, _result(i, end, float(baseline[0])), partition=0, timestamp=end)
        assert producer.flush(30) == 0

        def emitted() -> dict[str, int]:
            counts: dict[str, int] = {}
            for m in _read(settings, assays_topic):
                doc = _json(m)
                if doc.get("pipeline") == "every":
                    counts[doc["assay"]] = counts.get(doc["assay"], 0) + 1
            return counts

        stack.wait(
            "every assay's windows",
            lambda: (c := emitted()) and all(c.get(f"a_{m}", 0) >= WINDOWS for m in METRICS),
            timeout_s=180,
        )
        assert not stack.dead(), stack.tails()
    finally:
        stack.stop()

    live = [_json(m) for m in _read(settings, assays_topic)]
    live = [d for d in live if d.get("pipeline") == "every"]
    assert {d["assay"] for d in live} == {f"a_{m}" for m in METRICS}
    assert all(d["status"] in ("ok", "warning", "alert") for d in live), [
        (d["assay"], d.get("detail")) for d in live if d["status"] not in ("ok", "warning", "alert")
    ]
    for d in live:
        assert d["count"] == PER_WINDOW and d["score"] is not None, d

    audit = subprocess.run(
        [
            sys.executable,
            "-m",
            "driftline",
            "replay",
            "every",
            "--from",
            str(t0),
            "--to",
            str(t0 + WINDOWS * MINUTE),
            "--audit",
            "--json",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert audit.returncode == 0, audit.stdout[-3000:] + audit.stderr[-3000:]
    report = json.loads(audit.stdout)
    assert report["audit"]["differences"] == []
    assert report["audit"]["compared_assays"] == len(METRICS) * WINDOWS
