"""The inference worker: requests in, one result event per row out, exactly once.

One confluent-kafka consumer reads the ``<p>.requests`` topic of every deployed pipeline in
micro-batches; :func:`~driftline.streams._worker_core.process_batch` serves each pipeline's
share of a batch with the pipeline version current when the batch arrived; results, dead
letters and the consumer offsets are committed in one Kafka transaction per micro-batch
(DESIGN §6). Readers use ``isolation.level=read_committed`` and never see a partial batch.

Failure handling, per batch:

* an abortable error aborts the transaction and rewinds every partition of the batch to its
  first offset, so the batch is served again;
* a fatal error (the producer was fenced) recreates the producer, then rewinds;
* the offsets and commit of batch N run on a committer thread while batch N+1 is decoded and
  scored; N+1 is produced only once N committed, and if N failed, N+1 is dropped and both are
  rewound;
* before partitions are revoked (a rebalance), the commit in flight is finished first;
* a commit stuck in sending the offsets is given up after ``_OFFSETS_STALL_S``: librdkafka's
  ``send_offsets_to_transaction`` can ignore its timeout and wait forever when the group
  coordinator's broker went away and came back (a broker restart; librdkafka issues #5456,
  #5511). The commit had not started, so nothing of the batch is committed: the stuck producer
  is left behind, a new one with the same ``transactional.id`` fences it (its transaction is
  aborted), and both batches are rewound.

``guarantee="at-least-once"`` uses an idempotent, non-transactional producer and commits offsets
after the batch's results are acknowledged: lower latency, but a crash can duplicate results.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
import operator
import queue
import re
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any, Protocol

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource
from prometheus_client import Counter, Histogram

from driftline.config import KafkaSettings, WorkerSettings
from driftline.errors import DriftlineError, ServiceError
from driftline.kafka.deadletter import (
    PRODUCER_MAX_BYTES,
    RECORD_OVERHEAD_BYTES,
    dead_letter,
    record_size,
)
from driftline.streams._worker_core import (
    BatchOutcome,
    PipelineRuntime,
    RuntimeModel,
    process_batch,
)
from driftline.streams.codec import (
    PIPELINE_ERROR,
    PRODUCE_FAILED,
    RESULT_TOO_LARGE,
    UNDEPLOYED_PIPELINE,
    Rejection,
)

__all__ = [
    "PipelineRuntime",
    "RuntimeModel",
    "RuntimeSource",
    "StaticSource",
    "Worker",
    "WorkerStats",
    "run_worker",
]

log = logging.getLogger("driftline.worker")

REQUESTS = Counter("driftline_worker_requests", "Request messages consumed.", ["pipeline"])
ROWS = Counter("driftline_worker_rows", "Rows served (one result event each).", ["pipeline"])
BATCH_SIZE = Histogram(
    "driftline_worker_batch_messages",
    "Messages per micro-batch.",
    buckets=(1, 4, 16, 64, 256, 1024, 4096, 16384),
)
INFERENCE = Histogram(
    "driftline_worker_inference_seconds",
    "Time to run all models of a pipeline on one micro-batch.",
    ["pipeline"],
    buckets=(0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0),
)
BATCH_LATENCY = Histogram(
    "driftline_worker_batch_seconds",
    "Time from a micro-batch's arrival to its commit.",
    buckets=(0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0),
)
CHECK_FAILURES = Counter(
    "driftline_worker_check_failures", "Rows failing a validation.", ["pipeline", "validation"]
)
DEAD_LETTERS = Counter(
    "driftline_worker_dead_letters",
    "Messages sent to the dead-letter topic.",
    ["pipeline", "reason"],
)
SPLITS = Counter(
    "driftline_worker_transaction_splits",
    "Micro-batches served in smaller transactions after one failed for a permanent reason.",
)
ABORTS = Counter(
    "driftline_worker_transaction_aborts",
    "Micro-batches whose transaction was aborted (and served again).",
    ["kind"],
)


class RuntimeSource(Protocol):
    """Where the worker learns which pipelines are deployed, in which version."""

    def snapshot(self) -> dict[str, PipelineRuntime]:
        """Every deployed pipeline now."""
        ...

    def poll(self) -> list[tuple[str, PipelineRuntime | None]]:
        """Changes since the last call, without blocking; ``None`` means undeployed."""
        ...

    def close(self) -> None: ...


class StaticSource:
    """A source fed by the caller (tests, embedding): ``set()`` deploys, ``set(name, None)``
    undeploys. Thread-safe, so a test can change versions while the worker runs."""

    def __init__(self, runtimes: Iterable[PipelineRuntime] = ()):
        self._initial = {r.name: r for r in runtimes}
        self._changes: queue.SimpleQueue[tuple[str, PipelineRuntime | None]] = queue.SimpleQueue()

    def set(self, name: str, runtime: PipelineRuntime | None) -> None:
        self._changes.put((name, runtime))

    def snapshot(self) -> dict[str, PipelineRuntime]:
        return dict(self._initial)

    def poll(self) -> list[tuple[str, PipelineRuntime | None]]:
        out = []
        while True:
            try:
                out.append(self._changes.get_nowait())
            except queue.Empty:
                return out

    def close(self) -> None:
        pass


@dataclass
class WorkerStats:
    """Counts since start, for tests and the CLI's exit summary."""

    batches: int = 0
    messages: int = 0
    rows: int = 0
    dead_letters: int = 0
    aborts: int = 0
    producer_restarts: int = 0
    dead_letter_reasons: dict[str, int] = field(default_factory=lambda: defaultdict(int))


_TXN_TIMEOUT_S = 30.0
#: How long sending a batch's offsets may take before the producer is deemed stuck in librdkafka
#: (the call's own timeout is _TXN_TIMEOUT_S, but it is not always honoured).
_OFFSETS_STALL_S = _TXN_TIMEOUT_S + 10.0
_MAX_FUTURE_MS = 30 * 60 * 1000
#: Room left in a record's size budget for its key and trace headers before a batch's results
#: are measured one by one.
_KEY_AND_TRACE_BYTES = 4096
#: The dead letter of a message whose own dead letter did not fit keeps this much of it.
_LAST_RESORT_BYTES = 65_536

#: Kafka errors a transaction fails with that a retry of the same records cannot change.
_PERMANENT_ERRORS = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.INVALID_MSG_SIZE,
        KafkaError.INVALID_RECORD,
        KafkaError.INVALID_TIMESTAMP,
        KafkaError._BAD_MSG,
        KafkaError._INVALID_ARG,
    }
)


def _permanent(exc: KafkaException) -> bool:
    """Whether a failed transaction would fail again with the same records."""
    err = exc.args[0] if exc.args else None
    return isinstance(err, KafkaError) and not err.fatal() and err.code() in _PERMANENT_ERRORS


@dataclass
class _Batch:
    """One micro-batch between its scoring and its commit."""

    outputs: list[tuple[str, str, list[Message], BatchOutcome | None]]
    offsets: list[TopicPartition]
    groups: list[list[Message]]
    received_ns: int
    messages: int


@dataclass
class _CommitState:
    """Where the committer is with one batch: a stuck call may be given up on only while the
    transaction cannot have been committed, i.e. before ``commit_transaction`` starts."""

    started: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)
    committing: bool = False
    abandoned: bool = False


class _Committer:
    """Runs commits in order on one daemon thread.

    Not a ``ThreadPoolExecutor``: its threads are joined at interpreter exit, so a thread stuck
    for good inside librdkafka would keep a stopped worker from ever exiting.
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]] | None] = (
            queue.SimpleQueue()
        )
        self._thread: threading.Thread | None = None

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="driftline-commit", daemon=True)
            self._thread.start()
        future: Future[Any] = Future()
        self._jobs.put((future, functools.partial(fn, *args)))
        return future

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            future, fn = job
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn())
                except BaseException as exc:
                    future.set_exception(exc)

    def shutdown(self, wait: bool = True) -> None:
        self._jobs.put(None)
        if wait and self._thread is not None:
            self._thread.join()


class _Lazy(Sequence[Any]):
    """Per-message defaults computed only for the messages that need them."""

    def __init__(self, msgs: list[Message], fn: Callable[[Message], Any]):
        self._msgs = msgs
        self._fn = fn

    def __len__(self) -> int:
        return len(self._msgs)

    def __getitem__(self, i: Any) -> Any:
        return self._fn(self._msgs[i])


class Worker:
    """Serve the requests of deployed pipelines.

    Parameters
    ----------
    kafka:
        Connection and topic prefix.
    settings:
        Batching, guarantee, identity (``worker_id`` → ``transactional.id``) and limits.
    source:
        The deployed pipelines (:class:`StaticSource`, or the control-plane follower).
    pipelines:
        Serve only these pipelines' request topics; ``None`` serves every
        ``<prefix>.<name>.requests`` topic, dead-lettering requests of undeployed pipelines.
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        settings: WorkerSettings,
        source: RuntimeSource,
        pipelines: Sequence[str] | None = None,
    ):
        self.kafka = kafka
        self.settings = settings
        self.source = source
        # Named twice is named once (a repeated topic makes the subscription invalid).
        self.pipelines = list(dict.fromkeys(pipelines)) if pipelines else None
        self.exactly_once = settings.worker_guarantee == "exactly-once"
        self.stats = WorkerStats()
        self._runtimes: dict[str, PipelineRuntime] = {}
        self._known_topics: set[str] = set()
        self._partition_counts: dict[str, int] = {}
        self._limits: dict[str, int] = {}
        self._admin_client: AdminClient | None = None
        self._stop = threading.Event()
        self._prefix = kafka.topic_prefix + "."
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._in_txn = False
        self._pending: tuple[Future[KafkaException | None], _Batch, _CommitState] | None = None
        self._committer = _Committer()

    # ------------------------------------------------------------------ clients
    def _consumer_config(self) -> dict[str, Any]:
        extra: dict[str, Any] = {
            "group.id": self.settings.worker_group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "enable.partition.eof": False,
            # New pipelines' topics are found by the pattern subscription on metadata refresh.
            "topic.metadata.refresh.interval.ms": 5000,
        }
        return self.kafka.client_config(**extra)

    def _producer_config(self) -> dict[str, Any]:
        extra: dict[str, Any] = {
            "linger.ms": 2,
            "queue.buffering.max.messages": 1_000_000,
            "enable.idempotence": True,
        }
        if self.exactly_once:
            extra["transactional.id"] = f"driftline-worker-{self.settings.worker_id}"
            extra["transaction.timeout.ms"] = self.settings.worker_transaction_timeout_ms
        return self.kafka.client_config(**extra)

    def _new_producer(self, wait: bool = False) -> Producer:
        """A producer, transactional when exactly once.

        At start an unreachable cluster is an error (``ServiceError``). A replacement while
        serving (``wait``) waits for the cluster instead, trying again with backoff until
        :meth:`stop`: a broker restart can outlast one ``init_transactions`` timeout.
        """
        producer = Producer(self._producer_config())
        if not self.exactly_once:
            return producer
        delay = 1.0
        while True:
            try:
                # Aborts whatever a killed predecessor with the same id left open, and fences it.
                producer.init_transactions(_TXN_TIMEOUT_S)
                return producer
            except KafkaException as exc:
                err = exc.args[0] if exc.args else None
                retriable = isinstance(err, KafkaError) and (
                    err.retriable() or err.code() == KafkaError._TIMED_OUT
                )
                if not (wait and retriable):
                    raise ServiceError(
                        f"cannot initialise transactions at {self.kafka.bootstrap_servers}: {exc}"
                    ) from exc
                log.warning("initialising transactions failed (%s); trying again", err)
                # stop() during the pause ends the wait now, not after one more 30 s attempt
                if self._stop.wait(delay):
                    raise ServiceError(
                        "stopped while waiting for transactions at "
                        f"{self.kafka.bootstrap_servers}: {exc}"
                    ) from exc
                delay = min(2 * delay, 10.0)

    def _subscribe(self, consumer: Consumer) -> None:
        if self.pipelines:
            topics = [self.kafka.topic(p, "requests") for p in self.pipelines]
        else:
            topics = [f"^{re.escape(self._prefix)}.+\\.requests$"]
        consumer.subscribe(topics, on_revoke=self._on_revoke, on_lost=self._on_revoke)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # A commit may still be in flight: let it finish (or abort and rewind) before the
        # partitions go, so that the next owner starts exactly where this worker stopped.
        self._finish_pending()
        if self._in_txn and self._producer is not None:
            try:
                self._producer.abort_transaction(_TXN_TIMEOUT_S)
            except KafkaException:
                log.exception("abort on revoke failed")
            self._in_txn = False
        log.info("partitions revoked: %s", [(p.topic, p.partition) for p in partitions])

    # ------------------------------------------------------------------ control
    def stop(self) -> None:
        """Ask :meth:`run` to return after the current batch."""
        self._stop.set()

    def _apply_changes(self, changes: Iterable[tuple[str, PipelineRuntime | None]]) -> None:
        for name, runtime in changes:
            if runtime is None:
                self._runtimes.pop(name, None)
                log.info("pipeline %s undeployed", name)
            else:
                old = self._runtimes.get(name)
                self._runtimes[name] = runtime
                if old is None or old.version != runtime.version:
                    log.info("pipeline %s now at %s", name, runtime.version)

    def _pipeline_of(self, topic: str) -> str:
        if topic.startswith(self._prefix) and topic.endswith(".requests"):
            return topic[len(self._prefix) : -len(".requests")]
        return topic

    def _ensure_topic(self, topic: str) -> None:
        # Producing to a missing topic inside a transaction would abort every batch after it.
        if topic in self._known_topics:
            return
        from driftline.streams.control import ensure_topics

        ensure_topics(self.kafka, [topic])
        self._known_topics.add(topic)

    def _admin(self) -> AdminClient:
        if self._admin_client is None:
            self._admin_client = AdminClient(self.kafka.client_config())
        return self._admin_client

    def _record_limit(self, topic: str) -> int:
        """The largest record this worker can write to ``topic``: the smaller of the producer's
        ``message.max.bytes`` and the topic's ``max.message.bytes``."""
        limit = self._limits.get(topic)
        if limit is None:
            limit = int(self.kafka.kafka_options.get("message.max.bytes", PRODUCER_MAX_BYTES))
            resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
            try:
                entries = self._admin().describe_configs([resource])[resource].result(15)
                entry = entries.get("max.message.bytes")
                if entry is not None and entry.value:
                    limit = min(limit, int(entry.value))
            except (KafkaException, ValueError) as exc:
                # Unknown: the producer's own limit still holds; a smaller topic limit then
                # fails a transaction, which is split until the record is found.
                log.warning("cannot read max.message.bytes of %s (%s)", topic, exc)
            self._limits[topic] = limit
        return limit

    def _partition_count(self, topic: str) -> int:
        count = self._partition_counts.get(topic)
        if count is None:
            md = self._admin().list_topics(topic, timeout=15)
            tmd = md.topics.get(topic)
            count = len(tmd.partitions) if tmd is not None and tmd.error is None else 0
            self._partition_counts[topic] = count
        return count

    # ------------------------------------------------------------------ loop
    def run(self, max_idle_s: float | None = None) -> WorkerStats:
        """Serve until :meth:`stop` (or SIGTERM/SIGINT in the main thread).

        ``max_idle_s`` returns after that long without any message (tests, draining).
        """
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: self._stop.set())
        self._apply_changes(self.source.snapshot().items())
        self._consumer = Consumer(self._consumer_config())
        self._producer = self._new_producer()
        self._subscribe(self._consumer)
        timeout = self.settings.worker_batch_timeout_ms / 1000
        last_msg = time.monotonic()
        # What exists now (modules, models, clients) lives as long as the process; frozen, it
        # is no longer walked by every full collection the per-request objects trigger.
        gc.freeze()
        try:
            while not self._stop.is_set():
                msgs = self._consumer.consume(self.settings.worker_batch_size, max(timeout, 0.001))
                self._apply_changes(self.source.poll())
                if not msgs:
                    self._finish_pending()
                    if max_idle_s is not None and time.monotonic() - last_msg > max_idle_s:
                        break
                    continue
                last_msg = time.monotonic()
                self._serve(msgs)
        finally:
            self._close()
        return self.stats

    def _close(self) -> None:
        with contextlib.suppress(Exception):
            self._finish_pending()
        self._committer.shutdown(wait=True)
        if self._producer is not None:
            if self._in_txn:
                with contextlib.suppress(KafkaException):
                    self._producer.abort_transaction(_TXN_TIMEOUT_S)
            self._producer.flush(10)
        if self._consumer is not None:
            self._consumer.close()
        self._consumer = self._producer = None
        self.source.close()

    def _serve(self, msgs: list[Message]) -> None:
        received = time.perf_counter_ns()
        # Per-message attributes with the loops in C (map over the C methods).
        errors = list(map(Message.error, msgs))
        # Identity, not ==: comparing a KafkaError with None raises inside list.count.
        if any(map(operator.is_not, errors, repeat(None))):
            for err in errors:
                if err is not None and err.code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer error: %s", err)
            msgs = [m for m, err in zip(msgs, errors, strict=True) if err is None]
        batch = self._score(msgs, received)
        # The previous batch's commit ran while this one was decoded and scored; its result
        # decides whether this one may be produced at all.
        if not self._finish_pending(rewind_also=batch.groups):
            return
        self._deliver(batch)

    def _score(self, msgs: list[Message], received: int) -> _Batch:
        """Decode and score every pipeline's share of a micro-batch."""
        topics: list[str] = list(map(Message.topic, msgs))  # type: ignore[arg-type]
        by_topic: dict[str, list[Message]]
        if topics and topics.count(topics[0]) == len(topics):
            by_topic = {topics[0]: msgs}
        else:
            by_topic = defaultdict(list)
            for topic, m in zip(topics, msgs, strict=True):
                by_topic[topic].append(m)
        # A partition's messages arrive in offset order: the last one seen is the highest, and
        # a dict built from pairs keeps the last value of each key.
        last: dict[tuple[str, int | None], int | None] = dict(
            zip(
                zip(topics, map(Message.partition, msgs), strict=True),
                map(Message.offset, msgs),
                strict=True,
            )
        )
        outputs: list[tuple[str, str, list[Message], BatchOutcome | None]] = []
        now = int(time.time() * 1000)
        time_range = (
            now - self.settings.worker_max_event_age_ms,
            now + self.settings.worker_max_event_skew_ms,
        )
        for topic, group in by_topic.items():
            name = self._pipeline_of(topic)
            runtime = self._runtimes.get(name)
            if runtime is None:
                outputs.append((name, topic, group, None))
                continue
            try:
                outcome = process_batch(
                    runtime,
                    list(map(Message.value, group)),
                    default_ids=_Lazy(group, _default_id),
                    default_times=_event_times(group),
                    received_ns=received,
                    max_message_bytes=self.settings.worker_max_message_bytes,
                    time_range=time_range,
                )
            except Exception as exc:
                # Whatever went wrong is this pipeline's: its requests go to its dead letters
                # and every other pipeline of the batch is served.
                log.error("pipeline %s: serving a batch failed: %r", name, exc)
                detail = f"serving pipeline {name!r} failed: {exc!r}"[:500]
                outcome = BatchOutcome(
                    rejected=[Rejection(i, PIPELINE_ERROR, detail) for i in range(len(group))],
                    messages=len(group),
                )
            outputs.append((name, topic, group, outcome))
            INFERENCE.labels(name).observe(outcome.inference_s)
        offsets = [TopicPartition(t, p or 0, (o or 0) + 1) for (t, p), o in last.items()]
        return _Batch(outputs, offsets, list(by_topic.values()), received, len(msgs))

    def _done(self, batch: _Batch) -> None:
        self._count(batch.outputs)
        self.stats.batches += 1
        BATCH_SIZE.observe(batch.messages)
        BATCH_LATENCY.observe((time.perf_counter_ns() - batch.received_ns) / 1e9)

    def _finish_pending(self, rewind_also: list[list[Message]] | None = None) -> bool:
        """Wait for the commit handed to the committer thread; False if it failed.

        On failure the transaction is aborted and every partition of that batch (and of
        ``rewind_also``, consumed meanwhile but not produced) is rewound to be served again.
        """
        pending, self._pending = self._pending, None
        if pending is None:
            return True
        future, batch, state = pending
        try:
            exc = future.result(max(0.0, state.started + _OFFSETS_STALL_S - time.monotonic()))
        except TimeoutError:
            with state.lock:
                state.abandoned = not state.committing
            if not state.abandoned:
                # Committing: librdkafka's commit honours its timeout, and giving up now could
                # serve again a batch whose transaction did commit.
                exc = future.result()
            else:
                self._replace_stuck_producer()
                self._rewind([*batch.groups, *(rewind_also or [])])
                return False
        if exc is None:
            self._in_txn = False
            self._done(batch)
            return True
        self._recover(exc)
        self._after_failure(exc, batch.groups, rewind_also or [])
        return False

    def _count(self, outputs: list[tuple[str, str, list[Message], BatchOutcome | None]]) -> None:
        for name, _topic, group, outcome in outputs:
            REQUESTS.labels(name).inc(len(group))
            self.stats.messages += len(group)
            if outcome is None:
                DEAD_LETTERS.labels(name, UNDEPLOYED_PIPELINE).inc(len(group))
                self.stats.dead_letters += len(group)
                self.stats.dead_letter_reasons[UNDEPLOYED_PIPELINE] += len(group)
                continue
            ROWS.labels(name).inc(outcome.rows)
            self.stats.rows += outcome.rows
            for vname, n in outcome.check_failures.items():
                if n:
                    CHECK_FAILURES.labels(name, vname).inc(n)
            for rej in outcome.rejected:
                DEAD_LETTERS.labels(name, rej.reason).inc()
                self.stats.dead_letters += 1
                self.stats.dead_letter_reasons[rej.reason] += 1

    def _produce_all(
        self, outputs: list[tuple[str, str, list[Message], BatchOutcome | None]]
    ) -> None:
        producer = self._producer
        assert producer is not None
        for name, topic, group, outcome in outputs:
            if outcome is None:
                rejected = [
                    Rejection(
                        i,
                        UNDEPLOYED_PIPELINE,
                        f"no pipeline {name!r} is deployed; deploy it, then replay this message",
                    )
                    for i in range(len(group))
                ]
            else:
                if outcome.results:
                    results_topic = self.kafka.topic(name, "results")
                    self._ensure_topic(results_topic)
                    self._check_result_sizes(results_topic, group, outcome)
                rejected = outcome.rejected
                if outcome.results:
                    ids, times = outcome.ids, outcome.times
                    # The broker rejects timestamps far in the future (Kafka 4 default: 1 h),
                    # which would abort every retry of the batch: such rows keep their event
                    # time in the event only, and the record gets the produce time.
                    latest = int(time.time() * 1000) + _MAX_FUTURE_MS
                    # Co-partitioned topics: a result goes to its request's partition number,
                    # so each results partition keeps its requests' order and event time stays
                    # ordered per partition for the monitor's watermark and lateness rules.
                    n_results = self._partition_count(results_topic)
                    same = n_results > 0 and n_results == self._partition_count(topic)
                    # Key, record timestamp and partition of each message, then of each row.
                    keys = list(map(Message.key, group))
                    if None in keys or b"" in keys:
                        keys = [
                            key or (ids[k].encode() if k in ids else key)
                            for k, key in enumerate(keys)
                        ]
                    # The record timestamp is the event time, so replay and rebuild can find a
                    # range of event time with offsets_for_times.
                    stamps = [
                        t if 0 < t <= latest else 0
                        for t in map(times.get, range(len(group)), repeat(0))
                    ]
                    parts = (
                        [p or 0 for p in map(Message.partition, group)]
                        if same
                        else [-1] * len(group)
                    )
                    traces = _trace_headers(group)
                    # Every message accepted, with as many rows: one row each, else expand.
                    if not len(outcome.results) == len(ids) == len(group):
                        row_msg = [k for k, _ in outcome.results]
                        keys = [keys[k] for k in row_msg]
                        stamps = [stamps[k] for k in row_msg]
                        parts = [parts[k] for k in row_msg]
                        if traces is not None:
                            traces = [traces[k] for k in row_msg]
                    _produce_rows(
                        producer,
                        results_topic,
                        [v for _, v in outcome.results],
                        keys,
                        parts,
                        stamps,
                        traces,
                    )
            if rejected:
                dl_topic = self.kafka.topic(name, "deadletter")
                self._ensure_topic(dl_topic)
                # A copy too large for the dead-letter topic would fail the transaction on
                # every retry: the contract truncates it to what the topic takes.
                limit = self._record_limit(dl_topic)
                for rej in rejected:
                    m = group[rej.index]
                    dl = dead_letter(
                        m.value(),
                        reason=rej.reason,
                        detail=rej.detail,
                        topic=topic,
                        partition=m.partition(),
                        offset=m.offset(),
                        key=m.key(),
                        extra_headers=_trace_of(m.headers()),
                        max_bytes=limit,
                    )
                    _produce(producer, dl_topic, dl.value, dl.key, list(dl.headers))

    def _check_result_sizes(self, topic: str, group: list[Message], outcome: BatchOutcome) -> None:
        """Dead-letter (``result_too_large``) each message with a result its topic refuses:
        produced, it would fail the transaction on every retry."""
        budget = self._record_limit(topic) - RECORD_OVERHEAD_BYTES
        # Keys and trace headers are small; only a batch with a result near the limit is
        # looked at record by record.
        if max(map(len, (v for _, v in outcome.results))) + _KEY_AND_TRACE_BYTES <= budget:
            return
        over: dict[int, str] = {}
        for k, value in outcome.results:
            m = group[k]
            size = record_size(m.key() or outcome.ids.get(k, "").encode(), value)
            size += sum(len(n) + len(v or b"") for n, v in _trace_of(m.headers()))
            if size > budget and k not in over:
                over[k] = (
                    f"a result of this request is {size} bytes, over the {budget}-byte limit "
                    f"of {topic} (results repeat the request's inputs); send fewer values per "
                    "row or raise the topic's max.message.bytes (options.max_message_bytes)"
                )
        outcome.reject_messages(over, RESULT_TOO_LARGE)

    def _deliver(self, batch: _Batch) -> None:
        """Produce a batch's output and start committing it; on failure, serve it again."""
        assert self._producer is not None and self._consumer is not None
        if not self.exactly_once:
            self._deliver_at_least_once(batch)
            return
        producer = self._producer
        try:
            producer.begin_transaction()
            self._in_txn = True
            self._produce_all(batch.outputs)
            meta = self._consumer.consumer_group_metadata()
        except KafkaException as exc:
            self._recover(exc)
            self._after_failure(exc, batch.groups, [])
            return
        # Offsets and commit go to the committer thread (librdkafka releases the GIL), so the
        # next batch is decoded and scored meanwhile; it is produced only after this commit.
        state = _CommitState()
        future = self._committer.submit(self._commit_offsets, producer, batch.offsets, meta, state)
        self._pending = (future, batch, state)

    def _after_failure(
        self,
        exc: KafkaException,
        groups: list[list[Message]],
        rewind_also: list[list[Message]],
    ) -> None:
        """After a failed (and aborted) batch: serve it again.

        A transient failure rewinds it (and ``rewind_also``, consumed meanwhile) to be read
        again. A failure that will not change on a retry (a record too large for its topic,
        say) would fail every retry: the batch is served in halves until the culprit is alone,
        and that message is dead-lettered.
        """
        unserved = groups
        if _permanent(exc):
            unserved = self._serve_split([m for g in groups for m in g], exc)
        if unserved or rewind_also:
            # One rewind for both: each partition goes back to its earliest unserved offset.
            self._rewind([*unserved, *rewind_also])

    def _serve_split(self, msgs: list[Message], exc: KafkaException) -> list[list[Message]]:
        """Serve ``msgs`` in ever smaller transactions; return what a transient failure left
        unserved (to be rewound)."""
        log.warning(
            "a transaction of %d messages failed for a reason a retry will not change (%s); "
            "serving them in smaller transactions to isolate the culprit",
            len(msgs),
            exc.args[0] if exc.args else exc,
        )
        SPLITS.inc()
        self._fresh_producer()
        todo = [msgs]
        while todo:
            part = todo.pop()
            batch = self._score(part, time.perf_counter_ns())
            err = self._deliver_now(batch)
            if err is None:
                self._done(batch)
                continue
            if not _permanent(err):
                return [part, *reversed(todo)]
            self._fresh_producer()
            if len(part) > 1:
                mid = len(part) // 2
                todo += [part[mid:], part[:mid]]
                continue
            # One message whose output cannot be written even alone: its dead letter instead.
            culprit = self._dead_batch(part[0], err)
            err = self._deliver_now(culprit)
            if err is not None and _permanent(err):
                # Not even the dead letter fits (the topic's limit is smaller than it says):
                # a small copy then.
                self._fresh_producer()
                dl_topic = self.kafka.topic(culprit.outputs[0][0], "deadletter")
                self._limits[dl_topic] = min(self._record_limit(dl_topic), _LAST_RESORT_BYTES)
                err = self._deliver_now(culprit)
            if err is not None:
                return [part, *reversed(todo)]
            self._done(culprit)
        return []

    def _dead_batch(self, m: Message, exc: KafkaException) -> _Batch:
        """A batch that dead-letters one message whose output could not be written."""
        topic = str(m.topic())
        name = self._pipeline_of(topic)
        err = exc.args[0] if exc.args else exc
        detail = (
            f"its results or dead letter could not be written to Kafka ({err}); the other "
            "messages of its batch were served"
        )
        outcome = BatchOutcome(rejected=[Rejection(0, PRODUCE_FAILED, detail)], messages=1)
        offsets = [TopicPartition(topic, m.partition() or 0, (m.offset() or 0) + 1)]
        return _Batch([(name, topic, [m], outcome)], offsets, [[m]], time.perf_counter_ns(), 1)

    def _fresh_producer(self) -> None:
        """A new transactional producer: after a failed transaction librdkafka may fail the
        next one too (sequence numbers) until the producer epoch is bumped."""
        if self.exactly_once:
            self.stats.producer_restarts += 1
            self._producer = self._new_producer(wait=True)

    def _deliver_now(self, batch: _Batch) -> KafkaException | None:
        """Produce and commit one batch synchronously; the error if it failed (then aborted)."""
        assert self._producer is not None and self._consumer is not None
        producer = self._producer
        if not self.exactly_once:
            try:
                self._produce_all(batch.outputs)
            except KafkaException as exc:
                return exc
            if producer.flush(_TXN_TIMEOUT_S):
                return KafkaException(KafkaError(KafkaError._TIMED_OUT, "flush timed out"))
            try:
                self._consumer.commit(offsets=batch.offsets, asynchronous=False)
            except KafkaException as exc:
                log.warning("offset commit failed (%s); results may be repeated", exc)
            return None
        try:
            producer.begin_transaction()
            self._in_txn = True
            self._produce_all(batch.outputs)
            producer.send_offsets_to_transaction(
                batch.offsets, self._consumer.consumer_group_metadata(), _TXN_TIMEOUT_S
            )
            self._commit(producer)
            self._in_txn = False
        except KafkaException as exc:
            self._recover(exc)
            return exc
        return None

    def _commit_offsets(
        self, producer: Producer, offsets: list[TopicPartition], meta: Any, state: _CommitState
    ) -> KafkaException | None:
        try:
            producer.send_offsets_to_transaction(offsets, meta, _TXN_TIMEOUT_S)
            with state.lock:
                if state.abandoned:
                    # Given up on: another producer took over and fenced this one.
                    return None
                state.committing = True
            self._commit(producer)
        except KafkaException as exc:
            return exc
        return None

    def _commit(self, producer: Producer) -> None:
        for attempt in range(5):
            try:
                producer.commit_transaction(_TXN_TIMEOUT_S)
                return
            except KafkaException as exc:
                err = exc.args[0]
                if err.retriable() and attempt < 4:
                    continue
                raise

    def _recover(self, exc: KafkaException) -> None:
        err = exc.args[0]
        self.stats.aborts += 1
        fatal = isinstance(err, KafkaError) and err.fatal()
        ABORTS.labels("fatal" if fatal else "abort").inc()
        log.warning("transaction failed (%s); serving the batch again", err)
        if not fatal:
            try:
                self._producer.abort_transaction(_TXN_TIMEOUT_S)  # type: ignore[union-attr]
                self._in_txn = False
                return
            except KafkaException as abort_exc:
                log.warning("abort failed (%s); recreating the producer", abort_exc)
        self._in_txn = False
        self.stats.producer_restarts += 1
        # Fenced or unusable: a fresh producer with the same transactional.id takes over.
        self._producer = self._new_producer(wait=True)

    def _replace_stuck_producer(self) -> None:
        self.stats.aborts += 1
        ABORTS.labels("stuck").inc()
        log.warning(
            "sending offsets to the transaction did not return within %.0fs (librdkafka lost "
            "the group coordinator?); replacing the producer and serving the batch again",
            _OFFSETS_STALL_S,
        )
        # The old producer and its committer thread stay blocked in librdkafka; the new
        # producer's init_transactions fences the old one and aborts its transaction.
        self._committer.shutdown(wait=False)
        self._committer = _Committer()
        self._in_txn = False
        self.stats.producer_restarts += 1
        self._producer = self._new_producer(wait=True)

    def _deliver_at_least_once(self, batch: _Batch) -> None:
        assert self._producer is not None and self._consumer is not None
        try:
            self._produce_all(batch.outputs)
        except KafkaException as exc:
            self.stats.aborts += 1
            ABORTS.labels("produce").inc()
            self._after_failure(exc, batch.groups, [])
            return
        # Offsets move only after every result of the batch is acknowledged.
        remaining = self._producer.flush(_TXN_TIMEOUT_S)
        if remaining:
            ABORTS.labels("flush").inc()
            self.stats.aborts += 1
            self._rewind(batch.groups)
            return
        try:
            self._consumer.commit(offsets=batch.offsets, asynchronous=True)
        except KafkaException as exc:
            log.warning("offset commit failed (%s); results may be repeated", exc)
        self._done(batch)

    def _rewind(self, groups: Iterable[list[Message]]) -> None:
        assert self._consumer is not None
        for tp in _first_offsets(groups):
            try:
                self._consumer.seek(tp)
            except KafkaException as exc:
                # Revoked meanwhile: the new owner starts from the committed offset.
                log.info("cannot rewind %s[%d]: %s", tp.topic, tp.partition, exc)


def _produce(
    producer: Producer,
    topic: str,
    value: bytes | None,
    key: bytes | None,
    headers: list[tuple[str, str | bytes | None]] | None = None,
    timestamp: int = 0,
    partition: int = -1,
) -> None:
    while True:
        try:
            if headers is None:
                producer.produce(topic, value, key, timestamp=timestamp, partition=partition)
            else:
                producer.produce(
                    topic, value, key, headers=headers, timestamp=timestamp, partition=partition
                )
            return
        except BufferError:
            # The local queue is full: let deliveries drain, then try again.
            producer.poll(0.05)


#: W3C trace context headers, carried from a request to its results and dead letters.
TRACE_HEADERS = ("traceparent", "tracestate")

_TraceHeaders = list[tuple[str, str | bytes | None]]


def _trace_of(headers: Any) -> _TraceHeaders:
    # A consumed message's headers are a list of (name, bytes) pairs, or None.
    return [(k, v) for k, v in headers or () if k in TRACE_HEADERS]


def _trace_headers(group: list[Message]) -> list[_TraceHeaders | None] | None:
    """Trace context of each message, or None when no message of the batch has headers."""
    headers = list(map(Message.headers, group))
    if not any(headers):
        return None
    return [_trace_of(h) or None for h in headers]


def _produce_rows(
    producer: Producer,
    topic: str,
    values: list[bytes],
    keys: list[bytes | None],
    partitions: list[int],
    timestamps: list[int],
    traces: list[_TraceHeaders | None] | None = None,
) -> None:
    """Produce many records; the hot loop does nothing but the call.

    Positional arguments (topic, value, key, partition, on_delivery, callback, timestamp):
    parsing keyword arguments costs more than the rest of ``produce``.
    """
    produce = producer.produce
    if traces is not None:
        for value, key, part, ts, trace in zip(
            values, keys, partitions, timestamps, traces, strict=True
        ):
            _produce(producer, topic, value, key, trace, timestamp=ts, partition=part)
        return
    for value, key, part, ts in zip(values, keys, partitions, timestamps, strict=True):
        try:
            produce(topic, value, key, part, None, None, ts)
        except BufferError:
            _produce(producer, topic, value, key, timestamp=ts, partition=part)


def _default_id(m: Message) -> str:
    key = m.key()
    if key:
        return key.decode("utf-8", "replace")
    return f"{m.topic()}:{m.partition()}:{m.offset()}"


def _event_times(group: list[Message]) -> list[int]:
    """Each message's Kafka timestamp, or now when it has none: the event time of requests
    without a ``time``. One list per batch (most requests carry no time of their own)."""
    now = int(time.time() * 1000)
    return [ts if kind != 0 and ts > 0 else now for kind, ts in map(Message.timestamp, group)]


def _first_offsets(groups: Iterable[list[Message]]) -> list[TopicPartition]:
    first: dict[tuple[str, int], int] = {}
    for group in groups:
        for m in group:
            tp = (str(m.topic()), int(m.partition() or 0))
            off = int(m.offset() or 0)
            if off < first.get(tp, off + 1):
                first[tp] = off
    return [TopicPartition(t, p, o) for (t, p), o in first.items()]


def run_worker(
    pipelines: Sequence[str] | None = None,
    *,
    guarantee: str | None = None,
    worker_id: str | None = None,
    metrics_port: int | None = None,
    batch_size: int | None = None,
    log: Callable[[str], None] | None = None,
) -> WorkerStats:
    """Run a worker on the deployed pipelines (the ``driftline worker`` command).

    Arguments left ``None`` come from :class:`~driftline.config.WorkerSettings`.
    """
    from driftline.config import load_settings
    from driftline.metrics import start_metrics_server
    from driftline.streams._worker_source import ControlSource

    settings = load_settings()
    update: dict[str, Any] = {}
    if guarantee is not None:
        update["worker_guarantee"] = guarantee
    if worker_id is not None:
        update["worker_id"] = worker_id
    if batch_size is not None:
        update["worker_batch_size"] = batch_size
    ws = WorkerSettings().model_copy(update=update)
    port = start_metrics_server(
        metrics_port if metrics_port is not None else ws.worker_metrics_port
    )
    if pipelines:
        pipelines = list(dict.fromkeys(pipelines))
    source = ControlSource(
        settings.kafka, settings.model_store, ws.worker_intra_op_threads, pipelines
    )
    if pipelines:
        names = source.deployed()
        missing = [p for p in pipelines if p not in names]
        if missing:
            source.close()
            known = ", ".join(sorted(names)) or "none"
            raise DriftlineError(
                f"--pipeline {', '.join(missing)}: not deployed (deployed: {known}); deploy it "
                "first (`driftline deploy SPEC`), or leave out --pipeline to serve every "
                "deployed pipeline"
            )
    worker = Worker(settings.kafka, ws, source, pipelines)
    if log is not None:
        deployed = ", ".join(sorted(source.snapshot())) or "none yet"
        log(
            f"worker {ws.worker_id} ({ws.worker_guarantee}) serving: {deployed}"
            + (f"; metrics on :{port}/metrics" if port else "")
        )
    return worker.run()
