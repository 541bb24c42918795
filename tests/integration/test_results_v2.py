"""Results in the Open Inference Protocol's response form (``options.result_format: v2``), end
to end on the real broker and Redis: a real worker writes V2 responses that MLServer's own
pydantic types accept and whose parameters fit KServe's (strings, numbers, booleans); the
monitor (``driftline monitor`` as a user runs it) windows them, so a count alert and an assay
fire; replay's audit agrees; ``driftline logs`` and the SDK's result listing read them as
driftline events."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import orjson
import pytest
from confluent_kafka import Producer
from onnx import TensorProto, helper

from driftline.config import KafkaSettings
from driftline.detectors import Baseline
from driftline.streams._decode import read_result
from driftline.streams.produce import infer, latest_results

from ._models_serve import Served, deploy
from ._monitor_helpers import start_watching, stop, wait_for
from ._wheels import mlserver_types
from .test_worker import _read

pytestmark = pytest.mark.integration

MINUTE = 60_000
W_CHAMPION = np.array([[1.0], [0.0]], dtype=np.float32)
W_SHADOW = np.array([[0.0], [1.0]], dtype=np.float32)


def _model(path: Path, weights: np.ndarray) -> Path:
    """x [N, 2] → score = x @ weights [N, 1], and pair = x [N, 2]."""
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["score"]),
            helper.make_node("Identity", ["x"], ["pair"]),
        ],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2])],
        [
            helper.make_tensor_value_info("score", TensorProto.FLOAT, [None, 1]),
            helper.make_tensor_value_info("pair", TensorProto.FLOAT, [None, 2]),
        ],
        [helper.make_tensor("w", TensorProto.FLOAT, [2, 1], weights.ravel().tolist())],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def _requests(t0: int, rng: np.random.Generator) -> list[dict[str, Any]]:
    """Minute 0: scores like the baseline; minute 1: all above 0.9. Two rows per request."""
    out = []
    for minute, (lo, hi) in enumerate([(0.0, 0.5), (0.9, 1.0)]):
        for i in range(40):
            rows = np.column_stack([rng.uniform(lo, hi, 2), rng.uniform(0, 1, 2)])
            t = t0 + minute * MINUTE + i * 1000
            out.append({"id": f"m{minute}-{i}", "time": t, "tensor": rows.round(4).tolist()})
    # Past both windows: the watermark closes them.
    out.append({"id": "closer", "time": t0 + 2 * MINUTE + 1, "tensor": [[0.1, 0.1]]})
    return out


def test_v2_results_are_mlserver_responses_the_monitor_windows(
    cli: Any,
    topic_prefix: str,
    redis_prefix: str,
    tmp_path: Path,
    unique: str,
    request: pytest.FixtureRequest,
) -> None:
    types = mlserver_types()
    rng = np.random.default_rng(5)
    baseline = rng.uniform(0.0, 0.5, 300).round(6).tolist()
    kafka = KafkaSettings(topic_prefix=topic_prefix)
    store = tmp_path / "store"
    deploy(
        kafka,
        store,
        {
            "name": "v2out",
            "models": [
                {"name": "lin", "path": str(_model(tmp_path / "lin.onnx", W_CHAMPION))},
                {
                    "name": "other",
                    "path": str(_model(tmp_path / "other.onnx", W_SHADOW)),
                    "shadow": True,
                },
            ],
            "validations": {"not_high": "lin.outputs[0][0] < 0.9"},
            "alerts": {
                "many_high": {
                    "when": 'count(lin.outputs[0][0] > 0.9, "1m", "1m") > 20',
                    "notify": ["stdout"],
                }
            },
            "assays": {
                "score_drift": {
                    "iopath": "lin.outputs[0][0]",
                    "baseline": {"values": baseline},
                    "window": {"width": "1m"},
                    "metric": "psi",
                    "thresholds": {"warning": 0.1, "alert": 0.25},
                    "notify": ["stdout"],
                }
            },
            "options": {"result_format": "v2", "lateness": "0s", "partitions": 1},
        },
    )
    t0 = (int(time.time() * 1000) - 30 * MINUTE) // MINUTE * MINUTE
    requests = _requests(t0, rng)
    n_rows = sum(len(r["tensor"]) for r in requests)

    env = dict(
        os.environ,
        DRIFTLINE_TOPIC_PREFIX=topic_prefix,
        DRIFTLINE_KEY_PREFIX=redis_prefix,
        DRIFTLINE_MODEL_STORE=str(store),
        DRIFTLINE_MONITOR_GROUP=f"monitor-{unique}",
        DRIFTLINE_MONITOR_DATADIR=str(tmp_path / "faust"),
        DRIFTLINE_MONITOR_IDLE_CLOSE_MS="3600000",
    )
    env.pop("DRIFTLINE_METRICS_PORT", None)
    log = tmp_path / "monitor.log"
    proc = start_watching(env, tmp_path, log, kafka.topic("v2out", "results"))
    request.addfinalizer(lambda: stop(proc))  # also when an assertion below fails
    served = Served(kafka, store, unique)
    try:
        producer = Producer(kafka.client_config())
        for r in requests:
            producer.produce(kafka.topic("v2out", "requests"), orjson.dumps(r), r["id"].encode())
        assert producer.flush(30) == 0
        raw = [m.value() for m in _read(kafka, kafka.topic("v2out", "results"), n_rows)]
        # `driftline infer` and the SDK wait for a request's results: V2 ones too. Its event
        # time is past the windows checked below.
        probe = {"id": "probe", "time": t0 + 2 * MINUTE + 2, "tensor": [[0.95, 0.25]]}
        (answer,) = infer(kafka, "v2out", probe, timeout=60)
    finally:
        served.stop()
    assert len(raw) == n_rows
    assert (answer["id"], answer["row"], answer["check_failures"]) == ("probe", 0, ["not_high"])
    assert answer["outputs"]["lin"] == [[0.949999988079071], [0.949999988079071, 0.25]]
    assert answer["outputs"]["other"][0] == [0.25]

    # Every result is a V2 inference response, as MLServer's own types read it.
    sent = {(r["id"], k): row for r in requests for k, row in enumerate(r["tensor"])}
    seen = set()
    scores: dict[int, list[float]] = {}
    for value in raw:
        response = types.InferenceResponse.model_validate_json(value)
        assert response.model_name == "lin"
        assert response.model_version and response.model_version.startswith("sha256:")
        doc = orjson.loads(value)
        params = doc["parameters"]
        # KServe types a response parameter as a string, number or boolean.
        assert all(type(v) in (str, int, float, bool) for v in params.values()), params
        assert params["pipeline"] == "v2out"
        x = np.array([sent[(doc["id"], params["row"])]], dtype=np.float32)
        seen.add((doc["id"], params["row"]))
        scores.setdefault(params["time"] // MINUTE * MINUTE, []).append(
            doc["outputs"][0]["data"][0]
        )
        score, pair = doc["outputs"]
        assert (score["name"], score["shape"], score["datatype"]) == ("score", [1, 1], "FP32")
        assert score["data"] == (x @ W_CHAMPION).ravel().astype(np.float64).tolist()
        assert (pair["name"], pair["shape"], pair["datatype"]) == ("pair", [1, 2], "FP32")
        assert pair["data"] == x.ravel().astype(np.float64).tolist()
        shadows = json.loads(params["shadows"])
        assert shadows["other"][0] == (x @ W_SHADOW).ravel().astype(np.float64).tolist()
        failed = json.loads(params["check_failures"])
        assert failed == (["not_high"] if score["data"][0] >= 0.9 else [])
        assert json.loads(params["inputs"]) == sent[(doc["id"], params["row"])]  # as sent
        # The one decoder every reader goes through gives back driftline's own event.
        event = read_result(value)
        assert event["outputs"]["lin"][0] == score["data"]
        assert event["time"] == params["time"] and event["row"] == params["row"]
    assert seen == set(sent)

    listed = latest_results(kafka, "v2out", limit=2 * n_rows)  # what `driftline logs` reads
    assert sorted((e["id"], e["row"]) for e in listed) == sorted([*sent, ("probe", 0)])
    assert all(set(e["outputs"]) == {"lin", "other"} for e in listed)

    conf = kafka.client_config()
    try:
        assays = wait_for(
            conf,
            kafka.topic("assays"),
            lambda got: (
                {a["window_start"] for a in got if a["pipeline"] == "v2out"} >= {t0, t0 + MINUTE}
            ),
            timeout=120,
        )
        notes = wait_for(
            conf,
            kafka.topic("notifications"),
            lambda got: (
                {n.get("kind", "alert") for n in got if n["pipeline"] == "v2out"}
                >= {"alert", "assay"}
            ),
            timeout=60,
        )
    finally:
        stop(proc)
    text = log.read_text(errors="replace")
    windows = {a["window_start"]: a for a in assays if a["pipeline"] == "v2out"}
    assert t0 in windows and t0 + MINUTE in windows, text
    base = Baseline.from_values(np.array(baseline))
    for start in (t0, t0 + MINUTE):
        expected = base.compare(np.array(scores[start]))
        assert windows[start]["count"] == len(scores[start]) == 80
        assert windows[start]["score"] == pytest.approx(expected.score)
    assert windows[t0 + MINUTE]["status"] == "alert"
    firing = {
        (n.get("kind", "alert"), n["alert"], n["window"]["start"])
        for n in notes
        if n["pipeline"] == "v2out" and n["state"] == "firing"
    }
    assert ("alert", "many_high", t0 + MINUTE) in firing, notes
    assert ("assay", "score_drift", t0 + MINUTE) in firing, notes
    assert "malformed" not in text, text

    r = cli(env, "logs", "v2out", "--failures-only", "--limit", "500", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    failed = json.loads(r.stdout)
    assert failed and all(e["check_failures"] == ["not_high"] for e in failed)
    assert len(failed) == sum(1 for v in raw if b"not_high" in v) + 1  # and the probe

    r = cli(
        env, "replay", "v2out", "--from", str(t0), "--to", str(t0 + 2 * MINUTE), "--audit", "--json"
    )
    assert r.returncode == 0, r.stdout + r.stderr
    audit = json.loads(r.stdout)["audit"]
    assert audit["differences"] == [], audit
    assert audit["compared_assays"] >= 2, audit
