"""``driftline logs NAME --dead-letters``: the requests and results a pipeline refused."""

from __future__ import annotations

import json
from typing import Any

from driftline._console import out
from driftline.cli._format import ms_to_iso
from driftline.cli._tail import Record, preview, render_rows, tail
from driftline.config import load_settings
from driftline.errors import DriftlineError

__all__ = ["dead_letter", "show_dead_letters"]


def _source(headers: dict[str, str]) -> tuple[str | None, int | None, int | None]:
    # Worker and bridge write three headers; the monitor writes one ``topic/partition/offset``.
    topic = headers.get("driftline-source-topic")
    partition = headers.get("driftline-source-partition")
    offset = headers.get("driftline-source-offset")
    joined = headers.get("driftline-source")
    if topic is None and joined and joined.count("/") >= 2:
        topic, partition, offset = joined.rsplit("/", 2)
    return topic, _int(partition), _int(offset)


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def dead_letter(r: Record) -> dict[str, Any]:
    """One dead letter as a JSON-ready dict: reason, detail, source, payload preview.

    >>> rec = Record("p.deadletter", 0, 7, 1700000000000, b"r-1",
    ...     {"driftline-error": "wrong_width", "driftline-detail": "29 expected",
    ...      "driftline-source-topic": "p.requests", "driftline-source-partition": "0",
    ...      "driftline-source-offset": "41"}, b'{"tensor": [[1, 2]]}')
    >>> d = dead_letter(rec)
    >>> d["reason"], d["source_topic"], d["source_offset"], d["preview"]
    ('wrong_width', 'p.requests', 41, '{"tensor": [[1, 2]]}')
    """
    topic, partition, offset = _source(r.headers)
    return {
        "time": r.timestamp,
        "partition": r.partition,
        "offset": r.offset,
        "key": r.key.decode("utf-8", "replace") if r.key is not None else None,
        "reason": r.headers.get("driftline-error", "unknown"),
        "detail": r.headers.get("driftline-detail", ""),
        "source_topic": topic,
        "source_partition": partition,
        "source_offset": offset,
        "size": len(r.value) if r.value is not None else 0,
        "preview": preview(r.value),
    }


def _row(d: dict[str, Any]) -> list[str]:
    where = (
        f"{d['source_topic']}:{d['source_partition']}@{d['source_offset']}"
        if d["source_topic"] is not None
        else "-"
    )
    return [
        ms_to_iso(d["time"]),
        str(d["reason"]),
        str(d["detail"]),
        where,
        f"{d['preview']} ({d['size']} B)",
    ]


def show_dead_letters(name: str, limit: int, as_json: bool) -> None:
    """Print the latest ``limit`` dead letters of pipeline ``name``, oldest first."""
    kafka = load_settings().kafka
    topic = kafka.topic(name, "deadletter")

    def missing(t: str) -> DriftlineError:
        return DriftlineError(
            f"topic {t} does not exist; is the pipeline deployed (`driftline pipelines`)?"
        )

    records = tail(kafka, topic, limit, missing=missing)
    records.sort(key=lambda r: (r.timestamp or 0, r.partition, r.offset))
    letters = [dead_letter(r) for r in records[-limit:]]
    if as_json:
        out.print_json(json.dumps(letters))
        return
    from rich.table import Table

    table = Table("time", "reason", "detail", "source", "payload")
    rows, _ = render_rows(letters, _row, 5)
    for row in rows:
        table.add_row(*row)
    out.print(table)
