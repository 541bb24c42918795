"""Serving a pipeline without models: predictions made elsewhere become driftline results.

``driftline worker --pipeline NAME`` on a pipeline whose spec has ``models: []`` and a
``source`` runs :class:`ExternalWorker`: it reads the topic(s) the other serving system writes,
turns each prediction into result events on ``<p>.results`` (validations applied, exactly as the
inference worker writes its own), and dead-letters to ``<p>.deadletter`` what it cannot use.
Validations, alerts, assays, performance and replay then work unchanged.

``source.format: v2-pairs``
    Open Inference Protocol responses on ``source.topic``, their requests on
    ``source.requests`` (MLServer's Kafka server, or any payload logger that writes both). A
    message's id is its Kafka key, else its body's ``id``; a request and the response with the
    same id are a pair, in whichever order they arrive. A message still alone
    ``source.pair_timeout`` (default 60 s) after the worker read it is dead-lettered as
    ``unpaired``; expiry happens only at moments the worker has read the whole source, so a
    backlog (after a restart, say) never expires what its later part would pair, and a
    restart gives what was waiting a full timeout again. A second message of
    the same side with an id already waiting as ``duplicate_id``; a message with no id as
    ``missing_id``; malformed ones with the request codec's reasons. None stops the source.
``source.format: driftline``
    Result events (``{"id", "row", "time", "inputs", "outputs": {model: [...]}}``) written by
    the other system on ``source.topic``: checked against the schema, validations applied
    (``check_failures`` recomputed), forwarded.

Guarantee: **exactly once**, across crashes and restarts. Each micro-batch is one Kafka
transaction holding its result events, its dead letters, the batch's changes to the pairing
state, and the source offsets past the batch. The pairing state (the messages still waiting
for their other half) lives in the compacted topic ``<p>.pairing``: a message that waits at
the end of a batch is written there, and deleted (a tombstone) in the transaction that pairs
or expires it. After a crash the worker reads ``<p>.pairing`` to its end (read_committed) and
resumes at the committed offsets: the state and the offsets are those of the last committed
batch, so no prediction is lost or counted twice. A failed transaction is aborted and the
worker restarts from that same committed point, with backoff; after six failures in a row it
stops with the reason (a retry would not change it). Nothing a single message holds can make
a transaction fail for good: what would not fit its topic is dead-lettered first.

One process serves an external pipeline at a time: its ``transactional.id`` is the pipeline's
(``driftline-external-<pipeline>``), so a second instance fences the first, which then stops.
It reads every partition of its source topics (the pairing needs both halves in one place).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Mapping
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from prometheus_client import Counter

from driftline.config import KafkaSettings, WorkerSettings
from driftline.errors import ServiceError
from driftline.kafka.clientlog import with_logger
from driftline.kafka.deadletter import dead_letter
from driftline.kafka.loop import StopSignal
from driftline.streams._external_pairs import (
    CLOUDEVENTS,
    REQUEST,
    RESPONSE,
    UNPAIRED,
    Built,
    Pairing,
    Pending,
    Record,
    ResultBuilder,
    cloudevent_side,
    message_id,
)
from driftline.streams.codec import TOO_LARGE, _Reject
from driftline.streams.control import topic_max_bytes
from driftline.streams.v2 import InputSpec

__all__ = ["ExternalStats", "ExternalWorker", "builder_from_canonical", "run_external"]

log = logging.getLogger("driftline.worker")

_TXN_TIMEOUT_S = 30.0
#: The broker refuses record timestamps far ahead of its clock (Kafka 4: 1 h) and a
#: transaction holding one could never commit: such results get the produce time as their
#: record timestamp, and keep their event time in the event (as the inference worker does).
_MAX_FUTURE_MS = 30 * 60 * 1000
#: Transactions failing in a row (with backoff between) before the worker gives up.
_MAX_FAILURES = 6

PAIRS = Counter("driftline_external_predictions", "Predictions made elsewhere, read.", ["pipeline"])
DEAD = Counter(
    "driftline_external_dead_letters",
    "Messages of an external source dead-lettered.",
    ["pipeline", "reason"],
)


class ExternalStats:
    """Counts since start, for tests and the CLI's exit summary."""

    def __init__(self) -> None:
        self.batches = 0
        self.messages = 0
        self.results = 0
        self.dead_letters = 0
        self.restarts = 0
        self.dead_letter_reasons: dict[str, int] = {}


def builder_from_canonical(canonical: Mapping[str, Any]) -> tuple[Any, ResultBuilder]:
    """The source and the :class:`ResultBuilder` of a deployed pipeline without models."""
    from driftline.compile import worker_plan
    from driftline.expressions import evaluate
    from driftline.streams._worker_source import response_form

    def none(sha256: str) -> Any:  # pragma: no cover - a pipeline without models has none
        raise AssertionError(sha256)

    plan = worker_plan(canonical, none)
    if plan.source is None:
        raise ValueError(f"pipeline {plan.name!r} has models; it is not external")
    info = plan.champion

    def specs(tensors: Any) -> list[InputSpec]:
        return [InputSpec(t.name, t.dtype, tuple(t.shape)) for t in tensors]

    def check(expr: Any) -> Any:
        return lambda tensors: evaluate(expr, tensors, plan.tensor_names)

    builder = ResultBuilder(
        plan.name,
        plan.version,
        plan.source.model,
        specs(info.inputs),
        specs(info.outputs),
        {k: check(e) for k, e in plan.validations.items()},
        record_inputs=plan.record_inputs,
        allow_nan=plan.allow_nan,
        max_bytes=plan.max_message_bytes,
        response_form=response_form(plan.source.model, info)
        if plan.result_format == "v2"
        else None,
    )
    return plan.source, builder


class ExternalWorker:
    """Turn one external pipeline's source into result events, exactly once.

    Parameters
    ----------
    kafka, settings:
        Connection, topic prefix, batching and the consumer group (``<worker_group>-external``).
    canonical:
        The deployed spec (``models: []`` with a ``source``).
    now_ms:
        The wall clock (epoch ms) pairing timeouts are measured with.
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        settings: WorkerSettings,
        canonical: Mapping[str, Any],
        now_ms: Any = None,
    ):
        self.kafka = kafka
        self.settings = settings
        self.source, self.builder = builder_from_canonical(canonical)
        self.name = self.builder.pipeline
        self.results_topic = kafka.topic(self.name, "results")
        self.deadletter_topic = kafka.topic(self.name, "deadletter")
        self.pairing_topic = kafka.topic(self.name, "pairing")
        self.sides = {self.source.topic: RESPONSE if self.source.requests else "event"}
        if self.source.requests == self.source.topic:
            self.sides[self.source.topic] = CLOUDEVENTS  # one logger writes both halves
        elif self.source.requests:
            self.sides[self.source.requests] = REQUEST
        self.pairing = Pairing(self.source.pair_timeout_ms)
        self.stats = ExternalStats()
        self._now = now_ms or (lambda: int(time.time() * 1000))
        self._stop = StopSignal()
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._partitions: dict[str, int] = {}
        self._start: dict[tuple[str, int], int] = {}
        self._failures = 0

    def stop(self) -> None:
        """Ask :meth:`run` to return after the current batch."""
        self._stop.set()

    # ------------------------------------------------------------------ start and restart
    def _setup(self) -> None:
        from driftline.kafka.admin import ensure_topics

        # Room for the largest message that may wait there, as the pipeline's other topics.
        ensure_topics(
            self.kafka,
            [self.pairing_topic],
            partitions=1,
            compacted=True,
            config={"max.message.bytes": str(topic_max_bytes(self.builder.max_bytes))},
        )
        self._producer = Producer(
            with_logger(
                self.kafka.client_config(
                    **{
                        "enable.idempotence": True,
                        "linger.ms": 2,
                        # Room for the largest result (options.max_message_bytes), as the
                        # topics deploy made have, and for its key and headers.
                        "message.max.bytes": topic_max_bytes(self.builder.max_bytes),
                        "transactional.id": f"driftline-external-{self.name}",
                        "transaction.timeout.ms": self.settings.worker_transaction_timeout_ms,
                    }
                )
            )
        )
        try:
            # Aborts what a crashed predecessor left open and fences it, before the state is
            # read, so that the changelog read below holds no open transaction.
            self._producer.init_transactions(_TXN_TIMEOUT_S)
        except KafkaException as exc:
            raise ServiceError(
                f"cannot initialise transactions at {self.kafka.bootstrap_servers}: {exc}"
            ) from exc
        self._consumer = Consumer(
            with_logger(
                self.kafka.client_config(
                    **{
                        "group.id": f"{self.settings.worker_group}-external",
                        "enable.auto.commit": False,
                        "auto.offset.reset": "earliest",
                        "isolation.level": "read_committed",
                        "enable.partition.eof": False,
                    }
                )
            )
        )
        md = self._consumer.list_topics(timeout=_TXN_TIMEOUT_S)
        for topic in (*self.sides, self.results_topic):
            tmd = md.topics.get(topic)
            if tmd is None or tmd.error is not None or not tmd.partitions:
                raise ServiceError(
                    f"source topic {topic} of pipeline {self.name} does not exist; create it "
                    "(the serving system writes there) or fix source.topic / source.requests, "
                    "and deploy the pipeline so that its results topic exists"
                )
            self._partitions[topic] = len(tmd.partitions)
        self._restore()

    def _restore(self) -> None:
        """Pairing state from ``<p>.pairing``, and the source at its committed offsets."""
        assert self._consumer is not None
        consumer = self._consumer
        consumer.unassign()
        tp = TopicPartition(self.pairing_topic, 0, 0)
        _low, high = consumer.get_watermark_offsets(tp, timeout=_TXN_TIMEOUT_S)
        state: dict[str, Pending] = {}
        if high > 0:
            consumer.assign([tp])
            deadline = time.monotonic() + 60
            position = 0
            while position < high:
                if time.monotonic() > deadline:
                    raise ServiceError(f"timed out reading {self.pairing_topic}")
                for msg in consumer.consume(1000, 0.5):
                    if msg.error() is not None:
                        continue
                    position = (msg.offset() or 0) + 1
                    key = msg.key() or b""
                    value = msg.value()
                    if value is None:
                        state.pop(key.decode("utf-8", "replace"), None)
                    else:
                        entry = Pending.from_record(key, value, _bytes_headers(msg))
                        state[entry.id] = entry
                # Transaction markers take offsets that are never delivered as messages.
                (now,) = consumer.position([TopicPartition(self.pairing_topic, 0)])
                position = max(position, now.offset)
            consumer.unassign()
        self.pairing.restore(state.values(), self._now())
        parts = [
            TopicPartition(t, p)
            for t, n in self._partitions.items()
            if t in self.sides
            for p in range(n)
        ]
        committed = consumer.committed(parts, timeout=_TXN_TIMEOUT_S)
        self._start = {}
        for c in committed:
            if c.offset < 0:
                c.offset = -2  # OFFSET_BEGINNING: a new source is read from its start
            self._start[(c.topic, c.partition)] = c.offset
        consumer.assign(committed)
        log.info(
            "external pipeline %s: %d message(s) waiting for their pair; reading %s",
            self.name,
            len(state),
            ", ".join(self.sides),
        )

    def _restart(self, why: str) -> None:
        log.warning("external pipeline %s: %s; starting again from the last commit", self.name, why)
        self.stats.restarts += 1
        self._failures += 1
        if self._failures >= _MAX_FAILURES:
            # The same batch failed again and again: a retry will not change it (a topic
            # deleted, permissions); stop with the reason rather than loop for ever.
            raise ServiceError(
                f"external pipeline {self.name}: {_MAX_FAILURES} transactions in a row "
                f"failed, the last: {why}; fix the cause and start the worker again"
            )
        self._stop.wait(min(0.5 * 2**self._failures, 10.0))
        assert self._producer is not None
        try:
            self._producer.abort_transaction(_TXN_TIMEOUT_S)
        except KafkaException as exc:
            raise ServiceError(
                f"external pipeline {self.name}: cannot abort the failed transaction ({exc}); "
                "start the worker again"
            ) from exc
        self._restore()

    # ------------------------------------------------------------------ loop
    def run(self, max_idle_s: float | None = None) -> ExternalStats:
        """Serve until :meth:`stop` (or SIGTERM/SIGINT in the main thread).

        ``max_idle_s`` returns after that long without any message (tests, draining).
        """
        with self._stop.installed():
            self._setup()
            assert self._consumer is not None
            timeout = max(self.settings.worker_batch_timeout_ms / 1000, 0.05)
            last = time.monotonic()
            try:
                while not self._stop.is_set():
                    msgs = self._consumer.consume(self.settings.worker_batch_size, timeout)
                    msgs = [m for m in msgs if m.error() is None]
                    if msgs:
                        last = time.monotonic()
                    elif max_idle_s is not None and time.monotonic() - last > max_idle_s:
                        break
                    self._serve(msgs)
            finally:
                self._close()
        return self.stats

    def _close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
        if self._producer is not None:
            # A fenced producer refuses even to flush; what it held was never committed.
            with contextlib.suppress(KafkaException):
                self._producer.flush(10)
        self._consumer = self._producer = None

    def _caught_up(self) -> bool:
        """Whether every source partition is read to its end (an empty batch alone can mean
        that fetching has not started yet)."""
        assert self._consumer is not None
        for tp in self._consumer.position(self._consumer.assignment()):
            low, high = self._consumer.get_watermark_offsets(tp, timeout=_TXN_TIMEOUT_S)
            position = tp.offset if tp.offset >= 0 else self._start.get((tp.topic, tp.partition))
            if position is None or position < 0:
                position = low
            if position < high:
                return False
        return True

    def _serve(self, msgs: list[Message]) -> None:
        now = self._now()
        self.builder.time_range = (
            now - self.settings.worker_max_event_age_ms,
            now + self.settings.worker_max_event_skew_ms,
        )
        rejected: list[tuple[Record, str, str]] = []
        pairs: list[tuple[Pending, Pending]] = []
        events: list[Record] = []
        offsets: dict[tuple[str, int], int] = {}
        for m in msgs:
            topic, partition, offset = m.topic() or "", m.partition() or 0, m.offset() or 0
            offsets[(topic, partition)] = offset + 1
            kind, ts = m.timestamp()
            record = Record(
                topic,
                partition,
                offset,
                m.key(),
                m.value(),
                ts if kind else now,
                tuple(_bytes_headers(m)),
            )
            side = self.sides[topic]
            size = len(record.value or b"")
            if size > self.builder.max_bytes:
                detail = (
                    f"message is {size} bytes, over the limit of {self.builder.max_bytes} "
                    "(raise options.max_message_bytes in the spec)"
                )
                rejected.append((record, TOO_LARGE, detail))
                continue
            if side == "event":
                events.append(record)
                continue
            try:
                if side == CLOUDEVENTS:
                    side = cloudevent_side(record)
                pair = self.pairing.offer(side, message_id(record), record, now)
            except _Reject as rej:
                rejected.append((record, rej.reason, rej.detail))
                continue
            if pair is not None:
                pairs.append(pair)
        built = self.builder.pairs(pairs) if pairs else Built()
        if events:
            more = self.builder.events(events)
            built.results += more.results
            built.rejected += more.rejected
        built.rejected = rejected + built.rejected
        # Only once the source is read to its end: in a backlog the other half may be next.
        due = self.pairing.oldest_wait_ms(now) >= self.source.pair_timeout_ms
        short = len(msgs) < self.settings.worker_batch_size
        for e in self.pairing.expire(now) if due and short and self._caught_up() else []:
            other = "response" if e.side == REQUEST else "request"
            built.rejected.append(
                (
                    e.record,
                    UNPAIRED,
                    f"{e.side} {e.id!r} got no {other} within source.pair_timeout "
                    f"({self.source.pair_timeout_ms} ms); check that the serving system keeps "
                    "the request's key or id, or raise source.pair_timeout",
                )
            )
        changes = self.pairing.changes()
        if not (offsets or built.results or built.rejected or changes):
            return
        self._commit(built, changes, offsets, len(msgs))

    def _commit(
        self,
        built: Built,
        changes: Mapping[str, Pending | None],
        offsets: Mapping[tuple[str, int], int],
        messages: int,
    ) -> None:
        assert self._producer is not None and self._consumer is not None
        producer = self._producer
        try:
            producer.begin_transaction()
            n_results = self._partitions[self.results_topic]
            latest = self._now() + _MAX_FUTURE_MS
            for key, value, partition, when in built.results:
                # Results keep their request's partition number (co-partitioned topics) and
                # carry the event time as their timestamp: replay seeks by it.
                while True:
                    try:
                        producer.produce(
                            self.results_topic,
                            value,
                            key,
                            partition=partition % n_results,
                            timestamp=when if when <= latest else 0,
                        )
                        break
                    except BufferError:
                        producer.poll(0.05)
            for record, reason, detail in built.rejected:
                dl = dead_letter(
                    record.value,
                    max_bytes=topic_max_bytes(self.builder.max_bytes),
                    reason=reason,
                    detail=detail,
                    topic=record.topic,
                    partition=record.partition,
                    offset=record.offset,
                    key=record.key,
                )
                producer.produce(self.deadletter_topic, dl.value, dl.key, headers=list(dl.headers))
            for rid, entry in changes.items():
                if entry is None:
                    producer.produce(self.pairing_topic, None, rid.encode())
                else:
                    value, headers = entry.to_record()
                    producer.produce(self.pairing_topic, value, rid.encode(), headers=list(headers))
            if offsets:
                producer.send_offsets_to_transaction(
                    [TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                    self._consumer.consumer_group_metadata(),
                    _TXN_TIMEOUT_S,
                )
            producer.commit_transaction(_TXN_TIMEOUT_S)
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if isinstance(err, KafkaError) and err.fatal():
                # Fenced: another worker took this pipeline over (nothing of this batch was
                # committed, so it serves it); this one must not write again.
                raise ServiceError(
                    f"external pipeline {self.name}: the producer is fenced or unusable ({err}): "
                    "another worker serves this pipeline now"
                ) from exc
            self._restart(f"transaction failed ({err or exc})")
            return
        self.pairing.saved()
        self._failures = 0
        self.stats.batches += 1
        self.stats.messages += messages
        self.stats.results += len(built.results)
        PAIRS.labels(self.name).inc(len(built.results))
        for _record, reason, _detail in built.rejected:
            DEAD.labels(self.name, reason).inc()
            self.stats.dead_letters += 1
            self.stats.dead_letter_reasons[reason] = (
                self.stats.dead_letter_reasons.get(reason, 0) + 1
            )


def _bytes_headers(msg: Message) -> list[tuple[str, bytes | None]]:
    raw = msg.headers() or []
    items = list(raw.items()) if isinstance(raw, dict) else list(raw)
    return [(k, v.encode() if isinstance(v, str) else v) for k, v in items]


def run_external(
    pipelines: list[str],
    external: Mapping[str, Mapping[str, Any]],
    kafka: KafkaSettings,
    settings: WorkerSettings,
    log: Any = None,
) -> Any:
    """Serve one external pipeline (the ``driftline worker --pipeline NAME`` of one whose
    spec has ``models: []``); returns the worker's stats in the inference worker's form."""
    from driftline.errors import DriftlineError
    from driftline.streams._worker_core import WorkerStats

    if len(pipelines) != 1:
        names = ", ".join(p for p in pipelines if p in external)
        raise DriftlineError(
            f"--pipeline {', '.join(pipelines)}: {names} has no models (predictions made "
            "elsewhere); serve each such pipeline in a worker of its own: "
            f"`driftline worker --pipeline {next(p for p in pipelines if p in external)}`"
        )
    worker = ExternalWorker(kafka, settings, external[pipelines[0]])
    if log is not None:
        topics = ", ".join(worker.sides)
        log(
            f"worker for external pipeline {worker.name} (exactly-once): reading {topics} "
            f"({worker.source.format}) into {worker.results_topic}"
        )
    stats = worker.run()
    out = WorkerStats(
        batches=stats.batches,
        messages=stats.messages,
        rows=stats.results,
        dead_letters=stats.dead_letters,
        aborts=stats.restarts,
    )
    out.dead_letter_reasons.update(stats.dead_letter_reasons)
    return out
