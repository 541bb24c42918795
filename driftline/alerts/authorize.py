"""Which targets the bridge may deliver a notification to: only where the operator said.

A notification names its own targets, and anyone who can write to the notifications topic
can write one. So the bridge delivers a notification only to targets that a deployed spec of
its pipeline declares for that alert or assay (any version of the spec it has seen on the
compacted control topic ``driftline.pipelines``, so that a transition emitted just before a
redeploy still goes out), or that the operator lists in ``DRIFTLINE_BRIDGE_ALLOWED_TARGETS``.
A notification of kind ``error`` (a quarantined pipeline) may go to any target its
pipeline's specs declare. Everything else is dead-lettered as ``unauthorized_target``.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from driftline.config import KafkaSettings
from driftline.errors import ServiceError
from driftline.events import Notification
from driftline.notify import Target, TargetError, parse_target

__all__ = ["Authorizer", "SpecFollower"]

log = logging.getLogger("driftline.bridge")

#: Spec sections whose entries carry a ``notify`` list, by notification kind.
_SECTIONS = {"alert": ("alerts",), "assay": ("assays",), "performance": ("performance",)}
_ALL_SECTIONS = ("alerts", "assays", "performance")
_TIMEOUT_S = 30.0


def _targets(entry: Any) -> set[str]:
    notify = entry.get("notify") if isinstance(entry, Mapping) else None
    if not isinstance(notify, list):
        return set()
    out = set()
    for text in notify:
        try:
            out.add(str(parse_target(text)))
        except TargetError:
            continue  # a spec deployed before the grammar tightened may hold one
    return out


class Authorizer:
    """The targets each pipeline's deployed specs declare, plus the operator's allow-list.

    >>> from driftline.events import Notification
    >>> a = Authorizer(["stdout"])
    >>> a.learn("fraud", {"alerts": {"high": {"notify": ["email:ops@example.com"]}}})
    >>> n = Notification("n-1", "high", "fraud", "firing", 1.0, "", {}, 0, "warning", [], "")
    >>> [a.allows(n, parse_target(t)) for t in ("email:ops@example.com", "stdout",
    ...                                          "email:attacker@evil.example")]
    [True, True, False]
    """

    def __init__(self, allowed: Iterable[str] = ()) -> None:
        self.allowed = frozenset(str(parse_target(t)) for t in allowed)
        # pipeline -> (section, name) -> targets, the union over every spec version seen
        self._declared: dict[str, dict[tuple[str, str], set[str]]] = {}

    def learn(self, pipeline: str, canonical: Mapping[str, Any] | None) -> None:
        """Add the targets of one spec version; an undeploy (None) forgets nothing."""
        if not isinstance(canonical, Mapping):
            return
        declared = self._declared.setdefault(pipeline, {})
        for section in _ALL_SECTIONS:
            entries = canonical.get(section)
            if not isinstance(entries, Mapping):
                continue
            for name, entry in entries.items():
                if section == "performance":  # each entry holds alerts of its own
                    alerts = entry.get("alerts") if isinstance(entry, Mapping) else None
                    for alert, spec in (
                        (alerts or {}).items() if isinstance(alerts, Mapping) else ()
                    ):
                        targets = _targets(spec)
                        if targets:
                            declared.setdefault((section, str(alert)), set()).update(targets)
                    continue
                targets = _targets(entry)
                if targets:
                    declared.setdefault((section, str(name)), set()).update(targets)

    def allows(self, notification: Notification, target: Target) -> bool:
        """Whether ``target`` may receive ``notification``."""
        text = str(target)
        if text in self.allowed:
            return True
        declared = self._declared.get(notification.pipeline, {})
        if notification.kind == "error":
            return any(text in targets for targets in declared.values())
        sections = _SECTIONS.get(notification.kind, _ALL_SECTIONS)
        return any(text in declared.get((s, notification.alert), ()) for s in sections)


class SpecFollower:
    """Reads the compacted control topic into an :class:`Authorizer`, every version of it.

    :meth:`start` reads the topic to its end; :meth:`poll` takes what arrived since without
    waiting; :meth:`catch_up` reads up to the topic's current end (before a notification is
    refused, so that a spec deployed a moment before its first alert is known).
    """

    def __init__(self, kafka: KafkaSettings, topic: str, authorizer: Authorizer) -> None:
        self.kafka = kafka
        self.topic = topic
        self.authorizer = authorizer
        self._consumer: Any = None
        self._positions: dict[int, int] = {}
        self._bad = 0

    def start(self) -> None:
        """Create the topic if needed, assign every partition from the start, read to the end."""
        from confluent_kafka import Consumer, KafkaException, TopicPartition

        from driftline.kafka.admin import ensure_topics

        ensure_topics(self.kafka, [self.topic], partitions=1, compacted=True)
        self._consumer = Consumer(
            self.kafka.client_config(
                **{
                    "group.id": f"driftline-bridge-specs-{uuid.uuid4().hex}",
                    "enable.auto.commit": False,
                    "isolation.level": "read_committed",
                    "auto.offset.reset": "earliest",
                }
            )
        )
        try:
            md = self._consumer.list_topics(self.topic, timeout=_TIMEOUT_S)
        except KafkaException as exc:
            raise ServiceError(f"Kafka: cannot read {self.topic}: {exc}") from None
        parts = sorted(md.topics[self.topic].partitions)
        self._positions = dict.fromkeys(parts, 0)
        self._consumer.assign([TopicPartition(self.topic, p, 0) for p in parts])
        self.catch_up()

    def poll(self) -> int:
        """Apply the specs that arrived since the last call; returns how many."""
        return self._apply(self._consumer.consume(1000, 0))

    def catch_up(self, timeout_s: float = _TIMEOUT_S) -> None:
        """Read until every partition's position reaches its end as of this call.

        Raises :class:`ServiceError` when the topic cannot be read: refusing a notification
        on a stale view would dead-letter what a newer spec allows, so the bridge stops
        without committing instead, and its restart reads the notification again.
        """
        from confluent_kafka import KafkaException, TopicPartition

        ends = {}
        for p in self._positions:
            try:
                _low, high = self._consumer.get_watermark_offsets(
                    TopicPartition(self.topic, p), timeout=timeout_s
                )
            except KafkaException as exc:
                raise ServiceError(f"Kafka: cannot read {self.topic}: {exc}") from None
            ends[p] = high
        deadline = time.monotonic() + timeout_s
        while any(self._positions[p] < ends[p] for p in ends):
            if time.monotonic() > deadline:
                raise ServiceError(f"timed out reading the control topic {self.topic}")
            self._apply(self._consumer.consume(1000, 0.2))
            # Transaction markers take offsets that are never delivered as messages.
            for tp in self._consumer.position([TopicPartition(self.topic, p) for p in ends]):
                if tp.offset >= 0:
                    self._positions[tp.partition] = max(self._positions[tp.partition], tp.offset)

    def _apply(self, messages: list[Any]) -> int:
        n = 0
        for msg in messages:
            if msg.error() is not None:
                continue
            self._positions[msg.partition()] = msg.offset() + 1
            value = msg.value()
            if value is None:
                continue
            try:
                name = (msg.key() or b"").decode()
                doc = orjson.loads(value)
            except (UnicodeDecodeError, ValueError):
                self._bad += 1
                log.warning("%s: offset %d is not a spec; ignored", self.topic, msg.offset())
                continue
            self.authorizer.learn(name, doc)
            n += 1
        return n

    def close(self) -> None:
        """Close the consumer."""
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
