"""The inference worker against the real broker: one result per row, exactly once, with bad
input dead-lettered while the good rows around it are served."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import orjson
import pytest
from confluent_kafka import Consumer, Producer
from onnx import TensorProto, helper

from driftline.config import KafkaSettings, WorkerSettings
from driftline.streams.worker import PipelineRuntime, RuntimeModel, StaticSource, Worker

pytestmark = pytest.mark.integration

WIDTH = 29
#: A recent event time, inside the worker's accepted range (90 days back by default).
T0 = (int(time.time()) - 3600) * 1000


def _model(path: Path, seed: int) -> Path:
    """A fraud-shaped model: 29 float inputs, one probability output (n, 1)."""
    rng = np.random.default_rng(seed)
    w = helper.make_tensor(
        "w", TensorProto.FLOAT, [WIDTH, 1], (rng.normal(size=WIDTH) / 3).tolist()
    )
    b = helper.make_tensor("b", TensorProto.FLOAT, [1], [-1.0])
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["xw"]),
            helper.make_node("Add", ["xw", "b"], ["logit"]),
            helper.make_node("Sigmoid", ["logit"], ["y"]),
        ],
        "fraudish",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", WIDTH])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 1])],
        initializer=[w, b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


class _Ort:
    def __init__(self, path: Path) -> None:
        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        return list(self.session.run(None, {"x": x}))


def _runtime(champ: _Ort, shadow: _Ort, version: str = "sha256:v1", **kw: Any) -> PipelineRuntime:
    return PipelineRuntime(
        name="fraud",
        version=version,
        models=(
            RuntimeModel("ccfraud", "sha256:champ", champ),
            RuntimeModel("fraud_base", "sha256:base", shadow, shadow=True),
        ),
        validations={
            "no_high_fraud": lambda t: t[("ccfraud", "outputs")][0][:, 0] < 0.6,
            "no_model_drift": lambda t: (
                np.abs(t[("ccfraud", "outputs")][0][:, 0] - t[("fraud_base", "outputs")][0][:, 0])
                <= 0.2
            ),
        },
        input_width=WIDTH,
        **kw,
    )


@pytest.fixture
def env(tmp_path: Path, unique: str, topic_factory: Callable[..., str]) -> Iterator[dict[str, Any]]:
    kafka = KafkaSettings(topic_prefix=f"test.{unique}")
    topics = {
        kind: topic_factory(f"fraud.{kind}", partitions=3)
        for kind in ("requests", "results", "deadletter")
    }
    assert topics["requests"] == kafka.topic("fraud", "requests")
    settings = WorkerSettings(
        worker_group=f"g-{unique}",
        worker_id=unique,
        worker_batch_timeout_ms=20,
        worker_max_message_bytes=20_000,
    )
    champ = _Ort(_model(tmp_path / "champ.onnx", 1))
    shadow = _Ort(_model(tmp_path / "shadow.onnx", 2))
    yield {
        "kafka": kafka,
        "topics": topics,
        "settings": settings,
        "champ": champ,
        "shadow": shadow,
        "topic_factory": topic_factory,
    }


class _Running:
    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.worker.run()
        except BaseException as exc:  # surfaced by stop()
            self.error = exc

    def stop(self) -> None:
        self.worker.stop()
        self.thread.join(60)
        assert not self.thread.is_alive()
        if self.error is not None:
            raise self.error


def _send(
    kafka: KafkaSettings, topic: str, messages: list[tuple[bytes | None, bytes | None]]
) -> None:
    p = Producer(kafka.client_config(**{"linger.ms": 5}))
    for key, value in messages:
        p.produce(topic, value, key)
    assert p.flush(30) == 0


def _read(kafka: KafkaSettings, topic: str, expected: int, timeout_s: float = 60) -> list[Any]:
    c = Consumer(
        kafka.client_config(
            **{
                "group.id": f"reader-{time.monotonic_ns()}",
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
            }
        )
    )
    c.subscribe([topic])
    out: list[Any] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < expected and time.monotonic() < deadline:
            for m in c.consume(1000, 0.5):
                if m.error() is None:
                    out.append(m)
        # Anything beyond the expected count (a duplicate) would show up shortly after.
        for m in c.consume(1000, 1.0):
            if m.error() is None:
                out.append(m)
    finally:
        c.close()
    return out


def _rows(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, WIDTH)).round(7)


def test_results_match_direct_inference_and_numpy_checks(env: dict[str, Any]) -> None:
    kafka, topics = env["kafka"], env["topics"]
    x = _rows(600, 3)
    sizes = [1, 2, 3] * 100  # 300 requests, 600 rows
    messages, start = [], 0
    for i, n in enumerate(sizes):
        body = {
            "id": f"r-{i}",
            "time": T0 + i,
            "tensor": x[start : start + n].tolist(),
        }
        messages.append((f"key-{i}".encode(), orjson.dumps(body)))
        start += n
    _send(kafka, topics["requests"], messages)
    running = _Running(
        Worker(
            kafka, env["settings"], StaticSource([_runtime(env["champ"], env["shadow"])]), ["fraud"]
        )
    )
    try:
        got = _read(kafka, topics["results"], 600)
    finally:
        running.stop()
    assert len(got) == 600
    events = {}
    for m in got:
        ev = orjson.loads(m.value())
        assert m.key() == f"key-{ev['id'].split('-')[1]}".encode()
        assert (ev["id"], ev["row"]) not in events
        events[(ev["id"], ev["row"])] = ev
    x32 = x.astype(np.float32)
    y = env["champ"].session.run(None, {"x": x32})[0][:, 0]
    ys = env["shadow"].session.run(None, {"x": x32})[0][:, 0]
    fail_high = ~(y < 0.6)
    fail_drift = ~(np.abs(y - ys) <= 0.2)
    assert 0 < fail_high.sum() < 600 and 0 < fail_drift.sum() < 600
    start = 0
    for i, n in enumerate(sizes):
        for r in range(n):
            ev = events[(f"r-{i}", r)]
            j = start + r
            assert ev["inputs"] == x[j].tolist()
            assert ev["outputs"]["ccfraud"] == [[float(y[j])]]
            assert ev["outputs"]["fraud_base"] == [[float(ys[j])]]
            expected = [
                name
                for name, f in (("no_high_fraud", fail_high), ("no_model_drift", fail_drift))
                if f[j]
            ]
            assert ev["check_failures"] == expected
            assert ev["models"] == {"ccfraud": "sha256:champ", "fraud_base": "sha256:base"}
            assert ev["spec"] == "sha256:v1" and ev["pipeline"] == "fraud"
            assert ev["time"] == T0 + i
        start += n


def test_each_bad_input_is_dead_lettered_once_and_neighbours_served(env: dict[str, Any]) -> None:
    kafka, topics = env["kafka"], env["topics"]
    good = lambda i: orjson.dumps({"id": f"g{i}", "tensor": _rows(1, i).tolist()})  # noqa: E731
    bad = {
        "malformed_json": b'{"tensor": [[1, 2',
        "missing_tensor": b'{"id": "x"}',
        "non_numeric": orjson.dumps({"tensor": [["a"] * WIDTH]}),
        "wrong_width": orjson.dumps({"tensor": [[1.0] * 5]}),
        "non_finite": b'{"tensor": [[NaN' + b", 1.0" * (WIDTH - 1) + b"]]}",
        "too_large": orjson.dumps({"tensor": [[1.0] * WIDTH] * 1000}),
        "model_error": orjson.dumps({"tensor": [[666.0] * WIDTH]}),
    }

    class Picky(_Ort):
        def run(self, x: np.ndarray) -> list[np.ndarray]:
            if (x == 666).any():
                raise RuntimeError("refusing 666")
            return super().run(x)

    picky = Picky.__new__(Picky)
    picky.session = env["champ"].session
    messages: list[tuple[bytes | None, bytes | None]] = []
    for i, (reason, value) in enumerate(bad.items()):
        messages.append((f"good-before-{i}".encode(), good(2 * i)))
        messages.append((reason.encode(), value))
        messages.append((f"good-after-{i}".encode(), good(2 * i + 1)))
    # A request for a pipeline nobody deployed, on a topic the pattern subscription picks up.
    other = env["topic_factory"]("ghost.requests", 1)
    env["topic_factory"]("ghost.deadletter", 1)
    _send(kafka, topics["requests"], [(k, v) for k, v in messages])
    _send(kafka, other, [(b"ghost", good(99))])
    rt = _runtime(picky, env["shadow"], allow_nan=False)
    running = _Running(Worker(kafka, env["settings"], StaticSource([rt])))
    try:
        results = _read(kafka, topics["results"], 2 * len(bad))
        dead = _read(kafka, topics["deadletter"], len(bad))
        ghost = _read(kafka, kafka.topic("ghost", "deadletter"), 1)
    finally:
        stats = running.stop() or running.worker.stats
    assert sorted(m.key() for m in results) == sorted(
        k for k, _ in messages if k is not None and k.startswith(b"good")
    )
    by_reason = {}
    for m in dead:
        headers = dict(m.headers())
        reason = headers["driftline-error"].decode()
        assert reason not in by_reason, f"{reason} dead-lettered twice"
        by_reason[reason] = m
        assert m.key() == reason.encode()
        assert m.value() == bad[reason]
        assert headers["driftline-source-topic"].decode() == topics["requests"]
        assert headers["driftline-detail"]
        src = int(headers["driftline-source-partition"]), int(headers["driftline-source-offset"])
        assert src[1] >= 0
    assert set(by_reason) == set(bad)
    assert len(ghost) == 1
    assert dict(ghost[0].headers())["driftline-error"] == b"undeployed_pipeline"
    assert ghost[0].value() == good(99)
    assert stats.dead_letter_reasons["undeployed_pipeline"] == 1


def test_new_version_is_picked_up_without_restart(env: dict[str, Any]) -> None:
    kafka, topics = env["kafka"], env["topics"]
    source = StaticSource([_runtime(env["champ"], env["shadow"], "sha256:v1")])
    running = _Running(Worker(kafka, env["settings"], source, ["fraud"]))
    try:
        _send(
            kafka,
            topics["requests"],
            [
                (None, orjson.dumps({"id": f"a{i}", "tensor": _rows(1, i).tolist()}))
                for i in range(20)
            ],
        )
        first = _read(kafka, topics["results"], 20)
        swapped = PipelineRuntime(
            name="fraud",
            version="sha256:v2",
            models=(RuntimeModel("fraud_base", "sha256:base", env["shadow"]),),
            validations={},
            input_width=WIDTH,
        )
        source.set("fraud", swapped)
        time.sleep(0.5)  # the worker applies changes between batches; let one loop pass
        _send(
            kafka,
            topics["requests"],
            [
                (None, orjson.dumps({"id": f"b{i}", "tensor": _rows(1, i).tolist()}))
                for i in range(20)
            ],
        )
        both = _read(kafka, topics["results"], 40)
    finally:
        running.stop()
    assert {orjson.loads(m.value())["spec"] for m in first} == {"sha256:v1"}
    later = [orjson.loads(m.value()) for m in both if orjson.loads(m.value())["id"].startswith("b")]
    assert len(later) == 20
    assert {e["spec"] for e in later} == {"sha256:v2"}
    assert all(
        list(e["outputs"]) == ["fraud_base"] and e["models"] == {"fraud_base": "sha256:base"}
        for e in later
    )
