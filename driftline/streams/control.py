"""The control plane: deployed pipeline specs and uploaded models in compacted Kafka topics.

``driftline.pipelines`` holds one message per pipeline (key = name, value = the canonical spec
JSON; a tombstone undeploys). ``driftline.models`` holds one message per uploaded model version
(key = ``name/sha256``). Workers and monitor agents read the whole topic at start
(:meth:`Follower.snapshot`) and then follow every change (:meth:`Follower.poll`).
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import TYPE_CHECKING, Any

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from driftline.compile import spec_version
from driftline.config import KafkaSettings
from driftline.errors import ServiceError

# Topic creation lives in the Kafka layer; importing it from here keeps working.
from driftline.kafka.admin import admin_client, ensure_topics
from driftline.kafka.clientlog import with_logger

log = logging.getLogger("driftline.control")

if TYPE_CHECKING:
    from driftline.models import ModelInfo
    from driftline.spec import PipelineSpec

__all__ = [
    "PIPELINE_TOPICS",
    "ControlPlane",
    "Follower",
    "ensure_topics",
    "pipeline_topics",
    "spec_version",
    "topic_max_bytes",
]


def topic_max_bytes(max_message_bytes: int) -> int:
    """A pipeline topic's ``max.message.bytes`` for ``options.max_message_bytes``: room for a
    request of that size with its key, headers and record overhead (a dead letter's copy)."""
    return max_message_bytes + TOPIC_HEADROOM_BYTES


#: Record bytes beyond the value a pipeline topic allows: key, trace and dead-letter headers.
TOPIC_HEADROOM_BYTES = 64 * 1024

#: The per-pipeline topics created on deploy.
PIPELINE_TOPICS = ("requests", "results", "deadletter", "feedback")

_TIMEOUT_S = 30.0


def pipeline_topics(settings: KafkaSettings, name: str) -> dict[str, str]:
    """Topic names of one pipeline: ``{"requests": "driftline.fraud.requests", ...}``."""
    return {kind: settings.topic(name, kind) for kind in PIPELINE_TOPICS}


def _read_compacted(settings: KafkaSettings, topic: str) -> tuple[dict[str, Any], Consumer]:
    """Read a (single-partition) compacted topic to its end; returns state and the consumer."""
    consumer = Consumer(
        with_logger(
            settings.client_config(
                **{
                    "group.id": f"driftline-control-{uuid.uuid4().hex}",
                    "enable.auto.commit": False,
                    "isolation.level": "read_committed",
                    "auto.offset.reset": "earliest",
                }
            )
        )
    )
    state: dict[str, Any] = {}
    try:
        md = consumer.list_topics(topic, timeout=_TIMEOUT_S)
    except KafkaException as exc:
        consumer.close()
        raise ServiceError(f"Kafka at {settings.bootstrap_servers}: {exc}") from exc
    tmd = md.topics.get(topic)
    if tmd is None or tmd.error is not None:
        consumer.close()
        raise ServiceError(f"control topic {topic} is missing; run `driftline deploy` first")
    parts = sorted(tmd.partitions)
    ends = {}
    for p in parts:
        _low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=_TIMEOUT_S)
        ends[p] = high
    consumer.assign([TopicPartition(topic, p, 0) for p in parts])
    positions = dict.fromkeys(parts, 0)
    deadline = time.monotonic() + _TIMEOUT_S
    while any(positions[p] < ends[p] for p in parts):
        if time.monotonic() > deadline:
            consumer.close()
            raise ServiceError(f"timed out reading control topic {topic}")
        for msg in consumer.consume(1000, 0.5):
            if msg.error() is not None:
                continue
            positions[msg.partition() or 0] = (msg.offset() or 0) + 1
            _apply(state, msg.key(), msg.value())
        # Transaction markers occupy offsets that are never delivered as messages.
        for tp in consumer.position([TopicPartition(topic, p) for p in parts]):
            if tp.offset >= 0:
                positions[tp.partition] = max(positions[tp.partition], tp.offset)
    return state, consumer


def _apply(state: dict[str, Any], key: bytes | None, value: bytes | None) -> tuple[str, Any] | None:
    """Apply one control record to ``state``; None when it is not a readable spec record.

    Anyone with write access can put bytes on the control topic; a record that is not a JSON
    object under a UTF-8 name is skipped with one warning (the pipeline keeps the version it
    had), never allowed to stop the worker, monitor or bridge that follows the topic.
    """
    try:
        name = (key or b"").decode()
        if value is None:
            state.pop(name, None)
            return name, None
        doc = orjson.loads(value)
    except (UnicodeDecodeError, orjson.JSONDecodeError) as exc:
        log.warning(
            "control record %r skipped: not a JSON spec (%s)", key[:80] if key else key, exc
        )
        return None
    if not name or not isinstance(doc, dict):
        log.warning("control record %r skipped: not a spec object", key[:80] if key else key)
        return None
    state[name] = doc
    return name, doc


class ControlPlane:
    """Publish and read deployed pipelines and uploaded models.

    Parameters
    ----------
    settings:
        Kafka connection and topic prefix.
    """

    def __init__(self, settings: KafkaSettings):
        self.settings = settings
        self.pipelines_topic = settings.topic("pipelines")
        self.models_topic = settings.topic("models")
        self._admin = admin_client(settings)
        self._producer: Producer | None = None

    # ---------------------------------------------------------------- writing
    def _produce(self, topic: str, key: str, value: bytes | None) -> None:
        if self._producer is None:
            self._producer = Producer(
                with_logger(
                    self.settings.client_config(**{"enable.idempotence": True, "linger.ms": 0})
                )
            )
        errors: list[KafkaError] = []

        def on_delivery(err: KafkaError | None, _msg: Any) -> None:
            if err is not None:
                errors.append(err)

        self._producer.produce(topic, value, key=key.encode(), on_delivery=on_delivery)
        remaining = self._producer.flush(_TIMEOUT_S)
        if remaining or errors:
            raise ServiceError(
                f"could not write to {topic} at {self.settings.bootstrap_servers}: "
                f"{errors[0] if errors else 'timed out'}"
            )

    def ensure_control_topics(self) -> None:
        ensure_topics(
            self.settings,
            [self.pipelines_topic, self.models_topic],
            partitions=1,
            compacted=True,
            admin=self._admin,
        )

    def deploy(self, spec: PipelineSpec) -> str:
        """Create the pipeline's topics and publish its canonical spec; returns its version."""
        self.ensure_control_topics()
        topics = pipeline_topics(self.settings, spec.name)
        ensure_topics(
            self.settings,
            topics.values(),
            partitions=spec.options.partitions,
            admin=self._admin,
            config={"max.message.bytes": str(topic_max_bytes(spec.options.max_message_bytes))},
        )
        ensure_topics(
            self.settings,
            [
                self.settings.topic("assays"),
                self.settings.topic("notifications"),
                self.settings.topic("notifications", "deadletter"),
            ],
            admin=self._admin,
        )
        canonical = spec.to_canonical()
        self._produce(self.pipelines_topic, spec.name, orjson.dumps(canonical))
        return spec_version(canonical)

    def undeploy(self, name: str) -> bool:
        """Publish a tombstone for ``name``; returns False when it was not deployed."""
        self.ensure_control_topics()
        if name not in self.snapshot():
            return False
        self._produce(self.pipelines_topic, name, None)
        return True

    def record_model(self, info: ModelInfo) -> None:
        """Record an uploaded model version in ``driftline.models``."""
        self.ensure_control_topics()
        doc = info.to_dict() if hasattr(info, "to_dict") else dict(vars(info))
        doc["uploaded_at"] = int(time.time() * 1000)
        self._produce(
            self.models_topic,
            f"{info.name}/{info.sha256}",
            orjson.dumps(doc, default=str),
        )

    # ---------------------------------------------------------------- reading
    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Every deployed pipeline: name → canonical spec dict."""
        self.ensure_control_topics()
        state, consumer = _read_compacted(self.settings, self.pipelines_topic)
        consumer.close()
        return state

    def models(self) -> dict[str, list[dict[str, Any]]]:
        """Every uploaded model: name → its versions, oldest first."""
        self.ensure_control_topics()
        state, consumer = _read_compacted(self.settings, self.models_topic)
        consumer.close()
        out: dict[str, list[dict[str, Any]]] = {}
        for doc in state.values():
            out.setdefault(str(doc.get("name")), []).append(doc)
        for versions in out.values():
            versions.sort(key=lambda d: d.get("uploaded_at", 0))
        return out

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(_TIMEOUT_S)
            self._producer = None


class Follower:
    """Follows ``driftline.pipelines``: the current state at start, then every change.

    Example::

        f = Follower(KafkaSettings())
        f.snapshot()   # {'fraud': {...canonical spec...}}
        f.poll(0.0)    # [('fraud', {...}), ('old', None)] since the last call
    """

    def __init__(self, settings: KafkaSettings):
        plane = ControlPlane(settings)
        plane.ensure_control_topics()
        self.topic = plane.pipelines_topic
        self._state, self._consumer = _read_compacted(settings, self.topic)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """The deployed pipelines as of the last read."""
        return dict(self._state)

    def poll(self, timeout: float = 0.0) -> list[tuple[str, dict[str, Any] | None]]:
        """Changes since the last call: ``(name, canonical spec)``, or ``(name, None)``."""
        changes: list[tuple[str, dict[str, Any] | None]] = []
        for msg in self._consumer.consume(1000, timeout):
            if msg.error() is not None:
                continue
            change = _apply(self._state, msg.key(), msg.value())
            if change is not None:
                changes.append(change)
        return changes

    def close(self) -> None:
        self._consumer.close()
