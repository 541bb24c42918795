"""One live run: a pipeline with one assay per metric the registry lists, on real Kafka and
Redis, through ``driftline monitor``; every assay emits its windows (MMD from its Redis
samples) and ``driftline replay --audit`` reports zero differences."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from driftline.config import KafkaSettings
from driftline.detectors import P_VALUE_METRICS, live_metrics
from driftline.spec import spec_from_dict
from driftline.streams.control import ControlPlane

from ._monitor_helpers import produce, stop, wait_for

pytestmark = pytest.mark.integration

MODEL = Path(__file__).resolve().parents[2] / "examples" / "fraud" / "models" / "ccfraud.onnx"


def _spec(baseline: list[float]) -> dict[str, Any]:
    return {
        "name": "every",
        "models": [{"name": "ccfraud", "path": str(MODEL)}],
        "assays": {
            f"a_{m}": {
                "iopath": "ccfraud.outputs[0][0]",
                "baseline": {"values": baseline},
                "window": {"width": "4s", "interval": "2s"},
                "metric": m,
                "thresholds": {"alpha": 0.01}
                if m in P_VALUE_METRICS
                else {"warning": 0.1, "alert": 0.25},
            }
            for m in live_metrics()
        },
        "options": {"lateness": "1s", "partitions": 2},
    }


def test_one_assay_per_metric_runs_live_and_replay_agrees(
    cli, topic_prefix, redis_prefix, tmp_path
):  # type: ignore[no-untyped-def]
    env = dict(os.environ)
    env.update(
        {
            "DRIFTLINE_TOPIC_PREFIX": topic_prefix,
            "DRIFTLINE_KEY_PREFIX": redis_prefix,
            "DRIFTLINE_MONITOR_GROUP": f"{topic_prefix}-monitor",
            "DRIFTLINE_MONITOR_DATADIR": str(tmp_path / "faust"),
            "DRIFTLINE_MONITOR_IDLE_CLOSE_MS": "3600000",
        }
    )
    rng = np.random.default_rng(4)
    baseline = [round(float(x), 6) for x in rng.uniform(0.0, 0.6, 300)]
    k = KafkaSettings(topic_prefix=topic_prefix)
    cp = ControlPlane(k)
    cp.deploy(spec_from_dict(_spec(baseline)))
    cp.close()
    t0 = (int(time.time()) // 10 - 60) * 10_000
    rows = []
    for i in range(20 * 30):
        sec = i // 30
        v = float(rng.uniform(0.3, 0.9) if sec >= 10 else rng.uniform(0.0, 0.6))
        t = t0 + sec * 1000 + (i % 30) * 30
        doc = {"id": f"r{i}", "row": 0, "time": t, "outputs": {"ccfraud": [[v]]}, "inputs": []}
        rows.append((i % 2, orjson.dumps(doc), t))
    for p in range(2):  # moves every partition's watermark past the last window
        end = t0 + 40_000
        rows.append(
            (p, orjson.dumps({"id": f"e{p}", "time": end, "outputs": {"ccfraud": [[0.1]]}}), end)
        )
    produce(k.client_config(), k.topic("every", "results"), rows, txid=f"{topic_prefix}-p")
    log = tmp_path / "monitor.log"
    with open(log, "ab") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "driftline", "monitor"],
            env=env,
            cwd=tmp_path,
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    names = {f"a_{m}" for m in live_metrics()}
    try:
        assays = wait_for(
            k.client_config(),
            k.topic("assays"),
            lambda got: {a["assay"] for a in got if a["window_end"] >= t0 + 20_000} == names,
        )
    finally:
        stop(proc)
    text = log.read_text(errors="replace")
    by_assay: dict[str, list[int]] = {}
    for a in assays:
        assert a["status"] in ("ok", "warning", "alert"), (a, text)
        by_assay.setdefault(a["assay"], []).append(a["window_end"] - t0)
    expected = [2000 * i for i in range(1, 11)]  # windows ending 2 s .. 20 s hold data
    assert {n: sorted(e)[:10] for n, e in by_assay.items()} == {n: expected for n in names}, text
    mmd = sorted((a for a in assays if a["assay"] == "a_mmd"), key=lambda a: a["window_end"])
    assert mmd[0]["status"] == "ok" and mmd[6]["status"] == "alert"  # the shift at 10 s

    r = cli(
        env, "replay", "every", "--from", str(t0), "--to", str(t0 + 20_000), "--audit", "--json"
    )
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads(r.stdout)
    assert doc["audit"]["differences"] == []
    assert doc["audit"]["compared_assays"] == len(names) * 10 - len(
        names
    )  # first windows start before t0
