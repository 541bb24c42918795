"""Live ``driftline monitor`` on a deployed spec, then ``driftline replay --audit`` over it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

from driftline.config import KafkaSettings
from driftline.spec import load_spec
from driftline.streams.control import ControlPlane

from ._monitor_helpers import produce, read_all, stop, wait_for

pytestmark = pytest.mark.integration

MODELS = Path(__file__).resolve().parents[2] / "examples" / "fraud" / "models"

SPEC = """
name: fraud
models:
  - {{name: ccfraud, path: {models}/ccfraud.onnx}}
alerts:
  burst:
    when: count(ccfraud.outputs[0][0] > 0.9, "3s", "1s") > {alert_threshold}
    notify: [webhook:test]
assays:
  drift:
    iopath: ccfraud.outputs[0][0]
    baseline: {{values: {baseline}}}
    window: {{width: 4s, interval: 2s}}
    metric: psi
    thresholds: {{warning: {warning}, alert: 0.5}}
    notify: [webhook:test]
  history:
    iopath: ccfraud.outputs[0][0]
    baseline: {{from: {hist_from}, to: {hist_to}}}
    window: {{width: 10s, interval: 10s}}
    metric: ks
    thresholds: {{alpha: 0.01}}
options: {{lateness: 1s, partitions: 3}}
"""


def _spec(
    tmp: Path, name: str, baseline: list[float], alert_threshold: int, warning: float, t0: int
) -> Path:
    path = tmp / name
    path.write_text(
        SPEC.format(
            models=MODELS,
            baseline=json.dumps(baseline),
            alert_threshold=alert_threshold,
            warning=warning,
            hist_from=t0,
            hist_to=t0 + 20_000,
        )
    )
    return path


@pytest.fixture
def env(topic_prefix, redis_prefix, tmp_path) -> dict[str, str]:  # type: ignore[no-untyped-def]
    e = dict(os.environ)
    e.update(
        {
            "DRIFTLINE_TOPIC_PREFIX": topic_prefix,
            "DRIFTLINE_KEY_PREFIX": redis_prefix,
            "DRIFTLINE_MONITOR_GROUP": f"{topic_prefix}-monitor",
            "DRIFTLINE_MONITOR_DATADIR": str(tmp_path / "faust"),
            "DRIFTLINE_MONITOR_IDLE_CLOSE_MS": "3600000",
        }
    )
    return e


def _results(t0: int, rng: np.random.Generator) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []
    i = 0
    for sec in range(40):
        for j in range(20):
            if sec in (10, 25) and j < 8:
                v = 0.97
            elif sec >= 20:
                v = float(rng.uniform(0.2, 0.7))
            else:
                v = float(rng.uniform(0.0, 0.5))
            t = t0 + sec * 1000 + j * 50
            doc = {
                "id": f"r{i}",
                "row": 0,
                "time": t,
                "pipeline": "fraud",
                "spec": "s",
                "inputs": [0.0] * 29,
                "outputs": {"ccfraud": [[v]]},
                "models": {"ccfraud": "x"},
            }
            rows.append((i % 3, orjson.dumps(doc), t))
            i += 1
    for p in range(3):
        t = t0 + 60_000
        doc = {
            "id": f"f{p}",
            "row": 0,
            "time": t,
            "pipeline": "fraud",
            "spec": "s",
            "inputs": [0.0] * 29,
            "outputs": {"ccfraud": [[0.1]]},
            "models": {},
        }
        rows.append((p, orjson.dumps(doc), t))
    return rows


def test_replay_audit_matches_live_and_reports_a_changed_threshold(cli, env, tmp_path):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(11)
    baseline = [round(float(x), 6) for x in rng.uniform(0.0, 0.5, 400)]
    t0 = (int(time.time()) // 10 - 60) * 10_000
    spec_path = _spec(tmp_path, "pipeline.yaml", baseline, 5, 0.1, t0)
    k = KafkaSettings(topic_prefix=env["DRIFTLINE_TOPIC_PREFIX"])
    cp = ControlPlane(k)
    cp.deploy(load_spec(spec_path))
    cp.close()
    produce(
        k.client_config(),
        k.topic("fraud", "results"),
        _results(t0, rng),
        txid=f"{env['DRIFTLINE_TOPIC_PREFIX']}-p",
    )

    log = tmp_path / "monitor.log"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with open(log, "ab") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "driftline", "monitor", "--metrics-port", str(port)],
            env=env,
            cwd=tmp_path,
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    try:
        conf = k.client_config()
        # every assay up to its last window (the history one computes its baseline first)
        assays = wait_for(
            conf,
            k.topic("assays"),
            lambda got: (
                {a["assay"] for a in got if a["window_end"] >= t0 + 40_000} == {"drift", "history"}
            ),
        )
        notes = wait_for(
            conf,
            k.topic("notifications"),
            lambda got: sum(n["kind"] == "alert" for n in got) >= 4,
            timeout=30,
        )
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    finally:
        stop(proc)
    text = log.read_text(errors="replace")
    assert 'driftline_monitor_events_total{pipeline="fraud"} 803.0' in metrics
    assert 'driftline_assay_score{assay="drift",pipeline="fraud"}' in metrics
    assert 'driftline_alert_firing{alert="burst",pipeline="fraud"} 0.0' in metrics
    alerts = [(n["state"], n["at"] - t0) for n in notes if n["kind"] == "alert"]
    assert alerts == [
        ("firing", 11000),
        ("resolved", 14000),
        ("firing", 26000),
        ("resolved", 29000),
    ], text
    assert assays and any(a["status"] != "ok" for a in assays), text

    # the same spec: zero differences
    r = cli(
        env, "replay", "fraud", "--from", str(t0), "--to", str(t0 + 40_000), "--audit", "--json"
    )
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads(r.stdout)
    assert doc["audit"]["differences"] == []
    assert doc["audit"]["compared_assays"] >= 15
    assert doc["audit"]["compared_notifications"] >= 4
    assert doc["events"] == 803

    # the same replay, written for an auditor as CSV and Parquet, with a chart
    csv, parquet, png = tmp_path / "r.csv", tmp_path / "r.parquet", tmp_path / "r.png"
    for path in (csv, parquet):
        args = ["--from", str(t0), "--to", str(t0 + 40_000), "--output", str(path)]
        w = cli(env, "replay", "fraud", *args, "--chart", str(png))
        assert w.returncode == 0, w.stdout + w.stderr
    import pandas as pd

    for frame in (pd.read_csv(csv), pd.read_parquet(parquet)):
        rows = frame[frame["record"] == "window"]
        assert len(rows) == len(doc["assays"])
        assert sorted(rows["value"].round(9)) == sorted(round(a["score"], 9) for a in doc["assays"])
        assert sorted(frame.loc[frame["record"] == "transition", "id"]) == sorted(
            n["id"] for n in doc["notifications"]
        )
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = cli(env, "replay", "fraud", "--from", str(t0), "--to", "now", "--output", "r.xlsx")
    assert bad.returncode == 2 and "r.xlsx" in bad.stderr

    # a copy with a lower alert threshold and a higher warning: differences, exit 1
    changed = _spec(tmp_path, "changed.yaml", baseline, 3, 0.4, t0)
    r = cli(
        env,
        "replay",
        "fraud",
        "--from",
        str(t0),
        "--to",
        str(t0 + 40_000),
        "--audit",
        "--json",
        "--spec",
        str(changed),
    )
    assert r.returncode == 1, r.stdout + r.stderr
    diffs = json.loads(r.stdout)["audit"]["differences"]
    assert any(d["kind"] == "assay" and d["what"] == "status" for d in diffs)
    assert any(d["kind"] == "notification" for d in diffs)
    # nothing was published by replay
    assert len(read_all(conf, k.topic("notifications"))) == len(notes)

    # the history baseline (first 20 s, scores in [0, 0.5)) flags the drifted second half
    hist = sorted((a for a in assays if a["assay"] == "history"), key=lambda a: a["window_end"])
    assert [a["window_end"] - t0 for a in hist] == [10_000, 20_000, 30_000, 40_000]
    assert [a["status"] for a in hist] == ["ok", "ok", "alert", "alert"]

    # the listing commands
    r = cli(env, "assays", "fraud", "--assay", "drift", "--limit", "3", "--json")
    assert r.returncode == 0, r.stderr
    listed = json.loads(r.stdout)
    assert len(listed) == 3 and {a["assay"] for a in listed} == {"drift"}
    assert listed[-1]["window_end"] == max(a["window_end"] for a in assays if a["assay"] == "drift")
    r = cli(env, "alerts", "--pipeline", "fraud", "--json")
    assert r.returncode == 0, r.stderr
    assert {n["id"] for n in json.loads(r.stdout)} == {n["id"] for n in notes}
    # the drift assay's transitions went out to its targets, and audit compared them
    drift_notes = [n for n in notes if n["kind"] == "assay" and n["alert"] == "drift"]
    assert drift_notes and all(n["notify"] == ["webhook:test"] for n in drift_notes)
    assert all(n["details"]["replay"].startswith("driftline replay fraud") for n in drift_notes)
    in_range = {n["id"] for n in drift_notes if t0 + 10_000 <= n["at"] <= t0 + 40_000}
    assert in_range and in_range <= {n["id"] for n in doc["notifications"]}
    r = cli(env, "alerts", "--pipeline", "fraud")
    assert r.returncode == 0 and "burst" in r.stdout
