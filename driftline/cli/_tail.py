"""Reading the newest messages of a topic for the listing commands, poison and all.

A listing must show what is there: a message that does not decode, or decodes to fields no
renderer can show (a time past year 9999), is listed as unreadable next to the others, never
the end of the command.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from driftline.config import KafkaSettings
from driftline.errors import ServiceError
from driftline.kafka.clientlog import with_logger

__all__ = ["UNREADABLE", "Record", "preview", "render_rows", "sort_key", "tail"]

#: What a cell says when an event cannot be shown.
UNREADABLE = "unreadable"

_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Record:
    """One message: where it sits, its headers, its bytes and its decoded JSON (or why not)."""

    topic: str
    partition: int
    offset: int
    timestamp: int | None
    key: bytes | None
    headers: dict[str, str] = field(default_factory=dict)
    value: bytes | None = None
    event: Any = None
    error: str | None = None

    @property
    def readable(self) -> bool:
        """Whether the value decoded to a JSON object."""
        return self.error is None


def _decode(value: bytes | None) -> tuple[Any, str | None]:
    import orjson

    if value is None:
        return None, "no value (a tombstone)"
    from driftline.streams._decode import read_result

    try:
        # A result in V2 response form is listed as the driftline event it carries.
        doc = read_result(value)
    except orjson.JSONDecodeError as exc:
        return None, f"not JSON ({exc})"
    except ValueError as exc:
        return None, str(exc)
    if not isinstance(doc, dict):
        return doc, f"a JSON {type(doc).__name__}, not an object"
    return doc, None


def _headers(raw: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    items = raw.items() if isinstance(raw, dict) else raw or ()
    for k, v in items:
        out[k] = v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v or "")
    return out


def tail(
    kafka: KafkaSettings,
    topic: str,
    per_partition: int,
    missing: Callable[[str], Exception] | None = None,
) -> list[Record]:
    """The newest ``per_partition`` messages of each partition of ``topic`` (committed only).

    Raises what ``missing(topic)`` returns when the topic does not exist (the default: an
    empty list), and :class:`~driftline.errors.ServiceError` when Kafka does not answer.
    """
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    consumer = Consumer(
        with_logger(
            kafka.client_config(
                **{
                    "group.id": f"driftline-client-{uuid.uuid4().hex}",
                    "enable.auto.commit": False,
                    "isolation.level": "read_committed",
                    "auto.offset.reset": "earliest",
                }
            )
        )
    )
    records: list[Record] = []
    try:
        try:
            md = consumer.list_topics(topic, timeout=_TIMEOUT_S)
        except KafkaException as exc:
            raise ServiceError(f"Kafka at {kafka.bootstrap_servers}: {exc}") from exc
        tmd = md.topics.get(topic)
        if tmd is None or tmd.error is not None or not tmd.partitions:
            if missing is not None:
                raise missing(topic)
            return []
        ends: dict[int, tuple[int, int]] = {}
        for p in sorted(tmd.partitions):
            ends[p] = consumer.get_watermark_offsets(
                TopicPartition(topic, p), timeout=_TIMEOUT_S, cached=False
            )
        todo = {p for p, (low, high) in ends.items() if high > low}
        if not todo:
            return []
        consumer.assign(
            [TopicPartition(topic, p, max(ends[p][0], ends[p][1] - per_partition)) for p in todo]
        )
        quiet_deadline = time.monotonic() + _TIMEOUT_S
        while todo and time.monotonic() < quiet_deadline:
            msgs = consumer.consume(5000, 0.5)
            for m in msgs:
                if m.error() is not None:
                    continue
                event, error = _decode(m.value())
                ts_type, ts = m.timestamp()
                records.append(
                    Record(
                        topic=topic,
                        partition=m.partition() or 0,
                        offset=m.offset() or 0,
                        timestamp=ts if ts_type else None,
                        key=m.key(),
                        headers=_headers(m.headers()),
                        value=m.value(),
                        event=event,
                        error=error,
                    )
                )
            if msgs:
                quiet_deadline = time.monotonic() + 2
            # Transaction markers take offsets too: a partition is done when its position
            # reaches the end it had when we started.
            for tp in consumer.position([TopicPartition(topic, p) for p in list(todo)]):
                if tp.offset >= ends[tp.partition][1]:
                    todo.discard(tp.partition)
    finally:
        consumer.close()
    return records


def sort_key(value: object) -> float:
    """A number to sort by; anything that is not one sorts first.

    >>> sorted([3, "x", None, 1.5], key=sort_key)
    ['x', None, 1.5, 3]
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        return float("-inf")
    return float(value)


def preview(data: bytes | None, limit: int = 60) -> str:
    """The start of a payload as text, control characters escaped.

    >>> preview(b'{"tensor": [[1, 2]]}')
    '{"tensor": [[1, 2]]}'
    >>> preview(b"\\xff\\x00abc")
    "b'\\\\xff\\\\x00abc'"
    >>> len(preview(b"x" * 500))
    61
    """
    if data is None:
        return "-"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = repr(data[:limit])
    else:
        if not text.isprintable():
            text = repr(text)[1:-1]
    return text if len(text) <= limit else text[:limit] + "…"


def render_rows(
    items: Sequence[Any], render: Callable[[Any], list[Any]], columns: int
) -> tuple[list[list[Any]], int]:
    """Table cells for ``items``; an item ``render`` fails on becomes an ``unreadable`` row.

    Text cells are escaped, so that brackets in the data are shown, not read as rich markup;
    styled cells come as :class:`rich.text.Text`. Returns the rows and how many items were
    unreadable.

    >>> render_rows([1, 0], lambda x: [str(1 / x)], 2)
    ([['1.0'], ['unreadable', '0']], 1)
    >>> render_rows(["[red]x"], lambda x: [x], 1)[0][0][0] == "\\\\[red]x"
    True
    """
    from rich.markup import escape

    rows: list[list[Any]] = []
    bad = 0
    for item in items:
        try:
            row = render(item)
        except Exception:
            # The data came off a topic anyone can write to: show it, don't die on it.
            bad += 1
            row = [UNREADABLE, _short_repr(item)] + [""] * max(0, columns - 2)
            row = row[:columns]
        rows.append([escape(c) if isinstance(c, str) else c for c in row])
    return rows, bad


def _short_repr(item: Any, limit: int = 80) -> str:
    import orjson

    try:
        text = orjson.dumps(item).decode()
    except TypeError:
        text = repr(item)
    return text if len(text) <= limit else text[:limit] + "…"
