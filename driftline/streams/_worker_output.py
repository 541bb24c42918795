"""What the inference worker writes for a micro-batch: result records, keyed, partitioned and
stamped like their requests, and dead letters by the shared contract; each within its topic's
record size limit (see :mod:`driftline.streams.worker`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from itertools import repeat
from typing import Any

from confluent_kafka import KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient, ConfigResource

from driftline.config import KafkaSettings
from driftline.kafka.deadletter import (
    PRODUCER_MAX_BYTES,
    RECORD_OVERHEAD_BYTES,
    dead_letter,
    record_size,
)
from driftline.streams._worker_core import BatchOutcome, PipelineRuntime
from driftline.streams.codec import RESULT_TOO_LARGE, UNDEPLOYED_PIPELINE, Rejection

log = logging.getLogger("driftline.worker")

_MAX_FUTURE_MS = 30 * 60 * 1000
#: Room left in a record's size budget for its key and trace headers before a batch's results
#: are measured one by one.
_KEY_AND_TRACE_BYTES = 4096


class _Output:
    """The worker's writing side: the topics it writes and their limits (a mixin of
    :class:`~driftline.streams.worker.Worker`, which owns the clients)."""

    kafka: KafkaSettings
    _producer: Producer | None
    _known_topics: set[str]
    _partition_counts: dict[str, int]
    _limits: dict[str, int]
    _admin_client: AdminClient | None
    #: The producer's ``message.max.bytes``: librdkafka's default unless the Kafka options set
    #: one, raised (and the producer recreated) when a deployed spec allows larger records.
    _producer_max: int

    def _base_producer_bytes(self) -> int:
        return int(self.kafka.kafka_options.get("message.max.bytes", PRODUCER_MAX_BYTES))

    def _wanted_producer_bytes(self, runtimes: Iterable[PipelineRuntime]) -> int:
        """The producer limit the deployed pipelines need: a spec whose
        ``options.max_message_bytes`` exceeds the base limit gets its topics' record size."""
        from driftline.streams.control import topic_max_bytes

        base = self._base_producer_bytes()
        asked = [r.max_message_bytes for r in runtimes if r.max_message_bytes]
        return max([base, *(topic_max_bytes(b) for b in asked if b > base)])

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
            limit = self._producer_max
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
