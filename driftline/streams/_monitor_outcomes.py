"""The monitor's outcomes: label feedback joined to predictions, performance per window.

For every deployed pipeline whose spec has a ``performance:`` section, the monitor also reads
``<p>.feedback`` and feeds both topics to a
:class:`~driftline.streams._feedback_io.PipelinePerformance` (the join and its Redis state,
one Lua call per micro-batch, with its own per-partition offset guard: a batch seen twice
changes nothing). On the housekeeping tick it closes windows and publishes, in this order,
revisions to ``driftline.performance`` (key ``pipeline/name``), labels that never met a
prediction to ``<p>.unmatched`` and alert transitions to ``driftline.notifications``, waits for
delivery, and only then records them as published: a crash in between publishes the same
revisions again (same content), never skips one.

Malformed feedback goes to ``<p>.deadletter`` with its reason under the dead-letter header
contract, before the batch is applied.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from confluent_kafka import KafkaException, Producer

from driftline.config import Settings
from driftline.kafka.admin import ensure_topics
from driftline.streams._feedback_io import PipelinePerformance, Record
from driftline.streams._feedback_state import RedisJoinState

__all__ = ["Outcomes"]

log = logging.getLogger("driftline.monitor")

#: How often (wall clock) a pipeline's performance windows are closed and revisions published.
CLOSE_EVERY_S = 1.0


@dataclass
class _Tracked:
    perf: PipelinePerformance
    results: str
    feedback: str
    deadletter: str
    unmatched: str
    closed_at: float = 0.0


class Outcomes:
    """Performance joins of the monitored pipelines that declare ``performance:``."""

    def __init__(self, settings: Settings, client: Any, producer: Producer) -> None:
        self.settings = settings
        self.client = client
        self.producer = producer
        self.topic = settings.kafka.topic("performance")
        self.notifications_topic = settings.kafka.topic("notifications")
        self.pipelines: dict[str, _Tracked] = {}

    def start(self, name: str, spec: Any, partitions: int) -> None:
        """Join ``spec``'s performance entries (nothing when it declares none)."""
        self.stop(name)
        if not getattr(spec, "performance", None):
            return
        k = self.settings.kafka
        prefix = self.settings.redis.key_prefix
        results, feedback = k.topic(name, "results"), k.topic(name, "feedback")
        perf = PipelinePerformance(
            spec,
            lambda n, d, h: RedisJoinState(self.client, prefix, name, n, d, h),
            results,
            feedback,
            partitions,
        )
        t = _Tracked(
            perf, results, feedback, k.topic(name, "deadletter"), k.topic(name, "unmatched")
        )
        ensure_topics(k, [feedback, t.unmatched, t.deadletter], partitions=k.partitions)
        ensure_topics(k, [self.topic])
        # What a crash left unconfirmed goes out again before anything new is applied.
        self._close(name, t)
        self.pipelines[name] = t
        log.info("joining labels of pipeline %s (%s)", name, ", ".join(spec.performance))

    def stop(self, name: str) -> None:
        self.pipelines.pop(name, None)

    def topics(self) -> dict[str, str]:
        """``{feedback topic: pipeline}`` of every joined pipeline."""
        return {t.feedback: name for name, t in self.pipelines.items()}

    def handle(self, name: str, topic: str, records: Sequence[tuple[Any, ...]]) -> None:
        """Apply a micro-batch of ``(partition, offset, value[, timestamp])`` records."""
        t = self.pipelines.get(name)
        if t is None or topic not in (t.results, t.feedback):
            return
        now = int(time.time() * 1000)
        batch = [
            Record(topic, int(r[0]), int(r[1]), r[2], int(r[3]) if len(r) > 3 else now)
            for r in records
        ]
        dead = t.perf.apply(batch)
        if dead:
            out = [d.record_out() for d in dead]
            self._produce_all([(t.deadletter, r.value, r.key, r.headers, 0) for r in out])

    def tick(self, name: str) -> None:
        """Close ``name``'s windows and publish revisions, at most once a second."""
        t = self.pipelines.get(name)
        wall = time.monotonic()
        if t is not None and wall - t.closed_at >= CLOSE_EVERY_S:
            self._close(name, t)
            t.closed_at = wall

    def _close(self, name: str, t: _Tracked) -> None:
        closings = t.perf.close()
        out: list[tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]], int]] = []
        for closing in closings.values():
            for e in closing.events:
                key = f"{e['pipeline']}/{e['name']}".encode()
                out.append((self.topic, orjson.dumps(e), key, [], int(e["window_end"])))
            for u in closing.unmatched:
                out.append((t.unmatched, orjson.dumps(u), None, [], 0))
            for n in closing.notifications:
                key = f"{n['pipeline']}/{n['alert']}".encode()
                headers = [("driftline-notification-id", str(n["id"]).encode())]
                out.append((self.notifications_topic, orjson.dumps(n), key, headers, int(n["at"])))
        if out:
            self._produce_all(out)
        t.perf.confirm(closings)

    def _produce_all(
        self, records: Sequence[tuple[str, bytes | None, bytes | None, list[Any], int]]
    ) -> None:
        errors: list[str] = []

        def on_delivery(err: Any, _msg: Any) -> None:
            if err is not None:
                errors.append(str(err))

        # Stamped with event time where there is one (replay and audit seek by it); Kafka
        # refuses timestamps far ahead of its clock, so those take the produce time.
        latest = int(time.time() * 1000) + 50 * 60_000
        for topic, value, key, headers, ts in records:
            self.producer.produce(
                topic,
                value,
                key,
                headers=headers,
                on_delivery=on_delivery,
                timestamp=ts if 0 < ts <= latest else 0,
            )
        left = self.producer.flush(30)
        if left or errors:
            raise KafkaException(f"could not publish performance output: {errors or left}")
