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
    consumer subclass hands each aiokafka fetch (up to ``monitor_batch_size`` records) to one
    task through a plain queue instead (not a faust channel: faust empties those when it
    resumes the flow after a rebalance, which dropped a fetch read in that window); the task
    applies it and commits the group's offsets once a second. Committed offsets only say
    where to resume: the Redis offset guard makes a batch seen twice change nothing.

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

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from confluent_kafka import KafkaError, KafkaException, Producer
from prometheus_client import Counter, Gauge

from driftline.compile import plans_from_spec
from driftline.config import MonitorSettings, Settings
from driftline.events import AssayResult, Notification, encode, notification_id
from driftline.kafka.deadletter import dead_letter
from driftline.kafka.offsets import (
    offsets_for_time,
    start_offsets,
)
from driftline.streams._batch import Record
from driftline.streams._build import build_engine, read_range, version_of
from driftline.streams._engine import (
    AssayFailed,
    Batch,
    ClosedWindows,
    IngestReport,
    PipelineEngine,
    StateLost,
)
from driftline.streams._monitor_outcomes import Outcomes
from driftline.streams.state import split_field
from driftline.streams.windows import idle_floor

__all__ = [
    "Monitor",
    "build_engine",
    "plans_from_spec",
    "read_range",
]

log = logging.getLogger("driftline.monitor")

EVENTS = Counter("driftline_monitor_events", "Result events consumed", ["pipeline"])
BATCHES = Counter("driftline_monitor_batches", "Micro-batches applied", ["pipeline"])
LATE = Counter(
    "driftline_monitor_late_events", "Events later than the allowed lateness", ["pipeline"]
)
DEAD = Counter("driftline_monitor_dead_letters", "Malformed result events", ["pipeline", "reason"])
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


def _h(headers: Sequence[tuple[str, bytes]]) -> list[tuple[str, str | bytes | None]]:
    return list(headers)


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
        # Label feedback joined to predictions, for pipelines that declare performance.
        self.outcomes = Outcomes(settings, self.client, self.producer)

    # -- pipelines

    def apply_spec(self, name: str, canonical: Mapping[str, Any] | None) -> None:
        """Start, replace or (``None``) stop monitoring a pipeline."""
        old = self.pipelines.pop(name, None)
        if old is not None:
            self.by_topic.pop(old.results, None)
        self.by_topic.pop(self.settings.kafka.topic(name, "feedback"), None)
        self.outcomes.stop(name)
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
                self.quarantine(name, exc, version_of(canonical))
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
        self.outcomes.start(name, _spec, engine.partitions)
        self.by_topic.update(self.outcomes.topics())

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

    def handle(self, topic: str, records: Sequence[Record]) -> ClosedWindows | None:
        """Apply one micro-batch of ``(partition, offset, value)`` records of a results topic.

        A quarantined pipeline's batch is skipped (the caller commits it all the same); an
        error of the pipeline itself quarantines it (see :meth:`quarantine`); Redis or Kafka
        failing raises, for the caller to wait and try again.
        """
        name = self.by_topic.get(topic)
        if name is None or not records or name in self.quarantined:
            return None
        try:
            self.outcomes.handle(name, topic, records)
            w = self.pipelines.get(name)
            if w is None or topic != w.results:
                return None  # feedback: joined above, no windows of its own
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
        self.outcomes.stop(name)  # its feedback topic stays in by_topic: read and committed
        self.by_topic[self.settings.kafka.topic(name, "results")] = name
        self.quarantined[name] = Quarantine(version, assay, cause)
        PIPELINE_ERRORS.labels(name).inc()
        QUARANTINED.labels(name).set(1)
        log.error("%s", detail)
        log.debug("pipeline %s: the error that quarantined it", name, exc_info=exc)

    def _handle(self, name: str, topic: str, records: Sequence[Record]) -> ClosedWindows | None:
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
            late = dead_letter(
                value, reason="late", detail="later than the allowed lateness", topic=topic,
                partition=p, offset=off,
            )  # fmt: skip
            self.producer.produce(
                w.late, late.value, headers=_h(late.headers), on_delivery=on_delivery
            )
        for p, off, value, reason in rep.dead:
            dl = dead_letter(
                value, reason=reason, detail="result event could not be read by the monitor",
                topic=topic, partition=p, offset=off,
            )  # fmt: skip
            self.producer.produce(
                w.deadletter, dl.value, headers=_h(dl.headers), on_delivery=on_delivery
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
        for name in list(self.outcomes.pipelines):
            try:
                self.outcomes.tick(name)
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
