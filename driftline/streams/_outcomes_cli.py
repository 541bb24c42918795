"""Bodies of the ``feedback`` and ``performance`` commands, and the SDK's feedback calls.

* ``driftline feedback NAME --file labels.jsonl [--rate R]`` sends labels to
  ``<p>.feedback`` (keyed by request id, so a pair's labels stay in order and the last one
  wins); malformed lines are sent as they are and dead-lettered by the join with a reason,
  as ``produce`` does with requests.
* ``driftline performance NAME [--window T] [--json] [--history]`` lists the latest revision
  of every window of the pipeline's performance entries from ``driftline.performance`` (every
  revision with ``--history``).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from driftline.config import KafkaSettings
from driftline.errors import ConfigError, DriftlineError, ServiceError

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "cmd_feedback",
    "cmd_performance",
    "feedback_lines",
    "latest_revisions",
    "performance_frame",
    "read_performance",
    "send_feedback",
]


def feedback_lines(path: str | Path) -> Iterator[bytes]:
    """The feedback events of a file: JSON lines, or one JSON array of objects.

    >>> import tempfile, os
    >>> f = tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False)
    >>> _ = f.write('{"id": "a", "label": 1}\\n\\n{"id": "b", "label": 0}\\n'); f.close()
    >>> [orjson.loads(x)["id"] for x in feedback_lines(f.name)]
    ['a', 'b']
    >>> os.unlink(f.name)
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--file {str(path)!r}: no such file")
    data = p.read_bytes()
    if data.lstrip().startswith(b"["):
        try:
            rows = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise ConfigError(f"--file {str(path)!r}: not a JSON array ({exc})") from None
        for row in rows:
            yield orjson.dumps(row)
        return
    for line in data.splitlines():
        if line.strip():
            yield line.strip()


def _key(value: bytes) -> bytes | None:
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    ident = doc.get("id") if isinstance(doc, dict) else None
    return None if ident is None else str(ident).encode()


def send_feedback(
    kafka: KafkaSettings,
    pipeline: str,
    rows: Iterable[bytes | dict[str, Any]],
    rate: float | None = None,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Send feedback events to ``<p>.feedback``; returns how many were sent.

    ``rows`` are events (dicts) or their JSON bytes. ``rate`` limits sending to that many
    events per second.
    """
    from confluent_kafka import Consumer, KafkaException

    if rate is not None and rate <= 0:
        raise ConfigError(f"--rate {rate}: must be a positive number of events per second")
    topic = kafka.topic(pipeline, "feedback")
    probe = Consumer(kafka.client_config(**{"group.id": f"driftline-client-{uuid.uuid4().hex}"}))
    try:
        md = probe.list_topics(topic, timeout=10).topics.get(topic)
    except KafkaException as exc:
        raise ServiceError(f"Kafka: {exc}") from exc
    finally:
        probe.close()
    if md is None or md.error is not None or not md.partitions:
        raise DriftlineError(
            f"topic {topic} does not exist; is pipeline {pipeline!r} deployed "
            "(`driftline pipelines`)?"
        )
    from driftline.streams.produce import produce_paced

    def keyed() -> Iterator[tuple[bytes | None, bytes]]:
        for row in rows:
            value = row if isinstance(row, bytes) else orjson.dumps(row)
            yield _key(value), value

    return produce_paced(kafka, topic, keyed(), rate, progress, "feedback event")


def cmd_feedback(kafka: KafkaSettings, name: str, file: str, rate: float | None = None) -> int:
    """``driftline feedback NAME --file labels.jsonl [--rate R]`` with a progress bar."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from driftline._console import err, out

    total = sum(1 for _ in feedback_lines(file))
    t0 = time.monotonic()
    with Progress(
        "sending", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=err
    ) as bar:
        task = bar.add_task("send", total=total)
        sent = send_feedback(
            kafka,
            name,
            feedback_lines(file),
            rate=rate,
            progress=lambda n: bar.update(task, completed=n),
        )
        bar.update(task, completed=sent)
    elapsed = time.monotonic() - t0
    out.print(
        f"sent {sent} feedback events to {name} in {elapsed:.1f} s "
        f"({sent / max(elapsed, 1e-9):.0f}/s)"
    )
    return sent


def read_performance(
    kafka: KafkaSettings, pipeline: str, timeout: float = 10.0
) -> list[dict[str, Any]]:
    """Every ``driftline.performance`` event of a pipeline, in topic order per partition.

    An event identical to one read before is left out: a revision republished after a crash
    or by a second monitor is the same bytes under the same (window, revision), one event.
    """
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    topic = kafka.topic("performance")
    c = Consumer(
        kafka.client_config(
            **{
                "group.id": f"driftline-client-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
            }
        )
    )
    try:
        try:
            md = c.list_topics(topic, timeout=10).topics.get(topic)
        except KafkaException as exc:
            raise ServiceError(f"Kafka: {exc}") from exc
        if md is None or md.error is not None:
            return []
        parts = sorted(md.partitions)
        ends = {
            p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)[1]
            for p in parts
        }
        todo = {p for p in parts if ends[p] > 0}
        c.assign([TopicPartition(topic, p, 0) for p in parts])
        out: list[dict[str, Any]] = []
        seen: set[bytes] = set()
        deadline = time.monotonic() + timeout
        while todo and time.monotonic() < deadline:
            for m in c.consume(5000, 0.5):
                if m.error() is not None:
                    continue
                try:
                    e = orjson.loads(m.value() or b"")
                except orjson.JSONDecodeError:
                    continue
                if isinstance(e, dict) and e.get("pipeline") == pipeline:
                    raw = orjson.dumps(e, option=orjson.OPT_SORT_KEYS)
                    if raw not in seen:
                        seen.add(raw)
                        out.append(e)
            for tp in c.position([TopicPartition(topic, p) for p in list(todo)]):
                if tp.offset >= ends[tp.partition]:
                    todo.discard(tp.partition)
        return out
    finally:
        c.close()


def latest_revisions(events: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The highest revision of every (name, window end), ordered by name and window.

    >>> evs = [{"name": "q", "window_end": 2, "revision": 0},
    ...        {"name": "q", "window_end": 2, "revision": 1},
    ...        {"name": "q", "window_end": 1, "revision": 0}]
    >>> [(e["window_end"], e["revision"]) for e in latest_revisions(evs)]
    [(1, 0), (2, 1)]
    """
    best: dict[tuple[str, int], dict[str, Any]] = {}
    for e in events:
        k = (str(e["name"]), int(e["window_end"]))
        if k not in best or best[k]["revision"] <= e["revision"]:
            best[k] = e
    return [best[k] for k in sorted(best)]


def _flat(e: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {
        "name": e["name"],
        "window_start": e["window_start"],
        "window_end": e["window_end"],
        "revision": e["revision"],
        "predictions": e["predictions"],
        "labeled": e["labeled"],
    }
    for k, v in (e.get("metrics") or {}).items():
        if k not in row and not isinstance(v, dict):
            row[k] = v
    for k, v in (e.get("estimated") or {}).items():
        row[f"estimated_{k}"] = v
    return row


def performance_frame(events: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """Events as a table: one row per event, metrics and ``estimated_*`` as columns."""
    import pandas as pd

    frame = pd.DataFrame([_flat(e) for e in events])
    for col in ("window_start", "window_end"):
        if col in frame:
            frame[col] = pd.to_datetime(frame[col], unit="ms", utc=True)
    return frame


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M")


def _num(x: Any) -> str:
    return "-" if x is None else f"{x:.4g}" if isinstance(x, float) else str(x)


def cmd_performance(
    kafka: KafkaSettings,
    name: str,
    window: str | None = None,
    as_json: bool = False,
    history: bool = False,
) -> list[dict[str, Any]]:
    """``driftline performance NAME [--window T] [--json] [--history]``; returns the rows."""
    from rich.table import Table

    from driftline._console import out

    events = read_performance(kafka, name)
    if window is not None:
        from driftline.streams._monitor_cli import parse_time

        t = parse_time(window, "--window")
        events = [e for e in events if e["window_start"] <= t < e["window_end"]]
    rows = (
        sorted(events, key=lambda e: (e["name"], e["window_end"], e["revision"]))
        if history
        else latest_revisions(events)
    )
    if as_json:
        out.print_json(json.dumps(rows, sort_keys=True, default=str))
        return rows
    if not rows:
        out.print(f"no performance windows for {name} yet")
        return rows
    main = ("accuracy", "precision", "recall", "f1", "roc_auc", "macro_f1", "mae", "rmse", "r2")
    shown = [m for m in main if any(m in (e.get("metrics") or {}) for e in rows)]
    est = sorted({k for e in rows for k in (e.get("estimated") or {})} & {"accuracy", "f1"})
    table = Table(
        "name", "window", "rev", "predictions", "labeled", *shown, *(f"est. {k}" for k in est)
    )
    for e in rows:
        m, x = e.get("metrics") or {}, e.get("estimated") or {}
        table.add_row(
            e["name"],
            f"{_iso(e['window_start'])} – {_iso(e['window_end'])}",
            str(e["revision"]),
            str(e["predictions"]),
            str(e["labeled"]),
            *(_num(m.get(k)) for k in shown),
            *(_num(x.get(k)) for k in est),
        )
    out.print(table)
    return rows
