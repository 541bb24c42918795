"""Deploy a spec the way ``driftline deploy`` does and serve requests through a real worker
following the control topic, on the real broker: what the model-compatibility tests share."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Producer

from driftline.config import KafkaSettings, WorkerSettings
from driftline.models import ModelStore
from driftline.spec import PipelineSpec, spec_from_dict
from driftline.streams._worker_source import ControlSource
from driftline.streams.control import ControlPlane
from driftline.streams.worker import Worker

from .test_worker import _read, _Running

#: A recent event time, inside the worker's accepted range.
T0 = (int(time.time()) - 3600) * 1000


def deploy(kafka: KafkaSettings, store: Path, doc: dict[str, Any]) -> PipelineSpec:
    """Compile (the deploy-time check runs here), store the models, publish the spec."""
    spec = spec_from_dict(doc)
    models = ModelStore(store)
    for m in spec.models:
        assert m.path is not None
        models.put(m.name, m.path)
    plane = ControlPlane(kafka)
    try:
        plane.deploy(spec)
    finally:
        plane.close()
    return spec


class Served:
    """One worker serving every pipeline deployed under a topic prefix."""

    def __init__(self, kafka: KafkaSettings, store: Path, unique: str, **settings: Any) -> None:
        self.kafka = kafka
        options: dict[str, Any] = {
            "worker_group": f"g-{unique}",
            "worker_id": unique,
            "worker_batch_timeout_ms": 20,
            **settings,
        }
        self.source = ControlSource(kafka, store)
        self.running = _Running(Worker(kafka, WorkerSettings(**options), self.source))

    def ask(
        self,
        pipeline: str,
        requests: Sequence[dict[str, Any] | bytes],
        results: int,
        dead: int = 0,
    ) -> tuple[list[dict[str, Any]], list[Any]]:
        """Send requests (objects or raw bytes), read ``results`` results and ``dead`` dead
        letters (each list in order of the request's position in ``requests``)."""
        values = [r if isinstance(r, bytes) else orjson.dumps(r) for r in requests]
        # Large enough for any pipeline's options.max_message_bytes; the topic decides.
        producer = Producer(self.kafka.client_config(**{"message.max.bytes": 8_000_000}))
        for i, value in enumerate(values):
            producer.produce(self.kafka.topic(pipeline, "requests"), value, str(i).encode())
        assert producer.flush(30) == 0
        got = _read(self.kafka, self.kafka.topic(pipeline, "results"), results)
        events = sorted((orjson.loads(m.value()) for m in got), key=_order)
        letters = _read(self.kafka, self.kafka.topic(pipeline, "deadletter"), dead) if dead else []
        return events, letters

    def stop(self) -> None:
        self.running.stop()
        self.source.close()


def _order(event: dict[str, Any]) -> tuple[str, int]:
    return (str(event["id"]), int(event["row"]))
