"""``driftline replay``: recompute windows, assay results and alert transitions from Kafka.

Replay feeds a time range of a pipeline's results topic through the same
:class:`~driftline.streams._engine.PipelineEngine` the live monitor runs, with the state kept
under a scratch Redis prefix that is deleted afterwards. It reads with a throw-away consumer
group and never commits, so production offsets stay untouched, and it publishes nothing.

Range rules (all deterministic)
    * Results are read by Kafka timestamp from ``T1 - (longest window + lateness)`` up to
      the first record stamped ``T2 + lateness + slack`` or later, so that windows starting
      at ``T1`` see all their events (transaction markers, stamped by the broker's clock, do
      not end the range: backfilled results come after markers newer than them).
    * At the end, every window ending at or before ``T2`` is closed (the replay counterpart of
      the live monitor's idle close).
    * Reported, and audited, are the windows with ``start >= T1`` and ``end <= T2``; alert
      transitions are compared from ``T1 + longest alert window`` on, because replay starts
      every alert in the ``ok`` state.

Audit compares those with what ``driftline.assays`` and ``driftline.notifications`` hold:
assay results by (assay, window end) — count, score, p-value, status — and notifications
(alert and assay transitions) by their deterministic id — value and severity.

Performance (pipelines whose spec has ``performance:``)
    * The feedback topic is read from its records stamped ``T1 - (longest window + lateness
      + horizon)`` (a label may come before its prediction, and waits at most a horizon) up
      to the first record stamped ``T2 + horizon`` or later, or its end: after that no label
      can change a window of the range. The results are read as above.
    * Feedback is applied first, then the results, each partition in offset order, to a
      :class:`~driftline.streams._feedback_io.PipelinePerformance` on in-memory state; then
      windows are closed once, at the results' watermark, as the monitor's tick closes them
      (a partition whose reading stopped at a record stamped past the range counts as
      having reached that stamp, as it has live).
      Each window's single replayed event therefore holds *every* label: it is what the live
      monitor's latest revision holds once it has applied the same labels.
    * Only that is deterministic. The live monitor publishes a revision on its housekeeping
      tick (about once a second), so which labels an intermediate revision holds, and how
      many revisions a window gets, depend on timing. Audit therefore compares the *latest*
      live revision of every window of the range (``start >= T1``, ``end <= T2``) with the
      replayed window — predictions, labeled, every realized and estimated metric — and
      checks what it can check exactly about the others on the topic alone: revision
      numbers run ``0..latest`` without a gap, and no (window, revision) was published with
      two different contents (a redelivery after a crash carries the same content).
    * Exactness needs what the live join needs: every label of a pair in one feedback
      partition (``driftline feedback`` keys by id, so the last label wins in both), and
      labels arriving within the horizon (a label the live monitor refused as older than
      the horizon, ``expired_labels``, is one replay may count).
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis

from driftline.config import MonitorSettings, Settings
from driftline.events import AssayResult, Notification, decode
from driftline.streams._engine import Batch, PipelineEngine

if TYPE_CHECKING:
    import pandas as pd

    from driftline.streams._feedback_io import Record

__all__ = [
    "AuditReport",
    "Difference",
    "ReplayResult",
    "audit",
    "compare_performance",
    "replay",
    "result_frame",
    "write_result",
]

# Produce time runs a little behind event time; read this much past the range end.
READ_SLACK_MS = 60_000


@dataclass
class ReplayResult:
    """What replay recomputed for ``[start, end)`` (event time)."""

    pipeline: str
    start: int
    end: int
    events: int = 0
    late: int = 0
    dead: int = 0
    assays: list[AssayResult] = field(default_factory=list)
    notifications: list[Notification] = field(default_factory=list)
    compare_from: int = 0
    #: ``driftline.performance`` events, one per (entry, window): the window with every label
    performance: list[dict[str, Any]] = field(default_factory=list)
    labels: int = 0
    dead_labels: int = 0
    joined: bool = False  # the spec declares performance: audit compares it

    def to_dict(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline,
            "from": self.start,
            "to": self.end,
            "events": self.events,
            "late": self.late,
            "dead": self.dead,
            "assays": [a.to_dict() for a in self.assays],
            "notifications": [n.to_dict() for n in self.notifications],
            "labels": self.labels,
            "dead_labels": self.dead_labels,
            "performance": list(self.performance),
        }


@dataclass(frozen=True)
class Difference:
    kind: str  # "assay", "notification" or "performance"
    key: str
    what: str
    live: Any
    replay: Any

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "key": self.key,
            "what": self.what,
            "live": self.live,
            "replay": self.replay,
        }


@dataclass
class AuditReport:
    compared_assays: int
    compared_notifications: int
    differences: list[Difference]
    compared_performance: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "compared_assays": self.compared_assays,
            "compared_notifications": self.compared_notifications,
            "compared_performance": self.compared_performance,
            "differences": [d.to_dict() for d in self.differences],
        }


def replay(
    settings: Settings,
    canonical: Mapping[str, Any],
    start: int,
    end: int,
    client: redis.Redis | None = None,
    base_dir: Any = None,
) -> ReplayResult:
    """Recompute the pipeline described by ``canonical`` over event times ``[start, end)``."""
    from driftline.kafka.offsets import end_offsets, offsets_for_time
    from driftline.streams._build import build_engine, read_range

    if end <= start:
        raise ValueError(f"--to ({end}) must be after --from ({start})")
    own = client is None
    client = client or redis.Redis.from_url(
        settings.redis.redis_url.get_secret_value(), **settings.redis.client_kwargs()
    )
    scratch = f"{settings.redis.key_prefix}-replay-{uuid.uuid4().hex[:12]}"
    engine: PipelineEngine | None = None
    try:
        engine, spec = build_engine(
            settings, canonical, client, key_prefix=scratch, base_dir=base_dir
        )
        topic = settings.kafka.topic(spec.name, "results")
        parts = range(engine.partitions)
        lookback = engine.longest_ms + engine.lateness_ms
        lo = offsets_for_time(settings, topic, parts, start - lookback)
        # Not offsets_for_time: after a backfill the first transaction marker (stamped with
        # the broker's clock) would end the range before the backfilled results.
        hi = end_offsets(settings, topic, parts)
        stop_at = end + engine.lateness_ms + READ_SLACK_MS
        out = ReplayResult(spec.name, start, end, compare_from=start + engine.longest_ms)
        # the live monitor's event-time bounds, relative to the range end instead of now
        ms = MonitorSettings()
        bounds = (end - ms.monitor_max_event_age_ms, end + ms.monitor_max_event_skew_ms)

        def collect(floor: int | None = None) -> None:
            assert engine is not None
            closed = engine.close(floor)
            out.assays.extend(closed.assays)
            out.notifications.extend(closed.notifications)
            engine.commit(closed)

        def on_batch(batch: Batch) -> None:
            assert engine is not None
            rep = engine.ingest(batch, bounds=bounds)
            out.events += rep.applied
            out.late += len(rep.late)
            out.dead += len(rep.dead)
            collect()

        read_range(settings, topic, lo, hi, on_batch, stop_at_ms=stop_at)
        collect(floor=end)
        if getattr(spec, "performance", None):
            _replay_performance(settings, spec, out, engine.partitions, stop_at)
        out.assays = [a for a in out.assays if a.window_start >= start and a.window_end <= end]
        out.notifications = [
            n for n in out.notifications if start <= n.window.get("start", n.at) and n.at <= end
        ]
        return out
    finally:
        if engine is not None:
            engine.state.clear()
        if own:
            client.close()


def _read_timed(
    settings: Settings,
    topic: str,
    start: Mapping[int, int],
    stop: Mapping[int, int],
    on_records: Callable[[list[Record]], None],
    stop_at_ms: int | None = None,
    timeout_s: float = 60.0,
) -> set[int]:
    """Like :func:`~driftline.kafka.offsets.read_records`, with each record's timestamp.

    The join needs it: feedback without a ``time`` takes its record's timestamp, as it does
    in the monitor. Returns the partitions that ended at a record stamped ``stop_at_ms`` or
    later (rather than at ``stop``).
    """
    from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

    from driftline.streams._feedback_io import Record

    todo = {p: (s, stop[p]) for p, s in start.items() if p in stop and s < stop[p]}
    cut: set[int] = set()
    if not todo:
        return cut
    consumer = Consumer(
        settings.kafka.client_config(
            **{
                "group.id": f"driftline-replay-{uuid.uuid4().hex[:12]}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "auto.offset.reset": "earliest",
                "enable.partition.eof": True,
            }
        )
    )
    try:
        consumer.assign([TopicPartition(topic, p, s) for p, (s, _) in todo.items()])
        remaining = set(todo)
        deadline = time.monotonic() + timeout_s
        while remaining:
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic}: partitions {sorted(remaining)} incomplete")
            rows: list[Record] = []
            for m in consumer.consume(5000, 0.5):
                err, part = m.error(), int(m.partition() or 0)
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        remaining.discard(part)
                        continue
                    raise KafkaException(err)
                off, ts = int(m.offset() or 0), int(m.timestamp()[1])
                if part not in remaining or off >= todo[part][1]:
                    remaining.discard(part)
                    continue
                if stop_at_ms is not None and ts >= stop_at_ms:
                    remaining.discard(part)
                    cut.add(part)
                    continue
                rows.append(Record(topic, part, off, m.value(), ts, m.key()))
                if off + 1 >= todo[part][1]:
                    remaining.discard(part)
            if rows:
                # offset order per partition, as a monitor's fetch delivers them
                rows.sort(key=lambda r: (r.partition, r.offset))
                on_records(rows)
    finally:
        consumer.close()
    return cut


def _replay_performance(
    settings: Settings, spec: Any, out: ReplayResult, partitions: int, results_stop_at: int
) -> None:
    """Fill ``out.performance`` with every entry's windows of the range (module docstring)."""
    from confluent_kafka import KafkaException

    from driftline.kafka.offsets import end_offsets, offsets_for_time, topic_partitions
    from driftline.streams._feedback_io import PipelinePerformance
    from driftline.streams._feedback_state import MemoryJoinState
    from driftline.streams.windows import pipeline_watermark

    out.joined = True
    k = settings.kafka
    results, feedback = k.topic(spec.name, "results"), k.topic(spec.name, "feedback")
    perf = PipelinePerformance(
        spec, lambda _n, _d, _h: MemoryJoinState(), results, feedback, partitions
    )
    entries = spec.performance.values()
    lookback = max(p.window_width_ms for p in entries) + int(spec.options.lateness_ms)
    horizon = max(p.horizon_ms for p in entries)

    def apply(records: list[Record]) -> None:
        dead = perf.apply(records)
        if records[0].topic == feedback:
            out.labels += len(records) - len(dead)
            out.dead_labels += len(dead)

    try:
        fparts = range(topic_partitions(settings, feedback))
    except KafkaException:  # never deployed with performance: no labels to join
        fparts = range(0)
    if fparts:
        lo = offsets_for_time(settings, feedback, fparts, out.start - lookback - horizon)
        hi = end_offsets(settings, feedback, fparts)
        _read_timed(settings, feedback, lo, hi, apply, stop_at_ms=out.end + horizon)
    rparts = range(partitions)
    lo = offsets_for_time(settings, results, rparts, out.start - lookback)
    hi = end_offsets(settings, results, rparts)
    cut = _read_timed(settings, results, lo, hi, apply, stop_at_ms=results_stop_at)
    # A partition whose reading stopped at a record stamped past the range has, live, seen
    # that record too: its watermark is at least there, even when the partition was quiet
    # before it (otherwise the range's last windows would close live and not here).
    seen = next(iter(perf.joins.values())).state.max_times()
    for part in cut:
        seen[part] = max(seen.get(part, results_stop_at), results_stop_at)
    watermark = pipeline_watermark(seen, partitions, int(spec.options.lateness_ms))
    for closing in perf.close(watermark).values():
        out.performance.extend(
            e
            for e in closing.events
            if e["window_start"] >= out.start and e["window_end"] <= out.end
        )
    out.performance.sort(key=lambda e: (e["window_end"], e["name"]))


def _flat(prefix: str, x: Any) -> dict[str, Any]:
    """``{"metrics.accuracy": 0.9, "metrics.per_class.a.recall": ...}`` of nested dicts."""
    if isinstance(x, Mapping):
        flat: dict[str, Any] = {}
        for key, v in x.items():
            flat.update(_flat(f"{prefix}.{key}", v))
        return flat
    return {prefix: x}


def _audit_performance(settings: Settings, result: ReplayResult) -> tuple[int, list[Difference]]:
    live = _live(settings, settings.kafka.topic("performance"), result.start)
    return compare_performance(live, result)


def compare_performance(
    live: Iterable[Mapping[str, Any]], result: ReplayResult
) -> tuple[int, list[Difference]]:
    """Audit of performance windows: ``(windows compared, differences)``.

    ``live`` holds the ``driftline.performance`` events read back (any pipeline, any
    order). The latest revision of each window of the range is compared with the replayed
    window; the others are checked for what is exact without timing: revision numbers
    ``0..latest`` without a gap, one content per (window, revision).

    >>> e = {"pipeline": "p", "name": "q", "window_start": 0, "window_end": 10,
    ...      "predictions": 3, "labeled": 2, "metrics": {"accuracy": 0.5}, "estimated": None}
    >>> r = ReplayResult("p", 0, 10, performance=[dict(e, revision=0)])
    >>> compare_performance([dict(e, revision=0, labeled=0), dict(e, revision=1)], r)
    (1, [])
    >>> n, d = compare_performance([dict(e, revision=1, metrics={"accuracy": 1.0})], r)
    >>> [(x.key, x.what, x.live, x.replay) for x in d]
    [('q@10', 'revisions', [0], None), ('q@10', 'metrics.accuracy', 1.0, 0.5)]
    """
    diffs: list[Difference] = []
    seen: dict[tuple[str, int, int], Mapping[str, Any]] = {}
    for d in live:
        if not (
            d.get("pipeline") == result.pipeline
            and isinstance(d.get("window_end"), int)
            and isinstance(d.get("revision"), int)
            and d.get("window_start", -1) >= result.start
            and d["window_end"] <= result.end
        ):
            continue
        key = (str(d.get("name")), int(d["window_end"]), int(d["revision"]))
        first = seen.setdefault(key, d)
        if first is not d:
            a, b = _flat("", _content(first)), _flat("", _content(d))
            for f in sorted(set(a) | set(b)):
                if not _same(a.get(f), b.get(f)):
                    label = f"{key[0]}@{key[1]}#{key[2]}"
                    what = f"republished {f.lstrip('.')}"
                    diffs.append(Difference("performance", label, what, a.get(f), b.get(f)))
    latest: dict[tuple[str, int], Mapping[str, Any]] = {}
    revisions: dict[tuple[str, int], set[int]] = {}
    for (name, end, rev), d in seen.items():
        revisions.setdefault((name, end), set()).add(rev)
        if (name, end) not in latest or latest[(name, end)]["revision"] < rev:
            latest[(name, end)] = d
    for (name, end), revs in sorted(revisions.items()):
        missing = sorted(set(range(max(revs) + 1)) - revs)
        if missing:
            diffs.append(Difference("performance", f"{name}@{end}", "revisions", missing, None))
    mine = {
        (str(e["name"]), int(e["window_end"])): e
        for e in result.performance
        if e["window_start"] >= result.start and e["window_end"] <= result.end
    }
    for window in sorted(set(latest) | set(mine)):
        label = f"{window[0]}@{window[1]}"
        now, rep = latest.get(window), mine.get(window)
        if now is None or rep is None:
            diffs.append(
                Difference("performance", label, "missing", now is not None, rep is not None)
            )
            continue
        a, b = _flat("", _content(now)), _flat("", _content(rep))
        for f in sorted(set(a) | set(b)):
            if not _same(a.get(f), b.get(f)):
                diffs.append(Difference("performance", label, f.lstrip("."), a.get(f), b.get(f)))
    return len(mine), diffs


def _content(d: Mapping[str, Any]) -> dict[str, Any]:
    """What a revision says about its window (not its number, spec or timing)."""
    return {k: d.get(k) for k in ("predictions", "labeled", "metrics", "estimated")}


def _live(settings: Settings, topic: str, start: int) -> list[dict[str, Any]]:
    from driftline.kafka.offsets import end_offsets, offsets_for_time, topic_partitions
    from driftline.streams._build import read_range

    parts = range(topic_partitions(settings, topic))
    # Results of a window are published after it closes, so never before its start.
    lo = offsets_for_time(settings, topic, parts, start)
    hi = end_offsets(settings, topic, parts)
    rows: list[dict[str, Any]] = []

    def on_batch(b: Batch) -> None:
        for v in b.values:
            try:
                rows.append(decode(v))
            except ValueError:
                continue

    read_range(settings, topic, lo, hi, on_batch)
    return rows


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float | int) and isinstance(b, float | int):
        fa, fb = float(a), float(b)
        if math.isnan(fa) and math.isnan(fb):
            return True
        return math.isclose(fa, fb, rel_tol=1e-9, abs_tol=1e-12)
    return bool(a == b)


def audit(settings: Settings, result: ReplayResult) -> AuditReport:
    """Compare a replay with what the live monitor published for the same range."""
    diffs: list[Difference] = []
    live_assays: dict[tuple[str, int], dict[str, Any]] = {}
    for d in _live(settings, settings.kafka.topic("assays"), result.start):
        if (
            d.get("pipeline") == result.pipeline
            and d.get("status") != "error"  # a quarantine, not a window: nothing to recompute
            and d.get("window_start", -1) >= result.start
            and d.get("window_end", math.inf) <= result.end
        ):
            live_assays[(d["assay"], d["window_end"])] = d
    mine = {(a.assay, a.window_end): a.to_dict() for a in result.assays}
    for key in sorted(set(live_assays) | set(mine)):
        name = f"{key[0]}@{key[1]}"
        live, rep = live_assays.get(key), mine.get(key)
        if live is None or rep is None:
            diffs.append(Difference("assay", name, "missing", live is not None, rep is not None))
            continue
        for f in ("count", "score", "p_value", "status", "metric"):
            if not _same(live.get(f), rep.get(f)):
                diffs.append(Difference("assay", name, f, live.get(f), rep.get(f)))

    def in_scope(d: Mapping[str, Any]) -> bool:
        return (
            d.get("pipeline") == result.pipeline
            and d.get("kind") != "error"
            and result.compare_from <= d.get("at", -1) <= result.end
            and d.get("window", {}).get("start", -1) >= result.start
        )

    live_notes = {
        d["id"]: d
        for d in _live(settings, settings.kafka.topic("notifications"), result.start)
        if "id" in d and in_scope(d)
    }
    my_notes = {n.id: n.to_dict() for n in result.notifications if in_scope(n.to_dict())}
    for nid in sorted(set(live_notes) | set(my_notes)):
        live, rep = live_notes.get(nid), my_notes.get(nid)
        src = live or rep
        assert src is not None
        label = f"{src['alert']}:{src['state']}@{src['at']}"
        if live is None or rep is None:
            diffs.append(
                Difference("notification", label, "missing", live is not None, rep is not None)
            )
        else:
            for f in ("value", "severity"):
                if not _same(live.get(f), rep.get(f)):
                    diffs.append(Difference("notification", label, f, live.get(f), rep.get(f)))
    compared, perf_diffs = 0, list[Difference]()
    if result.joined:
        compared, perf_diffs = _audit_performance(settings, result)
    return AuditReport(len(mine), len(my_notes), diffs + perf_diffs, compared)


def summarize(result: ReplayResult) -> list[dict[str, Any]]:
    """Rows for a table: one per assay window and one per alert transition, in time order."""
    rows: list[dict[str, Any]] = []
    for a in result.assays:
        rows.append(
            {
                "at": a.window_end,
                "kind": "assay",
                "name": a.assay,
                "value": a.score,
                "status": a.status,
                "count": a.count,
            }
        )
    for n in result.notifications:
        rows.append(
            {
                "at": n.at,
                "kind": n.kind,
                "name": n.alert,
                "value": n.value,
                "status": n.state,
                "count": None,
            }
        )
    for e in result.performance:
        rows.append(
            {
                "at": e["window_end"],
                "kind": "performance",
                "name": e["name"],
                "value": headline(e["metrics"]),
                "status": f"{e['labeled']} labeled",
                "count": e["predictions"],
            }
        )
    rows.sort(key=lambda r: (r["at"], r["kind"], r["name"]))
    return rows


def headline(metrics: Mapping[str, Any]) -> Any:
    """The one metric a table shows of a performance window: accuracy, or RMSE (regression).

    >>> headline({"accuracy": 0.9, "f1": 0.5}), headline({"rmse": 1.5}), headline({})
    (0.9, 1.5, None)
    """
    for name in ("accuracy", "rmse"):
        if name in metrics:
            return metrics[name]
    return None


def result_frame(result: ReplayResult) -> pd.DataFrame:
    """The recomputed assay windows and alert transitions as a DataFrame, in time order.

    Performance windows are rows too (``kind`` performance, ``value`` the accuracy or RMSE,
    ``count`` the predictions). Columns: ``at`` (UTC timestamp), ``record`` (``window`` for
    an assay or performance window,
    ``transition`` for an alert or assay-status transition), ``kind`` (assay or alert),
    ``name``, ``value`` (score or aggregate), ``status`` (ok/warning/alert or
    firing/resolved), ``count``, ``p_value``, ``window_start``, ``window_end`` (epoch ms) and
    ``id`` (the notification id of a transition).
    """
    import pandas as pd

    rows: list[dict[str, Any]] = []
    for a in result.assays:
        rows.append(
            {
                "at": a.window_end,
                "record": "window",
                "kind": "assay",
                "name": a.assay,
                "value": a.score,
                "status": a.status,
                "count": a.count,
                "p_value": a.p_value,
                "window_start": a.window_start,
                "window_end": a.window_end,
                "id": None,
            }
        )
    for n in result.notifications:
        rows.append(
            {
                "at": n.at,
                "record": "transition",
                "kind": n.kind,
                "name": n.alert,
                "value": n.value,
                "status": n.state,
                "count": None,
                "p_value": None,
                "window_start": n.window.get("start"),
                "window_end": n.window.get("end"),
                "id": n.id,
            }
        )
    for e in result.performance:
        rows.append(
            {
                "at": e["window_end"],
                "record": "window",
                "kind": "performance",
                "name": e["name"],
                "value": headline(e["metrics"]),
                "status": f"{e['labeled']} labeled",
                "count": e["predictions"],
                "p_value": None,
                "window_start": e["window_start"],
                "window_end": e["window_end"],
                "id": None,
            }
        )
    frame = pd.DataFrame(rows, columns=list(rows[0]) if rows else None)
    if rows:
        frame = frame.sort_values(["at", "record", "name"], kind="stable").reset_index(drop=True)
        frame["at"] = pd.to_datetime(frame["at"], unit="ms", utc=True)
    return frame


def write_result(result: ReplayResult, path: str | Path) -> Path:
    """Write :func:`result_frame` to ``.csv``, ``.parquet`` or ``.json`` (by the suffix)."""
    path = Path(path)
    frame = result_frame(result)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix in (".parquet", ".pq"):
        frame.to_parquet(path, index=False)
    elif suffix == ".json":
        frame.to_json(path, orient="records", date_format="iso")
    else:
        raise ValueError(f"--output {str(path)!r}: use a .csv, .parquet or .json file")
    return path
