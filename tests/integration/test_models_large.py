"""Large tensors on the real broker: ``options.max_message_bytes`` sets the pipeline topics'
``max.message.bytes`` at deploy and the worker's producer follows it; a 3x224x224 float image
travels as V2 base64 data and as flat JSON with a shape (about 3 MB); a result too large for
its topic is dead-lettered while the worker's other pipelines keep serving."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import orjson
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, ConfigResource

from driftline.config import KafkaSettings

from ._models_serve import T0, Served, deploy
from .test_models_inputs import _conv_model
from .test_worker import _read

pytestmark = pytest.mark.integration

SHAPE = [1, 3, 224, 224]


@pytest.fixture
def env(topic_prefix: str, unique: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    kafka = KafkaSettings(topic_prefix=topic_prefix)
    out: dict[str, Any] = {"kafka": kafka, "store": tmp_path / "store", "unique": unique}
    yield out
    if "worker" in out:
        out["worker"].stop()


def _topic_limit(kafka: KafkaSettings, topic: str) -> int:
    admin = AdminClient(kafka.client_config())
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    return int(admin.describe_configs([resource])[resource].result(15)["max.message.bytes"].value)


def _send(kafka: KafkaSettings, topic: str, messages: list[tuple[bytes, bytes]]) -> None:
    producer = Producer(kafka.client_config(**{"message.max.bytes": 8_000_000}))
    for key, value in messages:
        producer.produce(topic, value, key)
    assert producer.flush(30) == 0


def test_a_224_image_travels_and_an_oversized_result_is_dead_lettered_alone(
    env: dict[str, Any], tmp_path: Path
) -> None:
    kafka, store = env["kafka"], env["store"]
    conv = _conv_model(tmp_path / "conv.onnx")
    deploy(kafka, store, {"name": "tab", "models": [{"name": "conv", "path": str(conv)}]})
    worker = Served(kafka, store, env["unique"])
    env["worker"] = worker
    warm, _ = worker.ask(
        "tab", [{"id": "w", "time": T0, "tensor": np.zeros((1, 3, 4, 4)).tolist()}], 1
    )
    assert len(warm) == 1
    # Deployed while the worker runs: its producer must grow to the new limit.
    model = {"name": "conv", "path": str(conv)}
    deploy(
        kafka,
        store,
        {
            "name": "lean",
            "models": [model],
            "options": {"max_message_bytes": 4_000_000, "record_inputs": False},
        },
    )
    deploy(
        kafka,
        store,
        {"name": "full", "models": [model], "options": {"max_message_bytes": 2_000_000}},
    )
    for kind in ("requests", "results", "deadletter", "feedback"):
        assert _topic_limit(kafka, kafka.topic("lean", kind)) == 4_000_000 + 64 * 1024
        assert _topic_limit(kafka, kafka.topic("full", kind)) == 2_000_000 + 64 * 1024
    assert _topic_limit(kafka, kafka.topic("tab", "results")) == 1_000_000 + 64 * 1024

    image = np.random.default_rng(7).normal(size=SHAPE).astype(np.float32)
    v2 = orjson.dumps(
        {
            "id": "b64",
            "time": T0,
            "inputs": [
                {
                    "name": "img",
                    "shape": SHAPE,
                    "datatype": "FP32",
                    "data": base64.b64encode(image.astype("<f4").tobytes()).decode(),
                }
            ],
        }
    )
    flat = orjson.dumps(
        {"id": "flat", "time": T0, "tensor": image.ravel().tolist(), "shape": SHAPE}
    )
    assert 700_000 < len(v2) < 1_000_000 < 2_500_000 < len(flat) < 4_000_000
    # The full pipeline records the inputs: ~3 MB of JSON numbers, over its 2 MB results topic.
    time.sleep(6)  # the worker's pattern subscription finds the new topics
    sent = time.monotonic()
    _send(kafka, kafka.topic("full", "requests"), [(b"big", v2)])
    _send(kafka, kafka.topic("lean", "requests"), [(b"b64", v2), (b"flat", flat)])
    _send(
        kafka,
        kafka.topic("tab", "requests"),
        [
            (
                b"t%d" % i,
                orjson.dumps(
                    {"id": f"t{i}", "time": T0, "tensor": np.full((1, 3, 4, 4), i).tolist()}
                ),
            )
            for i in range(5)
        ],
    )
    lean = _read(kafka, kafka.topic("lean", "results"), 2, timeout_s=120)
    tab = _read(kafka, kafka.topic("tab", "results"), 6, timeout_s=60)
    dead = _read(kafka, kafka.topic("full", "deadletter"), 1, timeout_s=60)
    waited = time.monotonic() - sent
    print(f"lean, tab and the dead letter all read {waited:.1f} s after sending")
    assert worker.running.thread.is_alive() and worker.running.error is None
    assert len(tab) == 6  # the warm-up and five more: the other pipeline kept serving
    assert _read(kafka, kafka.topic("full", "results"), 0, timeout_s=2) == []
    [letter] = dead
    headers = dict(letter.headers())
    assert headers["driftline-error"] == b"result_too_large" and letter.value() == v2

    session = ort.InferenceSession(str(conv), providers=["CPUExecutionProvider"])
    (want,) = session.run(None, {"img": image})
    events = sorted((orjson.loads(m.value()) for m in lean), key=lambda e: e["id"])
    assert [e["id"] for e in events] == ["b64", "flat"]
    for e in events:
        assert "inputs" not in e
        assert e["outputs"]["conv"] == [want[0].astype(np.float64).tolist()]
    assert worker.running.worker.stats.producer_restarts >= 1
