"""Predictions made elsewhere: MLServer (from PyPI, in its Kafka server mode) serves the fraud
model; driftline has no model of its own, only a pipeline with ``models: []`` whose source is
MLServer's request and response topics. ``driftline worker`` pairs them into result events and
``driftline monitor`` runs a count alert, two assays and realized performance (labels sent
later with ``driftline feedback``) on them, as a user runs them, and ``driftline replay
--audit`` recomputes the same windows.

The scores in the results are MLServer's and equal onnxruntime's on the same rows; a minute of
drifted inputs with a wave of fraud turns both assays to ``alert`` and fires the count alert,
while the minute of normal traffic before stays ``ok``."""

from __future__ import annotations

import importlib.util
import json
import socket
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import onnxruntime as ort
import orjson
import pytest
import yaml
from confluent_kafka import Consumer, Producer

from driftline.config import KafkaSettings
from driftline.kafka.admin import ensure_topics

from ._stack import Stack

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "fraud"
MODEL = EXAMPLE / "models" / "ccfraud.onnx"
MINUTE = 60_000
N_NORMAL, N_DRIFTED, N_FRAUD = 300, 300, 30


def _load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pypi_reachable() -> bool:
    try:
        with socket.create_connection(("pypi.org", 443), timeout=5):
            return True
    except OSError:
        return False


def _mlserver_or_skip() -> ModuleType:
    mlserver = _load(ROOT / "bench" / "_mlserver.py", "bench_mlserver")
    python = mlserver.mlserver_python()
    if isinstance(python, str):
        if not _pypi_reachable():
            pytest.skip(f"PyPI is unreachable, so MLServer cannot be installed: {python}")
        pytest.fail(python)
    return mlserver


def _read_all(kafka: KafkaSettings, topic: str, until: Callable[[list[Any]], bool]) -> list[Any]:
    consumer = Consumer(
        kafka.client_config(
            **{
                "group.id": f"read-{time.monotonic_ns()}",
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
            }
        )
    )
    consumer.subscribe([topic])
    out: list[Any] = []
    deadline = time.monotonic() + 180
    try:
        while time.monotonic() < deadline:
            for m in consumer.consume(500, 0.5):
                if m.error() is None:
                    out.append(orjson.loads(m.value()))
            if until(out):
                return out
    finally:
        consumer.close()
    raise AssertionError(f"{topic}: gave up after 180 s with {len(out)} record(s): {out[-3:]}")


def test_mlserver_predictions_are_monitored_by_a_pipeline_without_models(
    topic_prefix: str,
    redis_prefix: str,
    unique: str,
    tmp_path: Path,
    cli: Callable[..., Any],
    cli_env: Callable[..., dict[str, str]],
) -> None:
    started = time.monotonic()
    mlserver = _mlserver_or_skip()
    installed = time.monotonic()
    gen = _load(EXAMPLE / "generate.py", "fraud_generate")
    kafka = KafkaSettings(topic_prefix=topic_prefix)
    requests, responses = f"{topic_prefix}.mlserver-requests", f"{topic_prefix}.mlserver-responses"
    ensure_topics(kafka, [requests, responses], partitions=3)

    normal = gen.normal_rows(N_NORMAL, 5)
    inputs_baseline = gen.normal_rows(2000, 1)[:, 0]
    spec = {
        "name": "ext-fraud",
        "models": [],
        "source": {
            "topic": responses,
            "format": "v2-pairs",
            "requests": requests,
            "model": "ccfraud",
        },
        "inputs": [{"name": "tensor", "shape": [29], "dtype": "float32"}],
        "outputs": [{"name": "probability", "shape": [1], "dtype": "float32"}],
        "validations": {"no_high_fraud": "ccfraud.outputs[0][0] < 0.95"},
        "alerts": {
            "high_fraud": {
                "when": 'count(ccfraud.outputs[0][0] > 0.95, "1m", "1s") > 10',
                "notify": ["stdout"],
            }
        },
        "assays": {
            "score_drift": {
                "iopath": "ccfraud.outputs[0][0]",
                "baseline": {"file": str(EXAMPLE / "data" / "baseline.csv"), "column": "score"},
                "window": {"width": "1m"},
                "thresholds": {"warning": 0.1, "alert": 0.25},
            },
            "v0_drift": {
                "iopath": "ccfraud.inputs[0][0]",
                "baseline": {"values": inputs_baseline.tolist()},
                "window": {"width": "1m"},
                "thresholds": {"warning": 0.1, "alert": 0.25},
            },
        },
        "performance": {
            "quality": {
                "task": "binary",
                "prediction": "ccfraud.outputs[0][0]",
                "threshold": 0.5,
                "window": {"width": "1m"},
            }
        },
    }
    spec_file = tmp_path / "external.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    env = cli_env(partitions=3)
    env.update(
        DRIFTLINE_KEY_PREFIX=redis_prefix,
        DRIFTLINE_MONITOR_GROUP=f"monitor-{unique}",
        # Windows close by the events' own times here, not by an idle wall clock.
        DRIFTLINE_MONITOR_IDLE_CLOSE_MS=str(3_600_000),
    )
    env.pop("DRIFTLINE_METRICS_PORT", None)
    deployed = cli(env, "deploy", str(spec_file))
    assert deployed.returncode == 0, deployed.stderr
    assert "driftline worker --pipeline ext-fraud" in deployed.stdout.replace("\n", " ")
    listed = cli(env, "pipelines")
    assert "external" in listed.stdout and responses in listed.stdout, listed.stdout

    server = mlserver.start_mlserver(
        tmp_path, requests, responses, kafka.bootstrap_servers, MODEL, "ccfraud"
    )
    if isinstance(server, str):
        pytest.fail(server)
    stack = Stack(env, tmp_path / "logs")
    try:
        stack.start("worker", "worker", "--pipeline", "ext-fraud")
        stack.start("monitor", "monitor")
        # Event time ten minutes back, aligned to the minute: minute 0 normal, minute 1
        # drifted with a wave of fraud, and a few normal rows in minute 2 to close minute 1.
        t0 = (int(time.time() * 1000) - 10 * MINUTE) // MINUTE * MINUTE
        drifted = np.concatenate([gen.drifted_rows(N_DRIFTED, seed=6), gen.fraud_rows(N_FRAUD, 7)])
        closing = gen.normal_rows(5, 9)
        minutes = [(0, normal), (1, drifted), (2, closing)]
        rows: dict[str, np.ndarray] = {}
        producer = Producer(kafka.client_config())
        rng = np.random.default_rng(3)
        sent = time.monotonic()
        for minute, block in minutes:
            offsets = np.sort(rng.integers(0, 50_000, len(block)))
            for j, (row, dt) in enumerate(zip(block, offsets.tolist(), strict=True)):
                rid = f"m{minute}-{j}"
                rows[rid] = row
                body = {
                    "inputs": [
                        {
                            "name": "tensor",
                            "shape": [1, 29],
                            "datatype": "FP32",
                            "data": row.tolist(),
                        }
                    ]
                }
                producer.produce(
                    requests,
                    orjson.dumps(body),
                    rid.encode(),
                    headers=[("mlserver-model", b"ccfraud")],
                    timestamp=t0 + minute * MINUTE + dt,
                )
        assert producer.flush(30) == 0

        results = stack.wait(
            "a result per request",
            lambda: _read_all(
                kafka, kafka.topic("ext-fraud", "results"), lambda r: len(r) >= len(rows)
            ),
            timeout_s=240,
        )
        paired = time.monotonic()
        assays = stack.wait(
            "both assays on minutes 0 and 1",
            lambda: _read_all(
                kafka,
                kafka.topic("assays"),
                lambda a: (
                    {(x["assay"], x["window_start"]) for x in a if x["pipeline"] == "ext-fraud"}
                    >= {(n, t0 + m * MINUTE) for n in ("score_drift", "v0_drift") for m in (0, 1)}
                ),
            ),
            timeout_s=240,
        )
        notes = stack.wait(
            "the count alert",
            lambda: _read_all(
                kafka,
                kafka.topic("notifications"),
                lambda n: any(x.get("alert") == "high_fraud" for x in n),
            ),
            timeout_s=240,
        )
        alerted = time.monotonic()
        # Ground truth arrives later, as labels do: the fraud wave's rows are frauds.
        labels = {rid: int(rid.startswith("m1-") and int(rid[3:]) >= N_DRIFTED) for rid in rows}
        lines = "".join(json.dumps({"id": rid, "label": y}) + "\n" for rid, y in labels.items())
        (tmp_path / "labels.jsonl").write_text(lines)
        sent_labels = cli(env, "feedback", "ext-fraud", "--file", str(tmp_path / "labels.jsonl"))
        assert sent_labels.returncode == 0, sent_labels.stderr

        def performance() -> list[dict[str, Any]]:
            proc = cli(env, "performance", "ext-fraud", "--json")
            assert proc.returncode == 0, proc.stderr
            return list(json.loads(proc.stdout))

        counts = {0: N_NORMAL, 1: N_DRIFTED + N_FRAUD}
        windows = stack.wait(
            "minutes 0 and 1 with every label joined",
            lambda: (
                (p := performance())
                and all(
                    any(e["window_start"] == t0 + m * MINUTE and e["labeled"] == n for e in p)
                    for m, n in counts.items()
                )
                and p
            ),
            timeout_s=240,
        )
        assert not stack.dead(), stack.tails()
    finally:
        stack.stop()
        server.terminate()
        server.wait(30)

    # Every request paired once; each score is MLServer's, equal to onnxruntime's.
    assert sorted(r["id"] for r in results) == sorted(rows)
    session = ort.InferenceSession(str(MODEL), providers=["CPUExecutionProvider"])
    ids = sorted(rows)
    x = np.stack([rows[i] for i in ids]).astype(np.float32)
    expected = session.run(None, {"tensor": x})[0].ravel()
    by_id = {r["id"]: r for r in results}
    got = np.array([by_id[i]["outputs"]["ccfraud"][0][0] for i in ids], dtype=np.float32)
    np.testing.assert_array_equal(got, expected)
    for i, rid in enumerate(ids):
        r = by_id[rid]
        assert r["time"] // MINUTE * MINUTE - t0 == int(rid[1]) * MINUTE
        assert r["check_failures"] == ([] if expected[i] < 0.95 else ["no_high_fraud"])
        assert np.array_equal(np.float32(r["inputs"]), x[i])

    status = {
        (a["assay"], (a["window_start"] - t0) // MINUTE): a["status"]
        for a in assays
        if a["pipeline"] == "ext-fraud"
    }
    assert status[("score_drift", 0)] == "ok" and status[("v0_drift", 0)] == "ok", status
    assert status[("score_drift", 1)] == "alert" and status[("v0_drift", 1)] == "alert", status
    firing = [n for n in notes if n.get("alert") == "high_fraud" and n["state"] == "firing"]
    assert firing and firing[0]["window"]["end"] <= t0 + 2 * MINUTE + 1000, firing
    # Realized accuracy per minute: MLServer's scores (= onnxruntime's) against the labels.
    for m, n in counts.items():
        mine = [i for i, rid in enumerate(ids) if rid.startswith(f"m{m}-")]
        want = np.mean([(expected[i] >= 0.5) == bool(labels[ids[i]]) for i in mine])
        (window,) = [
            e for e in windows if e["window_start"] == t0 + m * MINUTE and e["labeled"] == n
        ][-1:]
        assert window["predictions"] == n
        assert window["metrics"]["accuracy"] == pytest.approx(want), window

    # Replay recomputes the same windows from the results topic alone.
    audit = cli(
        env,
        "replay",
        "ext-fraud",
        "--from",
        str(t0),
        "--to",
        str(t0 + 2 * MINUTE),
        "--audit",
        "--json",
    )
    assert audit.returncode == 0, audit.stdout + audit.stderr
    report = json.loads(audit.stdout)["audit"]
    assert report["differences"] == [] and report["compared_assays"] >= 4, report
    total = time.monotonic() - started
    print(
        f"\nMLServer venv ready in {installed - started:.1f} s; {len(rows)} requests sent, "
        f"all paired in {paired - sent:.1f} s; assays and count alert after "
        f"{alerted - sent:.1f} s; whole test {total:.1f} s"
    )
