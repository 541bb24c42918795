"""Serving a micro-batch again after its transaction failed.

A transient failure (a broker away, a coordinator moved) rewinds the batch to be read again.
A failure a retry cannot change (a record larger than its topic takes, say) would fail every
retry and hold the worker's every pipeline: the batch is served in halves, each in its own
transaction with a fresh producer, until the message at fault is alone; that one is
dead-lettered (``produce_failed``) and the rest served exactly once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from prometheus_client import Counter

from driftline.config import KafkaSettings
from driftline.streams._worker_core import BatchOutcome
from driftline.streams._worker_txn import _LAST_RESORT_BYTES, _TXN_TIMEOUT_S, _Batch, _permanent
from driftline.streams.codec import PRODUCE_FAILED, Rejection

if TYPE_CHECKING:
    from driftline.streams._worker_core import WorkerStats

log = logging.getLogger("driftline.worker")

SPLITS = Counter(
    "driftline_worker_transaction_splits",
    "Micro-batches served in smaller transactions after one failed for a permanent reason.",
)


class _Split:
    """The worker's handling of failed transactions (a mixin of
    :class:`~driftline.streams.worker.Worker`, which owns the clients and the loop)."""

    kafka: KafkaSettings
    exactly_once: bool
    stats: WorkerStats
    _producer: Producer | None
    _consumer: Consumer | None
    _in_txn: bool
    _limits: dict[str, int]

    if TYPE_CHECKING:

        def _score(self, msgs: list[Message], received: int) -> _Batch: ...
        def _done(self, batch: _Batch) -> None: ...
        def _recover(self, exc: KafkaException) -> None: ...
        def _rewind(self, groups: Iterable[list[Message]]) -> None: ...
        def _new_producer(self, wait: bool = False) -> Producer: ...
        def _pipeline_of(self, topic: str) -> str: ...
        def _record_limit(self, topic: str) -> int: ...
        def _commit(self, producer: Producer) -> None: ...
        def _produce_all(
            self, outputs: list[tuple[str, str, list[Message], BatchOutcome | None]]
        ) -> None: ...

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
