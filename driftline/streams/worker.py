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
  aborted), and both batches are rewound;
* a failure a retry cannot change (a record over its topic's size limit) is not retried: the
  batch is served in halves until the message at fault is alone and dead-lettered
  (:mod:`~driftline.streams._worker_split`);
* anything else going wrong while serving one pipeline dead-letters that pipeline's share of
  the batch (``pipeline_error``); the other pipelines are served. The process ends only when
  Kafka itself cannot be used.

The parts: :mod:`~driftline.streams._worker_core` (pure: decode, run models, validate, build
events), :mod:`~driftline.streams._worker_output` (result records and dead letters within
their topics' limits), :mod:`~driftline.streams._worker_txn` (the batch on its way to its
commit, the committer thread), :mod:`~driftline.streams._worker_split` (after a failed
transaction) and :mod:`~driftline.streams._worker_source` (the deployed pipelines).

``guarantee="at-least-once"`` uses an idempotent, non-transactional producer and commits offsets
after the batch's results are acknowledged: lower latency, but a crash can duplicate results.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import operator
import re
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from itertools import repeat
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from prometheus_client import Counter, Histogram

from driftline.config import KafkaSettings, WorkerSettings
from driftline.errors import DriftlineError, ServiceError
from driftline.kafka.loop import StopSignal
from driftline.streams._worker_core import (
    BatchOutcome,
    PipelineRuntime,
    RuntimeModel,
    WorkerStats,
    process_batch,
)
from driftline.streams._worker_output import _Output
from driftline.streams._worker_source import RuntimeSource, StaticSource
from driftline.streams._worker_split import _Split
from driftline.streams._worker_txn import (
    _OFFSETS_STALL_S,
    _TXN_TIMEOUT_S,
    _Batch,
    _CommitState,
    _Committer,
    _first_offsets,
)
from driftline.streams.codec import (
    MODEL_ERROR,
    PIPELINE_ERROR,
    PRODUCE_FAILED,
    RESULT_TOO_LARGE,
    UNDEPLOYED_PIPELINE,
    UNSERIALIZABLE_OUTPUT,
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

#: Dead-letter reasons that say something about a pipeline (its model, its spec, its topics),
#: not about one request: each is logged once per pipeline version.
_PIPELINE_REASONS = frozenset(
    {MODEL_ERROR, PIPELINE_ERROR, PRODUCE_FAILED, RESULT_TOO_LARGE, UNSERIALIZABLE_OUTPUT}
)

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
ABORTS = Counter(
    "driftline_worker_transaction_aborts",
    "Micro-batches whose transaction was aborted (and served again).",
    ["kind"],
)


class _Lazy(Sequence[Any]):
    """Per-message defaults computed only for the messages that need them."""

    def __init__(self, msgs: list[Message], fn: Callable[[Message], Any]):
        self._msgs = msgs
        self._fn = fn

    def __len__(self) -> int:
        return len(self._msgs)

    def __getitem__(self, i: Any) -> Any:
        return self._fn(self._msgs[i])


class Worker(_Output, _Split):
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
        self._reported: set[tuple[str, str]] = set()
        self._admin_client: AdminClient | None = None
        self._stop = StopSignal()
        self._prefix = kafka.topic_prefix + "."
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._in_txn = False
        self._pending: tuple[Future[KafkaException | None], _Batch, _CommitState] | None = None
        self._producer_max = self._base_producer_bytes()
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
            "message.max.bytes": self._producer_max,
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
                    self._reported = {r for r in self._reported if r[0] != name}
                if old is not None and old.max_message_bytes != runtime.max_message_bytes:
                    # Deploy has set the topics' limits anew (options.max_message_bytes).
                    mine = self.kafka.topic(name, "")
                    self._limits = {t: b for t, b in self._limits.items() if not t.startswith(mine)}

    def _grow_producer(self) -> None:
        """Recreate the producer between transactions when a deployed spec allows records
        larger than it may send (its ``message.max.bytes`` is fixed at creation)."""
        wanted = self._wanted_producer_bytes(self._runtimes.values())
        if wanted <= self._producer_max or self._pending is not None or self._in_txn:
            return
        log.info(
            "producer message.max.bytes %d -> %d for a spec's options.max_message_bytes",
            self._producer_max,
            wanted,
        )
        if self._producer is not None:
            self._producer.flush(30)
        self._producer_max = wanted
        self._limits.clear()
        self.stats.producer_restarts += 1
        self._producer = self._new_producer(wait=True)

    def _pipeline_of(self, topic: str) -> str:
        if topic.startswith(self._prefix) and topic.endswith(".requests"):
            return topic[len(self._prefix) : -len(".requests")]
        return topic

    # ------------------------------------------------------------------ loop
    def run(self, max_idle_s: float | None = None) -> WorkerStats:
        """Serve until :meth:`stop` (or SIGTERM/SIGINT in the main thread).

        ``max_idle_s`` returns after that long without any message (tests, draining).
        """
        signals = contextlib.ExitStack()
        # SIGTERM/SIGINT set the stop (main thread only), restored when the loop ends.
        signals.enter_context(self._stop.installed())
        self._apply_changes(self.source.snapshot().items())
        self._producer_max = self._wanted_producer_bytes(self._runtimes.values())
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
                if self._wanted_producer_bytes(self._runtimes.values()) > self._producer_max:
                    self._finish_pending()
                    self._grow_producer()
                if not msgs:
                    self._finish_pending()
                    if max_idle_s is not None and time.monotonic() - last_msg > max_idle_s:
                        break
                    continue
                last_msg = time.monotonic()
                self._serve(msgs)
        finally:
            self._close()
            signals.close()
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
                if rej.reason in _PIPELINE_REASONS and (name, rej.reason) not in self._reported:
                    # One line per pipeline version and cause, not one per batch.
                    self._reported.add((name, rej.reason))
                    log.error(
                        "pipeline %s: requests dead-lettered as %s: %s (further ones are "
                        "counted in driftline_worker_dead_letters_total)",
                        name,
                        rej.reason,
                        rej.detail,
                    )

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
        external = source.external()
        if any(p in external for p in pipelines):
            from driftline.streams._worker_external import run_external

            source.close()
            return run_external(list(pipelines), external, settings.kafka, ws, log)
    worker = Worker(settings.kafka, ws, source, pipelines)
    if log is not None:
        deployed = ", ".join(sorted(source.snapshot())) or "none yet"
        log(
            f"worker {ws.worker_id} ({ws.worker_guarantee}) serving: {deployed}"
            + (f"; metrics on :{port}/metrics" if port else "")
        )
    return worker.run()
