"""Offsets by time and bounded reads of a topic: what replay, rebuild and audit share.

Every reader here uses a throw-away consumer group and never commits, so production offsets
stay as they are; ``read_committed`` readers see what transactional producers committed only.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping

from confluent_kafka import Consumer, KafkaException, TopicPartition

from driftline.config import Settings

__all__ = [
    "end_offsets",
    "offsets_for_time",
    "read_records",
    "start_offsets",
    "topic_partitions",
]


def read_records(
    settings: Settings,
    topic: str,
    start: Mapping[int, int],
    stop: Mapping[int, int],
    on_records: Callable[[list[tuple[int, int, bytes]]], None],
    batch_size: int = 5000,
    timeout_s: float = 60.0,
    stop_at_ms: int | None = None,
) -> int:
    """Read ``[start[p], stop[p])`` of each partition (read_committed); returns the count.

    ``on_records`` gets each consumed chunk as ``(partition, offset, value)`` rows, in the
    order the consumer returned them.

    With ``stop_at_ms``, a partition also ends before its first record whose timestamp is at
    or after it. Unlike an offset from ``offsets_for_times``, this ignores transaction
    markers, which carry the broker's clock: after a backfill (records stamped days ago)
    the first marker would end the range before the data.

    Uses its own throw-away consumer group and never commits, so production offsets stay as
    they are.
    """
    todo = {p: (s, stop[p]) for p, s in start.items() if p in stop and s < stop[p]}
    if not todo:
        return 0
    conf = settings.kafka.client_config(
        **{
            "group.id": f"driftline-read-{time.monotonic_ns()}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            "enable.partition.eof": True,
        }
    )
    consumer = Consumer(conf)
    total = 0
    try:
        consumer.assign([TopicPartition(topic, p, s) for p, (s, _) in todo.items()])
        remaining = set(todo)
        deadline = time.monotonic() + timeout_s
        while remaining:
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic}: partitions {sorted(remaining)} incomplete")
            msgs = consumer.consume(batch_size, 0.5)
            rows: list[tuple[int, int, bytes]] = []
            for m in msgs:
                err = m.error()
                p = m.partition()
                if err is not None:
                    if err.code() == -191:  # _PARTITION_EOF
                        remaining.discard(p)
                        continue
                    raise KafkaException(err)
                if p not in remaining:
                    continue
                off = int(m.offset() or 0)
                if off >= todo[p][1]:
                    remaining.discard(p)
                    continue
                if stop_at_ms is not None and m.timestamp()[1] >= stop_at_ms:
                    remaining.discard(p)
                    continue
                rows.append((p, off, m.value() or b""))
                if off + 1 >= todo[p][1]:
                    remaining.discard(p)
            if rows:
                on_records(rows)
                total += len(rows)
    finally:
        consumer.close()
    return total


def offsets_for_time(
    settings: Settings, topic: str, partitions: Iterable[int], at_ms: int
) -> dict[int, int]:
    """First offset at or after ``at_ms`` per partition (the end offset when none)."""
    conf = settings.kafka.client_config(
        **{"group.id": "driftline-offsets", "enable.auto.commit": False}
    )
    consumer = Consumer(conf)
    try:
        parts = list(partitions)
        found = consumer.offsets_for_times([TopicPartition(topic, p, at_ms) for p in parts], 10)
        out: dict[int, int] = {}
        for tp in found:
            if tp.offset < 0:
                _, hi = consumer.get_watermark_offsets(TopicPartition(topic, tp.partition), 10)
                out[tp.partition] = hi
            else:
                out[tp.partition] = tp.offset
        return out
    finally:
        consumer.close()


def _watermark_offsets(
    settings: Settings, topic: str, partitions: Iterable[int], *, low: bool
) -> dict[int, int]:
    # The high watermark a read_committed client sees is the last stable offset.
    conf = settings.kafka.client_config(
        **{
            "group.id": "driftline-offsets",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    consumer = Consumer(conf)
    try:
        side = 0 if low else 1
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), 10)[side]
            for p in partitions
        }
    finally:
        consumer.close()


def start_offsets(settings: Settings, topic: str, partitions: Iterable[int]) -> dict[int, int]:
    """Log start offset per partition."""
    return _watermark_offsets(settings, topic, partitions, low=True)


def end_offsets(settings: Settings, topic: str, partitions: Iterable[int]) -> dict[int, int]:
    """Last stable offset per partition (the end a ``read_committed`` reader reaches)."""
    return _watermark_offsets(settings, topic, partitions, low=False)


def topic_partitions(settings: Settings, topic: str) -> int:
    """Number of partitions of ``topic``; ``KafkaException`` when it does not exist."""
    from confluent_kafka.admin import AdminClient

    md = AdminClient(settings.kafka.client_config()).list_topics(topic, timeout=10)
    t = md.topics.get(topic)
    if t is None or t.error is not None or not t.partitions:
        raise KafkaException(f"topic {topic} does not exist")
    return len(t.partitions)
