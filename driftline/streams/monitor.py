"""``driftline monitor``: faust agents that keep windows in Redis and emit assays and alerts.

One faust app consumes the results topics of every deployed pipeline in micro-batches (whole
fetches, see *Batches* below), hands each batch to the pipeline's
:class:`~driftline.streams._engine.PipelineEngine` (one Redis script call per batch), closes
windows the watermark has passed, and publishes assay results to ``driftline.assays`` and
alert transitions to ``driftline.notifications`` before recording the windows as emitted.

Reading committed data only
    faust's aiokafka consumer reads ``read_uncommitted`` unless the app itself runs with the
    exactly-once guarantee (which would also make every output transactional). The monitor
    uses a small transport subclass that builds the consumer with
    ``isolation_level="read_committed"`` (and a short fetch wait), so results of an aborted
    inference-worker transaction are never counted.

Batches
    faust's consumer loop turns every record into a message and an event and awaits two
    tasks for it, which caps any per-event agent near 13k events/s on one core. The monitor's
    consumer subclass hands each aiokafka fetch (up to ``monitor_batch_size`` records) to the
    agent as one event instead; the agent applies it and commits the group's offsets once a
    second. Committed offsets only say where to resume: the Redis offset guard makes a batch
    seen twice change nothing.

Following pipelines
    faust's pattern subscriptions do not work with its aiokafka driver, so the app follows the
    control topic (``Follower.poll(0)`` from a timer) and changes the topic list of its one
    results channel, then asks faust to resubscribe. The control topic itself is the initial
    member of that list (faust needs a non-empty subscription); its messages are ignored there.

Watermarks and idle pipelines
    A pipeline's watermark comes from its own events (see :mod:`driftline.streams.windows`):
    one that has seen no event closes nothing, and a backfill hours or days old gets all its
    windows. When a pipeline receives nothing for ``idle_close`` (default: its shortest
    interval) of wall-clock time, its watermark advances from its latest event time by the
    wall time elapsed since that event arrived, so windows close and alerts resolve. This is
    the one wall-clock rule; replay closes every window ending at or before the end of its
    range instead. Events dated outside ``[now - monitor_max_event_age_ms, now +
    monitor_max_event_skew_ms]`` (90 days, 1 day) go to ``<p>.deadletter`` as
    ``time_out_of_range`` and never move a watermark.

Losing Redis
    Redis holds nothing the results topics cannot give back. When it comes back empty or from
    an older snapshot, the offset guard finds it behind what the engine applied (on the next
    batch, or before the next close), and :meth:`Monitor.rebuild_lost` replays every partition
    from ``now - lookback`` up to what the engine had applied before going on.

Redis or Kafka out of reach
    A batch that finds Redis or Kafka unreachable is tried again (backoff up to 5 s) until it
    goes through; nothing after it is applied or committed meanwhile, and the gauge
    ``driftline_monitor_stalled`` is 1. Late and malformed events are published, and their
    delivery awaited, before the batch is applied to Redis: a crash in between publishes
    them again rather than never.

One pipeline never stops the others
    An error computing one pipeline (building its engine or baselines, folding a batch,
    a detector raising at close) that is not Redis or Kafka failing quarantines that
    pipeline only (:meth:`Monitor.quarantine`): an ``error`` assay result on
    ``driftline.assays`` whose ``detail`` names pipeline, assay and cause, a
    ``kind="error"`` notification to every target its spec declares,
    ``driftline_monitor_pipeline_errors_total`` and ``driftline_monitor_quarantined``, one
    log line. Its results are still read and their offsets committed, so nothing piles up;
    deploying a new spec version resumes it. Any other error on a batch (outside every
    pipeline) ends the process with status 70 (faust would restart the agent with the next
    batch and lose this one); a restarted monitor reads the batch again from the last
    committed offsets.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import os
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import redis
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from prometheus_client import Counter, Gauge

from driftline.config import MonitorSettings, Settings
from driftline.errors import ServiceError
from driftline.events import AssayResult, Notification, encode, notification_id
from driftline.streams._engine import (
    AlertPlan,
    AssayFailed,
    AssayPlan,
    Batch,
    ClosedWindows,
    DetectorBaseline,
    IngestReport,
    PipelineEngine,
    ScanPlan,
    StateLost,
)
from driftline.streams.state import RedisState, split_field
from driftline.streams.windows import idle_floor

__all__ = [
    "Monitor",
    "build_engine",
    "check_redis",
    "create_app",
    "plans_from_spec",
    "read_range",
    "run_monitor",
]

log = logging.getLogger("driftline.monitor")

EVENTS = Counter("driftline_monitor_events", "Result events consumed", ["pipeline"])
BATCHES = Counter("driftline_monitor_batches", "Micro-batches applied", ["pipeline"])
LATE = Counter(
    "driftline_monitor_late_events", "Events later than the allowed lateness", ["pipeline"]
)
DEAD = Counter("driftline_monitor_dead_letters", "Malformed result events", ["pipeline", "reason"])
ASSAY_SCORE = Gauge(
    "driftline_assay_score", "Score of the last closed window", ["pipeline", "assay"]
)
ASSAY_STATUS = Gauge("driftline_assay_status", "0 ok, 1 warning, 2 alert", ["pipeline", "assay"])
ALERT_STATE = Gauge("driftline_alert_firing", "1 while the alert fires", ["pipeline", "alert"])
WATERMARK_LAG = Gauge(
    "driftline_window_lateness_seconds",
    "Largest event time seen minus the pipeline watermark",
    ["pipeline"],
)
REBUILDS = Counter("driftline_monitor_rebuilds", "Open windows rebuilt from Kafka", ["pipeline"])
RETRIES = Counter(
    "driftline_monitor_retries",
    "Batches tried again because Redis or Kafka was unreachable",
    ["cause"],
)
STALLED = Gauge("driftline_monitor_stalled", "1 while a batch waits for Redis or Kafka")
PIPELINE_ERRORS = Counter(
    "driftline_monitor_pipeline_errors",
    "Errors that quarantined a pipeline (its spec, baseline or detector failed)",
    ["pipeline"],
)
QUARANTINED = Gauge(
    "driftline_monitor_quarantined",
    "1 while a pipeline is quarantined after an error",
    ["pipeline"],
)

#: Exit status of a monitor that met an unexpected error (EX_SOFTWARE).
EXIT_BATCH_FAILED = 70


def transient(exc: BaseException) -> str | None:
    """``"redis"`` or ``"kafka"`` when trying again later can help, else ``None``.

    >>> transient(redis.ConnectionError("refused")), transient(ValueError("bug"))
    ('redis', None)
    >>> transient(redis.AuthenticationError("invalid password"))
    """
    if isinstance(exc, redis.AuthenticationError | redis.exceptions.AuthorizationError):
        return None  # a setting to fix, not an outage to wait out
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        return "redis"
    if isinstance(exc, KafkaException):
        err = exc.args[0] if exc.args else None
        if isinstance(err, KafkaError) and err.fatal():
            return None
        return "kafka"
    return None


def infrastructure(exc: BaseException) -> bool:
    """Whether ``exc`` is Redis or Kafka failing (wait, or stop) rather than one pipeline.

    >>> infrastructure(redis.ConnectionError("refused")), infrastructure(ValueError("bad"))
    (True, False)
    """
    if transient(exc) is not None:
        return True
    return isinstance(
        exc, redis.AuthenticationError | redis.exceptions.AuthorizationError | KafkaException
    )


def _targets(canonical: Mapping[str, Any] | None) -> list[str]:
    """Every notify target a canonical spec declares (alerts and assays), sorted.

    >>> _targets({"alerts": {"a": {"notify": ["email:x@y.org"]}},
    ...           "assays": {"d": {"notify": ["webhook:p", "email:x@y.org"]}}})
    ['email:x@y.org', 'webhook:p']
    """
    found: set[str] = set()
    for section in ("alerts", "assays"):
        entries = (canonical or {}).get(section) or {}
        if not isinstance(entries, Mapping):
            continue
        for entry in entries.values():
            notify = entry.get("notify") if isinstance(entry, Mapping) else None
            if isinstance(notify, list | tuple):
                found.update(str(t) for t in notify)
    return sorted(found)


@dataclass(frozen=True)
class Quarantine:
    """Why a pipeline is not monitored until a new spec version is deployed."""

    version: str
    assay: str | None
    cause: str


def _metric(name: str, value: float, labels: dict[str, str]) -> None:
    if name == "assay_score":
        ASSAY_SCORE.labels(**labels).set(value)
    elif name == "assay_status":
        ASSAY_STATUS.labels(**labels).set(value)


# ---------------------------------------------------------------------------- spec → plans


def _baseline_for(assay: Any, values: np.ndarray) -> DetectorBaseline:
    from driftline.detectors import Baseline

    bins = dict(getattr(assay, "bins", None) or {})
    base = Baseline.from_values(
        values,
        bins=str(bins.get("mode", "quantile")),
        num_bins=int(bins.get("count", 5)),
        edges=bins.get("edges"),
        outliers=str(bins.get("outliers", "explicit")),
    )
    thresholds = dict(getattr(assay, "thresholds", None) or {}) or None
    return DetectorBaseline(base, str(assay.metric), thresholds)


def _scan_plan(scan: Mapping[str, Any] | None) -> ScanPlan | None:
    if not scan:
        return None
    return ScanPlan(str(scan["test"]), float(scan["alpha"]), tuple(int(k) for k in scan["scales"]))


def plans_from_spec(
    spec: Any, baseline_values: Callable[[Any], np.ndarray]
) -> tuple[list[AlertPlan], list[AssayPlan]]:
    """Alert and assay plans of a :class:`~driftline.spec.PipelineSpec`.

    ``baseline_values(assay_spec)`` returns the baseline values of one assay (from its file,
    inline values, or the pipeline's history).
    """
    alerts = [
        AlertPlan(
            name=name,
            condition=a.condition,
            for_ms=int(getattr(a, "for_ms", 0) or 0),
            repeat_ms=int(getattr(a, "repeat_ms", 0) or 0),
            severity=str(getattr(a, "severity", "warning") or "warning"),
            notify=tuple(getattr(a, "notify", ()) or ()),
        )
        for name, a in sorted(spec.alerts.items())
    ]
    assays = [
        AssayPlan(
            name=name,
            iopath=y.iopath,
            baseline=_baseline_for(y, np.asarray(baseline_values(y), dtype=np.float64)),
            width_ms=int(y.window_width_ms),
            interval_ms=int(y.window_interval_ms),
            metric=str(y.metric),
            notify=tuple(getattr(y, "notify", ()) or ()),
            scan=_scan_plan(getattr(y, "scan", None)),
            for_ms=int(getattr(y, "for_ms", 0) or 0),
            repeat_ms=int(getattr(y, "repeat_ms", 0) or 0),
            severity=str(getattr(y, "severity", "critical") or "critical"),
        )
        for name, y in sorted(spec.assays.items())
    ]
    return alerts, assays


# ---------------------------------------------------------------------------- Kafka helpers


def read_range(
    settings: Settings,
    topic: str,
    start: Mapping[int, int],
    stop: Mapping[int, int],
    on_batch: Callable[[Batch], None],
    batch_size: int = 5000,
    timeout_s: float = 60.0,
    stop_at_ms: int | None = None,
) -> int:
    """Read ``[start[p], stop[p])`` of each partition (read_committed), in batches; returns count.

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
            if rows:  # Batch.of puts each partition's offsets in order
                on_batch(Batch.of(topic, rows))
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
    from confluent_kafka.admin import AdminClient

    md = AdminClient(settings.kafka.client_config()).list_topics(topic, timeout=10)
    t = md.topics.get(topic)
    if t is None or t.error is not None or not t.partitions:
        raise KafkaException(f"topic {topic} does not exist")
    return len(t.partitions)


# ---------------------------------------------------------------------------- the monitor


def build_engine(
    settings: Settings,
    canonical: Mapping[str, Any],
    client: redis.Redis,
    key_prefix: str | None = None,
    base_dir: Path | None = None,
) -> tuple[PipelineEngine, Any]:
    """Engine for a deployed pipeline's canonical spec (plans, baselines, partition count)."""
    from driftline.spec import load_baseline_values, spec_from_canonical
    from driftline.streams.control import spec_version

    spec = spec_from_canonical(dict(canonical))
    version = spec_version(dict(canonical))
    results = settings.kafka.topic(spec.name, "results")
    prefix = key_prefix or settings.redis.key_prefix
    state = RedisState(client, prefix, spec.name)

    def baseline_values(assay: Any) -> np.ndarray:
        values = load_baseline_values(assay, base_dir or Path.cwd())
        if values is not None:
            return np.asarray(values, dtype=np.float64)
        return history_baseline(settings, spec, assay, state, version)

    alerts, assays = plans_from_spec(spec, baseline_values)
    lateness = int(getattr(spec.options, "lateness_ms", 5000))
    engine = PipelineEngine(
        spec.name,
        version,
        [m.name for m in spec.models],
        alerts,
        assays,
        state,
        topic_partitions(settings, results),
        lateness,
        on_metrics=_metric,
        tensor_names=spec.tensor_names(),
    )
    return engine, spec


def history_baseline(
    settings: Settings, spec: Any, assay: Any, state: RedisState, version: str
) -> np.ndarray:
    """Baseline values from ``{from, to}`` of the pipeline's results, cached per spec version."""
    import orjson

    from driftline.expressions import evaluate, variables
    from driftline.streams._engine import _decode, build_tensors

    cache = ("baseline", assay.name, version)
    cached = state.get(*cache)
    if cached is not None:
        return np.asarray(orjson.loads(cached), dtype=np.float64)
    t1, t2 = _time_range(assay.baseline)
    topic = settings.kafka.topic(spec.name, "results")
    parts = range(topic_partitions(settings, topic))
    start = offsets_for_time(settings, topic, parts, t1)
    stop = end_offsets(settings, topic, parts)  # ended at t2 by record time, see read_range
    chunks: list[np.ndarray] = []
    needed = {(v.model, v.kind) for v in variables(assay.iopath)}

    def on_batch(batch: Batch) -> None:
        docs, ok, _ = _decode(batch.values, any(kind == "inputs" for _, kind in needed))
        rows = [d for d, good in zip(docs, ok, strict=True) if d and good and t1 <= d.time < t2]
        if rows:
            tensors = build_tensors(rows, needed)
            chunks.append(np.asarray(evaluate(assay.iopath, tensors), dtype=np.float64))

    read_range(settings, topic, start, stop, on_batch, stop_at_ms=t2)
    values = np.concatenate(chunks) if chunks else np.zeros(0)
    if values.size == 0:
        from driftline.errors import SpecError

        raise SpecError(
            f"assays.{assay.name}.baseline",
            f"no results of pipeline {spec.name!r} between {t1} and {t2}; "
            "pick a range with traffic or give a file",
        )
    state.set(orjson.dumps(values.tolist()), *cache, ttl_s=30 * 24 * 3600)
    return values


def _version_of(canonical: Mapping[str, Any]) -> str:
    from driftline.streams.control import spec_version

    try:
        return spec_version(dict(canonical))
    except Exception:  # a spec too broken to hash is still named in the error event
        return "unknown"


def _time_range(baseline: Mapping[str, Any]) -> tuple[int, int]:
    from datetime import datetime

    def ms(x: Any) -> int:
        if isinstance(x, int | float):
            return int(x)
        return int(datetime.fromisoformat(str(x).replace("Z", "+00:00")).timestamp() * 1000)

    return ms(baseline["from"]), ms(baseline["to"])


@dataclass
class _Watched:
    engine: PipelineEngine
    results: str
    late: str
    deadletter: str
    idle_close_ms: int
    last_event_wall: float = field(default_factory=time.monotonic)
    seen_max: dict[int, int] = field(default_factory=dict)


class Monitor:
    """The I/O shell around the engines: routing, emission, idle close, rebuild.

    Synchronous on purpose: each call handles one micro-batch with one Redis script call and,
    when windows close, one produce-and-flush; faust calls it from its agent.
    """

    def __init__(
        self,
        settings: Settings,
        msettings: MonitorSettings | None = None,
        client: redis.Redis | None = None,
        producer: Producer | None = None,
        base_dir: Path | None = None,
    ):
        self.settings = settings
        self.msettings = msettings or MonitorSettings()
        self.client = client or redis.Redis.from_url(
            settings.redis.redis_url.get_secret_value(), **settings.redis.client_kwargs()
        )
        self.producer = producer or Producer(
            settings.kafka.client_config(**{"enable.idempotence": True, "linger.ms": 5})
        )
        self.base_dir = base_dir
        self.pipelines: dict[str, _Watched] = {}
        self.by_topic: dict[str, str] = {}
        self.assays_topic = settings.kafka.topic("assays")
        self.notifications_topic = settings.kafka.topic("notifications")
        # Specs that could not be started because Redis or Kafka was unreachable:
        # name -> (spec, failed attempts, monotonic time of the next attempt)
        self.waiting: dict[str, tuple[Mapping[str, Any], int, float]] = {}
        # Pipelines whose spec, baseline or detector raised: skipped (their offsets still
        # committed) until a new spec version is deployed. Their results topics stay in
        # ``by_topic`` so that the agent keeps reading and committing past them.
        self.quarantined: dict[str, Quarantine] = {}
        self.canonicals: dict[str, Mapping[str, Any]] = {}

    # -- pipelines

    def apply_spec(self, name: str, canonical: Mapping[str, Any] | None) -> None:
        """Start, replace or (``None``) stop monitoring a pipeline."""
        old = self.pipelines.pop(name, None)
        if old is not None:
            self.by_topic.pop(old.results, None)
        if self.quarantined.pop(name, None) is not None:
            self.by_topic.pop(self.settings.kafka.topic(name, "results"), None)
            QUARANTINED.labels(name).set(0)
        self.canonicals.pop(name, None)
        attempts = self.waiting.pop(name, (None, 0, 0.0))[1]
        if canonical is None:
            log.info("pipeline %s undeployed", name)
            return
        self.canonicals[name] = canonical
        try:
            try:
                engine, _spec = build_engine(
                    self.settings, canonical, self.client, base_dir=self.base_dir
                )
            except Exception as exc:
                if infrastructure(exc):
                    raise
                self.quarantine(name, exc, _version_of(canonical))
                return
        except Exception as exc:
            cause = transient(exc)
            if cause is None:
                raise
            # Redis starting after the monitor (compose, a failover) must not drop the spec.
            self.waiting[name] = (
                canonical,
                attempts + 1,
                time.monotonic() + min(5.0, 0.25 * 2**attempts),
            )
            if attempts % 20 == 0:
                log.warning("pipeline %s: %s unreachable (%s); trying again", name, cause, exc)
            return
        if attempts:
            log.warning("pipeline %s: started after %d failed attempts", name, attempts)
        self.watch(engine)

    def retry_waiting(self) -> None:
        """Try again to start the pipelines that met Redis or Kafka unreachable."""
        now = time.monotonic()
        for name, (canonical, _attempts, due) in list(self.waiting.items()):
            if due <= now:
                self.apply_spec(name, canonical)

    def watch(self, engine: PipelineEngine) -> None:
        """Monitor the results topic of ``engine``'s pipeline with that engine."""
        from driftline.streams.control import ensure_topics

        name = engine.name
        k = self.settings.kafka
        intervals = [a.interval_ms for a in engine.alerts] + [y.interval_ms for y in engine.assays]
        idle = self.msettings.monitor_idle_close_ms or (min(intervals) if intervals else 1000)
        w = _Watched(
            engine,
            k.topic(name, "results"),
            k.topic(name, "late"),
            k.topic(name, "deadletter"),
            idle,
        )
        ensure_topics(k, [w.late, w.deadletter], partitions=k.partitions)
        self.pipelines[name] = w
        self.by_topic[w.results] = name
        log.info("monitoring pipeline %s (%s)", name, engine.spec_version)

    @property
    def topics(self) -> list[str]:
        return sorted(self.by_topic)

    # -- batches

    def handle(self, topic: str, records: Sequence[tuple[int, int, bytes]]) -> ClosedWindows | None:
        """Apply one micro-batch of ``(partition, offset, value)`` records of a results topic.

        A quarantined pipeline's batch is skipped (the caller commits it all the same); an
        error of the pipeline itself quarantines it (see :meth:`quarantine`); Redis or Kafka
        failing raises, for the caller to wait and try again.
        """
        name = self.by_topic.get(topic)
        if name is None or not records or name in self.quarantined:
            return None
        try:
            return self._handle(name, topic, records)
        except Exception as exc:
            if infrastructure(exc):
                raise
            self.quarantine(name, exc)
            return None

    def quarantine(self, name: str, exc: BaseException, version: str | None = None) -> None:
        """Stop monitoring one pipeline after an error of its own, and say so everywhere.

        Publishes an ``error`` assay result (``detail`` names pipeline, assay and cause) and a
        ``kind="error"`` notification to every target the spec declares, counts the error,
        sets the quarantine gauge and logs one line. The pipeline's results are skipped
        (and committed) until a new spec version is deployed. Raises only when publishing
        fails (Redis or Kafka), so that the caller tries again.
        """
        w = self.pipelines.get(name)
        version = version or (w.engine.spec_version if w is not None else "unknown")
        assay = exc.assay if isinstance(exc, AssayFailed) else None
        root = exc.cause if isinstance(exc, AssayFailed) else exc
        cause = f"{type(root).__name__}: {str(root)[:500]}"
        where = f"pipeline {name!r}" + (f", assay {assay!r}" if assay else "")
        detail = (
            f"{where} (spec {version}) is not monitored: {cause}; "
            "fix the spec and deploy it again to resume"
        )
        now = int(time.time() * 1000)
        event = AssayResult(
            pipeline=name,
            assay=assay or "",
            iopath="",
            window_start=now,
            window_end=now,
            count=0,
            metric="",
            score=float("nan"),
            p_value=None,
            status="error",
            thresholds={},
            edges=[],
            baseline_densities=[],
            window_densities=[],
            spec=version,
            detail=detail,
        )
        note = Notification(
            # one id per spec version and assay: a restart meeting the error again is de-duplicated
            id=notification_id(name, f"error:{assay or ''}", 0, version),
            alert=assay or "pipeline",
            pipeline=name,
            state="firing",
            value=float("nan"),
            condition=detail,
            window={"start": now, "end": now},
            at=now,
            severity="critical",
            notify=_targets(self.canonicals.get(name)),
            spec=version,
            kind="error",
            details={"assay": assay, "cause": cause, "detail": detail},
        )
        self.emit([event], [note])
        if w is not None:
            self.pipelines.pop(name, None)
        self.by_topic[self.settings.kafka.topic(name, "results")] = name
        self.quarantined[name] = Quarantine(version, assay, cause)
        PIPELINE_ERRORS.labels(name).inc()
        QUARANTINED.labels(name).set(1)
        log.error("%s", detail)
        log.debug("pipeline %s: the error that quarantined it", name, exc_info=exc)

    def _handle(
        self, name: str, topic: str, records: Sequence[tuple[int, int, bytes]]
    ) -> ClosedWindows | None:
        w = self.pipelines[name]
        batch = Batch.of(topic, records)
        firsts = batch.first_offsets()
        # No state for a partition we already consumed from: Redis was emptied while we were
        # away (or the pipeline is new and the topic starts later); rebuild its open windows.
        missing = {
            p: o for p, o in firsts.items() if f"{topic}:{p}" not in w.engine.offsets and o > 0
        }
        if missing:
            self.rebuild(w, missing, reset=False)

        def set_aside(rep: IngestReport) -> None:
            self._set_aside(w, topic, rep)

        bounds = self.time_bounds()
        try:
            rep = w.engine.ingest(batch, set_aside, bounds)
        except StateLost:
            self.rebuild_lost(w, firsts)
            rep = w.engine.ingest(batch, set_aside, bounds)
        w.last_event_wall = time.monotonic()
        EVENTS.labels(name).inc(len(batch))
        BATCHES.labels(name).inc()
        if rep.late:
            LATE.labels(name).inc(len(rep.late))
        for _p, _off, _value, reason in rep.dead:
            DEAD.labels(name, reason).inc()
        return self.close(name)

    def _set_aside(self, w: _Watched, topic: str, rep: IngestReport) -> None:
        """Publish late events to ``<p>.late`` and malformed ones to ``<p>.deadletter``.

        Waits for delivery: the engine applies the batch to Redis only afterwards.
        """
        errors: list[str] = []

        def on_delivery(err: Any, _msg: Any) -> None:
            if err is not None:
                errors.append(str(err))

        for p, off, value in rep.late:
            self.producer.produce(
                w.late,
                value,
                headers={"driftline-source": f"{topic}/{p}/{off}"},
                on_delivery=on_delivery,
            )
        for p, off, value, reason in rep.dead:
            self.producer.produce(
                w.deadletter,
                value,
                headers={
                    "driftline-error": reason,
                    "driftline-detail": "result event could not be read by the monitor",
                    "driftline-source": f"{topic}/{p}/{off}",
                },
                on_delivery=on_delivery,
            )
        left = self.producer.flush(30)
        if left or errors:
            raise KafkaException(f"could not set events aside: {errors or left}")

    def rebuild_lost(self, w: _Watched, firsts: Mapping[int, int] | None = None) -> int:
        """Redis lost what the engine applied: emptied, or restarted from an older snapshot.

        Replays the partitions of a batch in hand (``firsts``: its first offset per partition)
        up to that batch, and every other partition up to the last offset the engine knew
        applied, so that none keeps a hole (the offset guard skips what Redis still holds).
        """
        stop: dict[int, int] = {}
        for f, off in w.engine.offsets.items():
            topic, partition = split_field(f)
            if topic == w.results:
                stop[partition] = off + 1
        stop.update(firsts or {})
        return self.rebuild(w, stop, reset=True)

    def close(self, name: str, floor: int | None = None) -> ClosedWindows:
        w = self.pipelines[name]
        try:
            closed = w.engine.close(floor)
        except StateLost:
            self.rebuild_lost(w)
            closed = w.engine.close(floor)
        if closed.assays or closed.notifications:
            self.emit(closed.assays, closed.notifications)
        w.engine.commit(closed)
        for n in closed.notifications:
            if n.kind == "alert":
                ALERT_STATE.labels(name, n.alert).set(1.0 if n.state == "firing" else 0.0)
        mx = max(w.engine.max_times.values(), default=None)
        if mx is not None and closed.watermark is not None:
            WATERMARK_LAG.labels(name).set(max(0, mx - closed.watermark) / 1000.0)
        return closed

    def emit(self, assays: Sequence[AssayResult], notes: Sequence[Notification]) -> None:
        """Publish, then wait for delivery: windows are marked emitted only afterwards."""
        errors: list[str] = []

        def on_delivery(err: Any, _msg: Any) -> None:
            if err is not None:
                errors.append(str(err))

        # Records are stamped with event time (a window's end, a transition's time), so audit
        # finds a range of event time with offsets_for_times even when event time and wall
        # clock differ (backfills, replays of old traffic, simulated clocks). Kafka refuses
        # timestamps far ahead of its clock, so those fall back to the produce time.
        latest = int(time.time() * 1000) + 50 * 60_000
        for a in assays:
            self.producer.produce(
                self.assays_topic,
                encode(a),
                a.key,
                on_delivery=on_delivery,
                timestamp=a.window_end if 0 < a.window_end <= latest else 0,
            )
        for n in notes:
            self.producer.produce(
                self.notifications_topic,
                encode(n),
                n.key,
                on_delivery=on_delivery,
                headers={"driftline-notification-id": n.id},
                timestamp=n.at if 0 < n.at <= latest else 0,
            )
        left = self.producer.flush(30)
        if left or errors:
            raise KafkaException(f"could not publish monitor output: {errors or left}")

    def tick(self) -> None:
        """Idle close: advance the watermark of pipelines that got nothing for ``idle_close``.

        "Nothing" means no event in any partition, including partitions other monitor
        processes own: their progress shows in the per-partition max times in Redis. The
        floor is the pipeline's own latest event time - lateness + the wall time elapsed
        since it arrived (:func:`~driftline.streams.windows.idle_floor`), never the wall
        clock itself: a pipeline that has seen no event closes nothing, and a backfill days
        old closes its windows as its own events and idleness say.
        """
        wall = time.monotonic()
        for name, w in list(self.pipelines.items()):
            if (wall - w.last_event_wall) * 1000 < w.idle_close_ms:
                continue
            try:
                progress = w.engine.state.snapshot().max_times
                if progress != w.seen_max:
                    w.seen_max = progress
                    w.last_event_wall = wall
                    continue
                idle_ms = int((wall - w.last_event_wall) * 1000)
                floor = idle_floor(progress, w.engine.lateness_ms, idle_ms)
                if floor is not None:
                    self.close(name, floor=floor)
            except Exception as exc:
                if infrastructure(exc):
                    raise
                self.quarantine(name, exc)

    def time_bounds(self) -> tuple[int, int]:
        """Event times the monitor accepts now: ``[now - max_age, now + max_skew]``."""
        now = int(time.time() * 1000)
        ms = self.msettings
        return now - ms.monitor_max_event_age_ms, now + ms.monitor_max_event_skew_ms

    # -- recovery

    def lookback_ms(self, engine: PipelineEngine) -> int:
        return self.msettings.monitor_rebuild_lookback_ms or (
            engine.longest_ms + engine.lateness_ms + 60_000
        )

    def rebuild(self, w: _Watched, stop: Mapping[int, int], reset: bool = True) -> int:
        """Replay ``[now - lookback, stop)`` of the given partitions into the Redis state.

        ``reset`` forgets what the engine remembers of the lost offsets and watermarks first
        (it keeps what it emitted). Windows the engine emitted are not emitted again; when
        the lookback did not reach the start of the log, windows that could miss older events
        (ending before the oldest replayed event + the longest window) are never emitted.
        """
        REBUILDS.labels(w.engine.name).inc()
        engine = w.engine
        if reset:
            engine.offsets = {}
            engine.max_times = {}
            engine.floor = None
            engine.first = None
        since = int(time.time() * 1000) - self.lookback_ms(engine)
        start = offsets_for_time(self.settings, w.results, stop.keys(), since)
        low = start_offsets(self.settings, w.results, stop.keys())
        complete = all(start[p] <= low[p] for p in stop)
        log.warning(
            "pipeline %s: Redis lacks state this monitor needs before offsets %s (emptied, "
            "restarted from an older snapshot, or never written); rebuilding from offsets %s",
            engine.name,
            dict(stop),
            start,
        )

        bounds = self.time_bounds()

        def on_batch(b: Batch) -> None:
            engine.ingest(b, bounds=bounds)

        n = read_range(self.settings, w.results, start, stop, on_batch)
        horizon = None
        if not complete and engine.first is not None:
            horizon = engine.first + engine.longest_ms
        engine.restore_marks(horizon)
        return n

    def close_all(self) -> None:
        self.producer.flush(10)
        self.client.close()


# ---------------------------------------------------------------------------- faust


def _faust_classes(fetch_wait_ms: int) -> Any:
    import faust
    from aiokafka.errors import IllegalStateError
    from faust.transport.drivers import aiokafka as fa

    class ConsumerThread(fa.AIOKafkaConsumerThread):
        def _create_worker_consumer(self, transport: Any) -> Any:
            consumer = super()._create_worker_consumer(transport)
            # Set before start(): aiokafka builds its fetcher from these in start().
            consumer._isolation_level = "read_committed"
            consumer._fetch_max_wait_ms = fetch_wait_ms
            return consumer

    class ReadCommittedConsumer(fa.Consumer):
        #: Set by the app: receives each fetch whole instead of one faust event per record.
        batch_sink: Callable[[FetchBatch], Awaitable[None]] | None = None

        def _new_consumer_thread(self) -> Any:
            return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

        async def _drain_messages(self, fetcher: Any) -> None:
            sink = self.batch_sink
            if sink is None:
                await super()._drain_messages(fetcher)
                return
            # faust's own loop wraps every record in a message, an event and two tasks, which
            # caps any agent near 13k events/s; the monitor only needs (partition, offset,
            # value) per record, so it takes aiokafka's fetch as it comes.
            stopped, fetcher_stopped = self._stopped.is_set, fetcher._stopped.is_set
            inbound = self.app.monitor.stream_inbound_time
            try:
                while not (stopped() or fetcher_stopped()):
                    records, active = await self._wait_next_records(1.0)
                    await asyncio.sleep(0)
                    if not records or self.should_stop:
                        continue
                    batch, rewind = split_fetch(records, active, self.flow_active)
                    if rewind:
                        await self._rewind(rewind)
                    now = time.monotonic()
                    for tp in batch.next_offsets:
                        inbound[tp] = now
                    if batch.next_offsets:
                        await sink(batch)
            except self.consumer_stopped_errors:
                if self.transport.app.should_stop:
                    return
                raise
            except asyncio.CancelledError:
                if self.transport.app.should_stop:
                    return
                raise

        async def _rewind(self, first_offsets: Mapping[Any, int]) -> None:
            # The fetch moved these partitions' positions past records nobody applied; later
            # batches would be applied and committed beyond them, losing them for good. faust's
            # own loop seeks to the committed offsets here, which leaves a partition without
            # any (a pipeline's new topic) past them.
            for tp, offset in first_offsets.items():
                try:
                    await self.seek(tp, offset)
                except IllegalStateError:
                    continue  # revoked: its next owner starts from the committed offset
                log.info("reading %s[%d] again from offset %d", tp.topic, tp.partition, offset)

        async def commit_processed(self, offsets: Mapping[Any, int]) -> None:
            """Commit offsets the batch agent has applied (revoked partitions are skipped)."""
            if offsets and not await self.maybe_wait_for_commit_to_finish():
                await self._commit_offsets(offsets)

    class ReadCommittedTransport(fa.Transport):
        Consumer = ReadCommittedConsumer

    class App(faust.App):
        Transport = ReadCommittedTransport

        def _new_transport(self) -> Any:
            return self.Transport(self.conf.broker_consumer, self)

    return App


@dataclass
class FetchBatch:
    """One fetch of the results topics: rows per topic and the next offset per partition."""

    rows: dict[str, list[tuple[int, int, bytes]]] = field(default_factory=dict)
    next_offsets: dict[Any, int] = field(default_factory=dict)


def split_fetch(
    records: Mapping[Any, Sequence[Any]], active: set[Any] | None, flow_active: bool
) -> tuple[FetchBatch, dict[Any, int]]:
    """Split one fetch into the batch the agent applies and the partitions to read again.

    ``records`` maps each partition to its fetched records (``partition``, ``offset`` and
    ``value`` each). While the flow is stopped (a rebalance is under way), or for a partition
    outside ``active``, nothing is applied: the second value maps such a partition to the
    offset of its first record, where the consumer must seek back.

    >>> from types import SimpleNamespace as R
    >>> from faust.types import TP
    >>> t0, t1 = TP("t", 0), TP("t", 1)
    >>> recs = {t0: [R(partition=0, offset=5, value=b"a"), R(partition=0, offset=6, value=b"b")],
    ...         t1: [R(partition=1, offset=9, value=b"c")]}
    >>> batch, rewind = split_fetch(recs, {t0}, flow_active=True)
    >>> batch.rows, batch.next_offsets[t0], rewind[t1]
    ({'t': [(0, 5, b'a'), (0, 6, b'b')]}, 7, 9)
    >>> sorted(split_fetch(recs, None, flow_active=False)[1].values())
    [5, 9]
    """
    batch = FetchBatch()
    rewind: dict[Any, int] = {}
    for tp, recs in records.items():
        if not recs:
            continue
        if not flow_active or (active is not None and tp not in active):
            rewind[tp] = recs[0].offset
            continue
        batch.rows.setdefault(tp.topic, []).extend([(r.partition, r.offset, r.value) for r in recs])
        batch.next_offsets[tp] = recs[-1].offset + 1
    return batch, rewind


def create_app(monitor: Monitor, follower: Any | None = None) -> Any:
    """The faust app: one agent over all results topics, one timer for control and idle close."""
    ms = monitor.msettings
    k = monitor.settings.kafka
    App = _faust_classes(ms.monitor_fetch_wait_ms)
    # faust insists on a data directory even without tables; keep one per group, reused.
    datadir = ms.monitor_datadir or Path(tempfile.gettempdir()) / f"driftline-{ms.monitor_group}"
    app = App(
        ms.monitor_group,
        broker=[f"kafka://{h}" for h in k.bootstrap_servers.split(",")],
        value_serializer="raw",
        key_serializer="raw",
        web_enabled=False,
        datadir=str(datadir),
        topic_allow_declare=False,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        broker_commit_every=1000,
        broker_commit_interval=1.0,
        stream_buffer_maxsize=max(4096, ms.monitor_batch_size * 2),
        broker_max_poll_records=ms.monitor_batch_size,
        broker_session_timeout=10.0,
        broker_heartbeat_interval=1.0,
        producer_acks=-1,
    )
    control_topic = k.topic("pipelines")
    from driftline.streams.control import ensure_topics

    # faust needs a non-empty subscription; the control topic always exists.
    ensure_topics(k, [control_topic], partitions=1, compacted=True)
    results = app.topic(
        control_topic, *monitor.topics, value_serializer="raw", key_serializer="raw"
    )
    # faust waits 45 s before acting on a subscription change; pipelines come and go rarely,
    # and a new pipeline should be watched at once.
    app.topics._resubscribe_sleep_lock_seconds = 0.5
    follower_ref: dict[str, Any] = {"f": follower}

    def sync_topics() -> None:
        wanted = [control_topic, *monitor.topics]
        changed = False
        # Change the topic list of every channel that follows the control topic.
        for channel in [results, *app.topics]:
            topics = list(getattr(channel, "topics", ()) or ())
            if control_topic in topics and topics != wanted:
                channel.topics = wanted
                changed = True
        if changed:
            app.topics._flag_changes()

    # The results topics are read by the consumer's batch drain (see ``_faust_classes``): the
    # agent receives one event per fetch, never one per record.
    async def until_done(work: Callable[[], object]) -> None:
        """Run ``work`` until it succeeds, waiting out Redis or Kafka being unreachable.

        The batch in hand is neither skipped nor committed meanwhile; the consumer keeps its
        group membership (this awaits), and the offset guard makes a half-done attempt safe
        to repeat.
        """
        delay, failures = 0.1, 0
        while True:
            try:
                work()
            except Exception as exc:
                cause = transient(exc)
                if cause is None:
                    raise
                failures += 1
                RETRIES.labels(cause).inc()
                STALLED.set(1)
                if failures == 1 or failures % 20 == 0:
                    log.warning(
                        "%s unreachable (%s); retrying the batch (attempt %d)",
                        cause,
                        exc,
                        failures + 1,
                    )
                await asyncio.sleep(delay)
                delay = min(2 * delay, 5.0)
                continue
            if failures:
                log.warning("going on after %d failed attempts", failures)
                STALLED.set(0)
            return

    fetches = app.channel(maxsize=4)
    pending: dict[Any, int] = {}
    committed_at = [time.monotonic()]

    async def to_agent(batch: FetchBatch) -> None:
        await fetches.send(value=batch)

    app.consumer.batch_sink = to_agent
    app.topics.add(results)  # subscribed by the conductor, drained by the batch drain

    @app.agent(fetches)
    async def consume(stream: Any) -> None:
        async for batch in stream:
            for topic, rows in batch.rows.items():
                if topic == control_topic:
                    continue
                for i in range(0, len(rows), ms.monitor_batch_size):
                    chunk = rows[i : i + ms.monitor_batch_size]
                    try:
                        await until_done(functools.partial(monitor.handle, topic, chunk))
                    except Exception:
                        # faust would restart the agent with the next batch and this one
                        # would be lost; a new process re-reads it (nothing past it is
                        # committed) and the offset guard keeps what was applied.
                        _exit_on_bug(f"a batch of {topic}")
            # A topic no engine watches (its spec waits for Redis, or was just replaced)
            # keeps its committed offsets, so its records are read again once it is watched.
            pending.update(
                {tp: o for tp, o in batch.next_offsets.items() if tp.topic in monitor.by_topic}
            )
            await commit_pending()

    async def commit_pending() -> None:
        # Redis holds the exact state (offset guard); the group's committed offsets only say
        # where to resume (and what lag operators see), so once a second is enough.
        if pending and time.monotonic() - committed_at[0] >= 1.0:
            offsets = dict(pending)
            pending.clear()
            committed_at[0] = time.monotonic()
            await app.consumer.commit_processed(offsets)

    @app.task
    async def settle_heap() -> None:
        # What is alive once the app runs (modules, faust, the engines) lives as long as the
        # process. Unfrozen, every full collection walks it again, and the per-event objects of
        # each batch trigger many: in bench/monitor.py this alone took (b) from 84k to 135k
        # events/s.
        gc.freeze()

    deferred = [False]

    def follow_and_close() -> None:
        f = follower_ref["f"]
        if f is None:
            from driftline.streams.control import Follower

            f = follower_ref["f"] = Follower(k)
            for name, canonical in sorted(f.snapshot().items()):
                monitor.apply_spec(name, canonical)
        else:
            for name, canonical in f.poll(0):
                monitor.apply_spec(name, canonical)
        monitor.retry_waiting()
        sync_topics()
        monitor.tick()

    @app.timer(interval=0.25)
    async def housekeeping() -> None:
        try:
            follow_and_close()
            deferred[0] = False
        except Exception as exc:  # the next tick tries again
            if transient(exc) is None:
                _exit_on_bug("housekeeping (following specs, idle close)")
            if not deferred[0]:
                log.warning("housekeeping deferred until Redis and Kafka answer: %s", exc)
            deferred[0] = True
        await commit_pending()

    return app


def _exit_on_bug(where: str) -> NoReturn:
    """End the process on an unexpected error (called from an ``except`` block).

    faust would restart a crashed agent or timer and carry on without what failed; a restart
    of the whole process reads again from the last committed offsets instead.
    """
    log.critical(
        "unexpected error in %s; exiting so that a restart does it again", where, exc_info=True
    )
    logging.shutdown()
    os._exit(EXIT_BATCH_FAILED)


def check_redis(client: redis.Redis) -> None:
    """At start: a wrong password or ACL stops the monitor; Redis down only delays pipelines.

    Raises :class:`~driftline.errors.ServiceError` (``driftline monitor`` exits with 3).
    """
    try:
        client.ping()
    except (
        redis.AuthenticationError,
        redis.exceptions.AuthorizationError,
        redis.ResponseError,
    ) as exc:
        raise ServiceError(
            f"Redis refused the monitor: {str(exc).rstrip('.')}; check DRIFTLINE_REDIS_URL"
        ) from None
    except redis.RedisError as exc:
        log.warning("Redis unreachable at start (%s); pipelines start once it answers", exc)


def run_monitor(
    settings: Settings, msettings: MonitorSettings | None = None, metrics_port: int | None = None
) -> None:
    """Run the monitor until interrupted (the ``driftline monitor`` command)."""
    import faust

    from driftline.metrics import start_metrics_server

    ms = msettings or MonitorSettings()
    port = metrics_port if metrics_port is not None else ms.monitor_metrics_port
    if port is not None:
        start_metrics_server(port)
    monitor = Monitor(settings, ms)
    check_redis(monitor.client)
    app = create_app(monitor)
    worker = faust.Worker(app, loglevel=settings.log_level.lower())
    try:
        worker.execute_from_commandline()
    finally:
        monitor.close_all()
