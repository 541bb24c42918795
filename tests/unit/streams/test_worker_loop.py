"""The worker's transaction handling, with fake Kafka clients: commit, abort and rewind,
fatal errors, retries, dead letters and the at-least-once path."""

from __future__ import annotations

import time
from typing import Any, Literal

import numpy as np
import orjson
import pytest
from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition

from driftline.config import KafkaSettings, WorkerSettings
from driftline.errors import ServiceError
from driftline.streams.worker import PipelineRuntime, RuntimeModel, StaticSource, Worker

pytestmark = pytest.mark.unit


class _Model:
    def run(self, x: np.ndarray) -> list[np.ndarray]:
        return [x[:, :1] * 0.5]


class _Producer:
    def __init__(self, fail_commit: list[KafkaError] | None = None) -> None:
        self.fail_commit = list(fail_commit or [])
        self.produced: list[tuple[str, bytes | None, bytes | None, Any]] = []
        self.timestamps: list[int] = []
        self.partitions: list[int] = []
        self.log: list[str] = []
        self.offsets: list[TopicPartition] = []

    def begin_transaction(self) -> None:
        self.log.append("begin")

    # confluent-kafka's own parameter order: the worker passes some positionally.
    def produce(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int = -1,
        on_delivery: Any = None,
        callback: Any = None,
        timestamp: int = 0,
        headers: Any = None,
    ) -> None:
        assert on_delivery is None and callback is None
        self.produced.append((topic, value, key, headers))
        self.timestamps.append(timestamp)
        self.partitions.append(partition)

    def send_offsets_to_transaction(
        self, offsets: list[TopicPartition], meta: Any, timeout: float
    ) -> None:
        self.offsets = offsets
        self.log.append("offsets")

    def commit_transaction(self, timeout: float) -> None:
        if self.fail_commit:
            raise KafkaException(self.fail_commit.pop(0))
        self.log.append("commit")

    def abort_transaction(self, timeout: float) -> None:
        self.log.append("abort")

    def flush(self, timeout: float) -> int:
        self.log.append("flush")
        return 0

    def poll(self, timeout: float) -> int:
        return 0


class _Consumer:
    def __init__(self) -> None:
        self.seeks: list[tuple[str, int, int]] = []
        self.commits: list[list[TopicPartition]] = []

    def consumer_group_metadata(self) -> object:
        return object()

    def seek(self, tp: TopicPartition) -> None:
        self.seeks.append((tp.topic, tp.partition, tp.offset))

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> None:
        self.commits.append(offsets)


def _json(value: bytes | None) -> Any:
    assert value is not None
    return orjson.loads(value)


KAFKA = KafkaSettings(topic_prefix="t")
#: A recent event time: within the worker's accepted range (90 days back by default).
T0 = (int(time.time()) - 3600) * 1000
REQ = KAFKA.topic("fraud", "requests")


def _worker(
    producer: _Producer,
    guarantee: Literal["exactly-once", "at-least-once"] = "exactly-once",
    **settings: Any,
) -> tuple[Worker, _Consumer]:
    runtime = PipelineRuntime(
        name="fraud",
        version="sha256:v",
        models=(RuntimeModel("m", "sha256:m", _Model()),),
        validations={"low": lambda t: t[("m", "outputs")][0][:, 0] < 1.0},
        input_width=2,
    )
    w = Worker(
        KAFKA,
        WorkerSettings(worker_guarantee=guarantee, worker_id="x", **settings),
        StaticSource([runtime]),
    )
    w._apply_changes(w.source.snapshot().items())
    consumer = _Consumer()
    w._consumer, w._producer = consumer, producer  # type: ignore[assignment]
    w._known_topics.update(
        KAFKA.topic(p, k) for p in ("fraud", "ghost") for k in ("results", "deadletter")
    )
    w._limits.update(
        {
            KAFKA.topic(p, k): 1_000_000
            for p in ("fraud", "ghost")
            for k in ("results", "deadletter")
        }
    )
    return w, consumer


def _msgs() -> list[Message]:
    return [
        Message(
            topic=REQ,
            partition=0,
            offset=10,
            key=b"a",
            value=orjson.dumps({"tensor": [[1, 2], [3, 4]]}),
        ),
        Message(topic=REQ, partition=1, offset=7, key=None, value=b"broken"),
        Message(
            topic=REQ,
            partition=0,
            offset=11,
            key=b"c",
            value=orjson.dumps({"id": "c1", "tensor": [[0.5, 0]]}),
        ),
        Message(
            topic=KAFKA.topic("ghost", "requests"), partition=0, offset=3, key=b"g", value=b"{}"
        ),
    ]


def test_a_batch_commits_results_dead_letters_and_offsets_in_one_transaction() -> None:
    producer = _Producer()
    w, consumer = _worker(producer)
    w._serve(_msgs())
    w._finish_pending()
    assert producer.log == ["begin", "offsets", "commit"]
    results = [
        (k, _json(v)) for t, v, k, _ in producer.produced if t == KAFKA.topic("fraud", "results")
    ]
    assert [(k, e["id"], e["row"]) for k, e in results] == [
        (b"a", "a", 0),
        (b"a", "a", 1),
        (b"c", "c1", 0),
    ]
    assert [e["check_failures"] for _, e in results] == [[], ["low"], []]
    # Result records carry the event time as their Kafka timestamp (replay seeks by it).
    result_ts = [
        ts
        for (t, _, _, _), ts in zip(producer.produced, producer.timestamps, strict=True)
        if t == KAFKA.topic("fraud", "results")
    ]
    assert result_ts == [e["time"] for _, e in results]
    assert all(ts > 0 for ts in result_ts)
    dead = [(t, v, k, dict(h)) for t, v, k, h in producer.produced if t.endswith("deadletter")]
    assert [(d[0], d[3]["driftline-error"]) for d in dead] == [
        (KAFKA.topic("fraud", "deadletter"), b"malformed_json"),
        (KAFKA.topic("ghost", "deadletter"), b"undeployed_pipeline"),
    ]
    assert dead[0][1] == b"broken" and dead[0][3]["driftline-source-offset"] == b"7"
    assert dead[0][3]["driftline-source-partition"] == b"1"
    assert sorted((tp.topic, tp.partition, tp.offset) for tp in producer.offsets) == sorted(
        [(REQ, 0, 12), (REQ, 1, 8), (KAFKA.topic("ghost", "requests"), 0, 4)]
    )
    assert consumer.seeks == []
    assert w.stats.rows == 3 and w.stats.dead_letters == 2 and w.stats.messages == 4


def test_abortable_error_aborts_and_rewinds_to_the_batch_start() -> None:
    producer = _Producer([KafkaError(KafkaError._STATE, "x", txn_requires_abort=True)])
    w, consumer = _worker(producer)
    w._serve(_msgs())
    w._finish_pending()
    assert producer.log == ["begin", "offsets", "abort"]
    assert sorted(consumer.seeks) == sorted(
        [(REQ, 0, 10), (REQ, 1, 7), (KAFKA.topic("ghost", "requests"), 0, 3)]
    )
    assert w.stats.aborts == 1 and w.stats.rows == 0 and w.stats.batches == 0
    # Served again after the rewind: this time it commits.
    w._serve(_msgs())
    w._finish_pending()
    assert producer.log[-1] == "commit" and w.stats.rows == 3


def test_fatal_error_recreates_the_producer_and_rewinds(monkeypatch: pytest.MonkeyPatch) -> None:
    producer = _Producer([KafkaError(KafkaError._FENCED, "fenced", fatal=True)])
    w, consumer = _worker(producer)
    fresh = _Producer()
    monkeypatch.setattr(w, "_new_producer", lambda wait=False: fresh)
    w._serve(_msgs())
    w._finish_pending()
    assert "abort" not in producer.log
    assert w._producer is fresh and w.stats.producer_restarts == 1
    assert len(consumer.seeks) == 3


def test_retriable_commit_error_is_retried_without_abort() -> None:
    producer = _Producer([KafkaError(KafkaError._TIMED_OUT, "slow", retriable=True)])
    w, consumer = _worker(producer)
    w._serve(_msgs())
    w._finish_pending()
    assert producer.log == ["begin", "offsets", "commit"]
    assert consumer.seeks == [] and w.stats.aborts == 0


def test_at_least_once_flushes_before_committing_offsets() -> None:
    producer = _Producer()
    w, consumer = _worker(producer, "at-least-once")
    w._serve(_msgs())
    w._finish_pending()
    assert producer.log == ["flush"]
    assert len(consumer.commits) == 1
    assert sorted((tp.partition, tp.offset) for tp in consumer.commits[0] if tp.topic == REQ) == [
        (0, 12),
        (1, 8),
    ]


def test_changes_apply_between_batches() -> None:
    w, _ = _worker(_Producer())
    assert set(w._runtimes) == {"fraud"}
    w._apply_changes([("fraud", None)])
    assert w._runtimes == {}


def test_metrics_count_requests_rows_checks_and_dead_letters() -> None:
    from prometheus_client import REGISTRY

    def value(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    before = {
        "req": value("driftline_worker_requests_total", pipeline="fraud"),
        "rows": value("driftline_worker_rows_total", pipeline="fraud"),
        "low": value("driftline_worker_check_failures_total", pipeline="fraud", validation="low"),
        "bad": value(
            "driftline_worker_dead_letters_total", pipeline="fraud", reason="malformed_json"
        ),
        "ghost": value(
            "driftline_worker_dead_letters_total", pipeline="ghost", reason="undeployed_pipeline"
        ),
        "aborts": value("driftline_worker_transaction_aborts_total", kind="abort"),
    }
    producer = _Producer([KafkaError(KafkaError._STATE, "x", txn_requires_abort=True)])
    w, _ = _worker(producer)
    w._serve(_msgs())  # aborted: counts only the abort
    w._finish_pending()
    w._serve(_msgs())
    w._finish_pending()
    assert value("driftline_worker_requests_total", pipeline="fraud") - before["req"] == 3
    assert value("driftline_worker_rows_total", pipeline="fraud") - before["rows"] == 3
    assert (
        value("driftline_worker_check_failures_total", pipeline="fraud", validation="low")
        - before["low"]
        == 1
    )
    assert (
        value("driftline_worker_dead_letters_total", pipeline="fraud", reason="malformed_json")
        - before["bad"]
        == 1
    )
    assert (
        value("driftline_worker_dead_letters_total", pipeline="ghost", reason="undeployed_pipeline")
        - before["ghost"]
        == 1
    )
    assert value("driftline_worker_transaction_aborts_total", kind="abort") - before["aborts"] == 1


def test_event_times_the_broker_would_refuse_do_not_become_record_timestamps() -> None:
    producer = _Producer()
    # An operator may admit any event time; the record timestamp must still be one the
    # broker accepts.
    w, _ = _worker(producer, worker_max_event_age_ms=10**14, worker_max_event_skew_ms=10**14)
    far_future = 4_102_444_800_000  # 2100-01-01, beyond the broker's accepted skew
    msgs = [
        Message(
            topic=REQ,
            partition=0,
            offset=1,
            key=b"f",
            value=orjson.dumps({"time": far_future, "tensor": [[1, 2]]}),
        ),
        Message(
            topic=REQ,
            partition=0,
            offset=2,
            key=b"n",
            value=orjson.dumps({"time": -5, "tensor": [[1, 2]]}),
        ),
        Message(
            topic=REQ,
            partition=0,
            offset=3,
            key=b"o",
            value=orjson.dumps({"time": T0, "tensor": [[1, 2]]}),
        ),
    ]
    w._serve(msgs)
    w._finish_pending()
    assert producer.log[-1] == "commit"
    events = [_json(v) for t, v, _, _ in producer.produced if t.endswith("results")]
    assert [e["time"] for e in events] == [far_future, -5, T0]
    assert producer.timestamps == [0, 0, T0]


def test_a_failed_commit_discards_the_batch_scored_meanwhile_and_rewinds_both() -> None:
    producer = _Producer([KafkaError(KafkaError._STATE, "x", txn_requires_abort=True)])
    w, consumer = _worker(producer)
    w._serve(_msgs()[:2])  # produced; its commit runs in the background and fails
    later = [
        Message(
            topic=REQ, partition=0, offset=12, key=b"d", value=orjson.dumps({"tensor": [[1, 1]]})
        ),
        Message(
            topic=REQ, partition=2, offset=40, key=b"e", value=orjson.dumps({"tensor": [[1, 1]]})
        ),
    ]
    produced_before = len(producer.produced)
    w._serve(later)  # scored, then dropped: the previous transaction was aborted
    assert len(producer.produced) == produced_before
    assert producer.log == ["begin", "offsets", "abort"]
    assert sorted(consumer.seeks) == [(REQ, 0, 10), (REQ, 1, 7), (REQ, 2, 40)]
    assert w.stats.batches == 0


@pytest.mark.parametrize("co_partitioned", [True, False])
def test_one_row_requests_keep_key_partition_and_event_time_per_record(
    co_partitioned: bool,
) -> None:
    producer = _Producer()
    w, _ = _worker(producer)
    results_topic = KAFKA.topic("fraud", "results")
    w._partition_counts.update({REQ: 3, results_topic: 3 if co_partitioned else 5})
    docs: list[dict[str, Any]] = [
        {"id": "i0", "time": T0 + 5, "tensor": [[1, 2]]},
        {"tensor": [[3, 4]]},
        {"id": 7, "time": T0 + 1, "tensor": [[5, 6]]},
        {"id": "i3", "tensor": [[7, 8]]},
    ]
    keys = [b"k0", None, None, b""]
    msgs = [
        Message(topic=REQ, partition=i % 3, offset=100 + i, key=k, value=orjson.dumps(d))
        for i, (d, k) in enumerate(zip(docs, keys, strict=True))
    ]
    w._serve(msgs)
    w._finish_pending()
    assert producer.log[-1] == "commit"
    out = [
        (k, _json(v), ts, part)
        for (t, v, k, _), ts, part in zip(
            producer.produced, producer.timestamps, producer.partitions, strict=True
        )
        if t == results_topic
    ]
    # A record without a Kafka key is keyed by the request id (or the default id).
    assert [k for k, _, _, _ in out] == [b"k0", f"{REQ}:1:101".encode(), b"7", b"i3"]
    assert [e["id"] for _, e, _, _ in out] == ["i0", f"{REQ}:1:101", "7", "i3"]
    assert [e["inputs"] for _, e, _, _ in out] == [d["tensor"][0] for d in docs]
    assert [ts for _, _, ts, _ in out] == [e["time"] for _, e, _, _ in out]
    assert out[0][2] == T0 + 5 and out[2][2] == T0 + 1
    expected = [0, 1, 2, 0] if co_partitioned else [-1] * 4
    assert [part for _, _, _, part in out] == expected


def test_trace_context_follows_a_request_to_its_results_and_dead_letters() -> None:
    producer = _Producer()
    w, _ = _worker(producer)
    trace = ("traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    msgs = [
        Message(
            topic=REQ,
            partition=0,
            offset=1,
            key=b"a",
            value=orjson.dumps({"tensor": [[1, 2], [3, 4]]}),
            headers=[trace, ("other", b"x")],
        ),
        Message(topic=REQ, partition=0, offset=2, key=b"b", value=b"broken", headers=[trace]),
        Message(
            topic=REQ, partition=0, offset=3, key=b"c", value=orjson.dumps({"tensor": [[5, 6]]})
        ),
    ]
    w._serve(msgs)
    by_key = [(t.rsplit(".", 1)[1], k, h) for t, _, k, h in producer.produced]
    results = [(k, h) for kind, k, h in by_key if kind == "results"]
    assert results == [(b"a", [trace]), (b"a", [trace]), (b"c", None)]
    (dead,) = [h for kind, _, h in by_key if kind == "deadletter"]
    assert trace in dead and ("driftline-error", b"malformed_json") in dead


class _InitProducer:
    """Stands for a producer whose ``init_transactions`` times out ``failures`` times."""

    def __init__(self, failures: int) -> None:
        self.calls = 0
        self.failures = failures

    def init_transactions(self, _timeout: float) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "broker away"))


def test_a_replacement_producer_waits_for_the_broker_and_stop_ends_the_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import driftline.streams.worker as worker_mod

    w, _ = _worker(_Producer())
    made: list[_InitProducer] = []
    monkeypatch.setattr(
        worker_mod, "Producer", lambda _c: made.append(_InitProducer(2)) or made[-1]
    )
    monkeypatch.setattr(w._stop, "wait", lambda _delay: False)  # no real pause
    assert w._new_producer(wait=True).calls == 3  # two timeouts, then served
    with pytest.raises(ServiceError, match="cannot initialise transactions"):
        w._new_producer()  # at start an unreachable broker is an error at once
    monkeypatch.setattr(w._stop, "wait", lambda _delay: True)  # stop() during the pause
    with pytest.raises(ServiceError, match="stopped while waiting"):
        w._new_producer(wait=True)
    assert made[-1].calls == 1


def test_a_dead_letter_copy_too_large_for_its_topic_is_truncated_not_retried() -> None:
    producer = _Producer()
    w, consumer = _worker(producer)
    w._limits[KAFKA.topic("fraud", "deadletter")] = 50_000
    huge = orjson.dumps({"tensor": [[1.0] * 200_000]})  # wrong width, ~800 kB
    msgs = [
        Message(topic=REQ, partition=0, offset=1, key=b"big", value=huge),
        Message(
            topic=REQ, partition=0, offset=2, key=b"ok", value=orjson.dumps({"tensor": [[1, 2]]})
        ),
    ]
    w._serve(msgs)
    w._finish_pending()
    assert producer.log == ["begin", "offsets", "commit"] and consumer.seeks == []
    (dead,) = [(v, k, dict(h)) for t, v, k, h in producer.produced if t.endswith("deadletter")]
    value, key, headers = dead
    assert key == b"big" and headers["driftline-error"] == b"wrong_width"
    assert headers["driftline-truncated"] == str(len(huge)).encode()
    assert value is not None and huge.startswith(value) and len(value) < 50_000
    assert [k for t, _, k, _ in producer.produced if t.endswith("results")] == [b"ok"]


def test_poisoned_requests_are_dead_lettered_with_reasons_and_the_batch_commits() -> None:
    producer = _Producer()
    w, consumer = _worker(producer)
    now = int(time.time() * 1000)
    poison = {
        b"huge-int": b'{"tensor": [[1, ' + b"9" * 400 + b"]]}",
        b"brackets": b"[" * 100_000,
        b"deep": b'{"tensor": ' + b"[" * 5000 + b"1" + b"]" * 5000 + b"}",
        b"inf": b'{"tensor": [[1, 1e999]]}',
        b"year-3000": orjson.dumps({"time": 32_503_680_000_000, "tensor": [[1, 2]]}),
        b"too-old": orjson.dumps({"time": now - 91 * 24 * 3600 * 1000, "tensor": [[1, 2]]}),
        b"too-soon": orjson.dumps({"time": now + 2 * 24 * 3600 * 1000, "tensor": [[1, 2]]}),
    }
    msgs = []
    for i, (key, value) in enumerate(poison.items()):
        msgs.append(Message(topic=REQ, partition=0, offset=2 * i, key=key, value=value))
        good = orjson.dumps({"time": now - 30 * 24 * 3600 * 1000, "tensor": [[1, 2]]})
        msgs.append(Message(topic=REQ, partition=0, offset=2 * i + 1, key=b"ok%d" % i, value=good))
    w._serve(msgs)
    w._finish_pending()
    assert producer.log == ["begin", "offsets", "commit"] and consumer.seeks == []
    dead = {k: dict(h)["driftline-error"] for t, _, k, h in producer.produced if "dead" in t}
    assert dead == {
        b"huge-int": b"number_out_of_range",
        b"brackets": b"too_deep",
        b"deep": b"too_deep",
        b"inf": b"number_out_of_range",
        b"year-3000": b"time_out_of_range",
        b"too-old": b"time_out_of_range",
        b"too-soon": b"time_out_of_range",
    }
    served = [k for t, _, k, _ in producer.produced if t.endswith("results")]
    assert served == [b"ok%d" % i for i in range(len(poison))]


class _SizeLimitedBroker(_Producer):
    """A transactional producer whose broker refuses any result record holding ``marker``
    (as it refuses a record over the topic's max.message.bytes): the commit fails with
    MSG_SIZE_TOO_LARGE and must be aborted, however often it is tried."""

    def __init__(self, marker: bytes) -> None:
        super().__init__()
        self.marker = marker
        self.txn: list[tuple[str, bytes | None, bytes | None, Any]] = []
        self.committed: list[tuple[str, bytes | None, bytes | None, Any]] = []
        self.committed_offsets: list[list[tuple[str, int, int]]] = []

    def begin_transaction(self) -> None:
        super().begin_transaction()
        self.txn = []

    def produce(self, topic: str, value: bytes | None = None, *args: Any, **kw: Any) -> None:
        super().produce(topic, value, *args, **kw)
        self.txn.append(self.produced[-1])

    def commit_transaction(self, timeout: float) -> None:
        if any(t.endswith("results") and self.marker in (v or b"") for t, v, _, _ in self.txn):
            raise KafkaException(
                KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "too large", txn_requires_abort=True)
            )
        super().commit_transaction(timeout)
        self.committed += self.txn
        self.committed_offsets.append([(o.topic, o.partition, o.offset) for o in self.offsets])


def test_a_transaction_failing_for_a_permanent_reason_is_split_until_the_culprit_is_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    producer = _SizeLimitedBroker(marker=b"[666.0,")
    w, consumer = _worker(producer)
    monkeypatch.setattr(w, "_new_producer", lambda wait=False: producer)
    msgs = [
        Message(
            topic=REQ,
            partition=i % 2,
            offset=100 + i,
            key=b"k%d" % i,
            value=orjson.dumps({"tensor": [[666 if i == 5 else i, 1]]}),
        )
        for i in range(8)
    ]
    w._serve(msgs)
    w._finish_pending()
    # Never retried forever: every healthy request served once, the culprit dead-lettered once.
    served = [k for t, _, k, _ in producer.committed if t.endswith("results")]
    assert sorted(served) == sorted(b"k%d" % i for i in range(8) if i != 5)
    dead = [(k, dict(h)) for t, _, k, h in producer.committed if t.endswith("deadletter")]
    assert [(k, h["driftline-error"]) for k, h in dead] == [(b"k5", b"produce_failed")]
    assert b"MSG_SIZE_TOO_LARGE" in dead[0][1]["driftline-detail"]
    assert consumer.seeks == []  # nothing to read again
    # Offsets were committed in order per partition, ending past the batch.
    last: dict[tuple[str, int], int] = {}
    for offsets in producer.committed_offsets:
        for topic, part, off in offsets:
            assert off > last.get((topic, part), 0)
            last[(topic, part)] = off
    assert last == {(REQ, 0): 107, (REQ, 1): 108}
    assert w.stats.dead_letter_reasons["produce_failed"] == 1 and w.stats.rows == 7


def test_a_permanent_failure_then_a_transient_one_rewinds_what_is_left(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    producer = _SizeLimitedBroker(marker=b"[666.0,")
    w, consumer = _worker(producer)
    monkeypatch.setattr(w, "_new_producer", lambda wait=False: producer)
    msgs = [
        Message(
            topic=REQ,
            partition=0,
            offset=i,
            key=b"k%d" % i,
            value=orjson.dumps({"tensor": [[666 if i == 0 else i, 1]]}),
        )
        for i in range(4)
    ]
    real_commit = producer.commit_transaction
    calls = {"n": 0}

    def flaky(timeout: float) -> None:
        calls["n"] += 1
        if calls["n"] == 2:  # the first half's transaction meets a broker going away
            raise KafkaException(KafkaError(KafkaError._TRANSPORT, "gone", txn_requires_abort=True))
        real_commit(timeout)

    monkeypatch.setattr(producer, "commit_transaction", flaky)
    w._serve(msgs)
    w._finish_pending()
    assert consumer.seeks == [(REQ, 0, 0)]  # the whole batch is read again, none skipped
    assert producer.committed == []


def test_an_unexpected_error_in_one_pipeline_dead_letters_its_requests_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import driftline.streams.worker as worker_mod

    producer = _Producer()
    w, consumer = _worker(producer)
    other = PipelineRuntime(
        name="ghost",
        version="sha256:g",
        models=(RuntimeModel("m", "sha256:m", _Model()),),
        input_width=2,
    )
    w._apply_changes([("ghost", other)])
    real = worker_mod.process_batch

    def broken_for_fraud(runtime: PipelineRuntime, *a: Any, **kw: Any) -> Any:
        if runtime.name == "fraud":
            raise RuntimeError("a bug in serving fraud")
        return real(runtime, *a, **kw)

    monkeypatch.setattr(worker_mod, "process_batch", broken_for_fraud)
    ghost_req = KAFKA.topic("ghost", "requests")
    msgs = [
        Message(
            topic=REQ, partition=0, offset=1, key=b"f", value=orjson.dumps({"tensor": [[1, 2]]})
        ),
        Message(
            topic=ghost_req,
            partition=0,
            offset=1,
            key=b"g",
            value=orjson.dumps({"tensor": [[1, 2]]}),
        ),
    ]
    w._serve(msgs)
    w._finish_pending()
    assert producer.log == ["begin", "offsets", "commit"] and consumer.seeks == []
    out = {k: (t.split(".")[1:], dict(h or [])) for t, _, k, h in producer.produced}
    assert set(out) == {b"f", b"g"}
    assert out[b"g"][0] == ["ghost", "results"]
    assert out[b"f"][0] == ["fraud", "deadletter"]
    assert out[b"f"][1]["driftline-error"] == b"pipeline_error"
    assert b"a bug in serving fraud" in out[b"f"][1]["driftline-detail"]


def test_a_result_too_large_for_its_topic_is_dead_lettered_before_it_is_produced() -> None:
    producer = _Producer()
    w, consumer = _worker(producer)
    w._limits[KAFKA.topic("fraud", "results")] = 6000
    wide = PipelineRuntime(
        name="fraud",
        version="sha256:w",
        models=(RuntimeModel("m", "sha256:m", _Model()),),
    )
    w._apply_changes([("fraud", wide)])
    big = orjson.dumps({"tensor": [[0.123456789] * 1000]})  # ~13 kB of result, ~4 kB small
    msgs = [
        Message(topic=REQ, partition=0, offset=1, key=b"big", value=big),
        Message(
            topic=REQ,
            partition=0,
            offset=2,
            key=b"small",
            value=orjson.dumps({"tensor": [[1.0] * 1000]}),
        ),
    ]
    w._serve(msgs)
    w._finish_pending()
    assert producer.log == ["begin", "offsets", "commit"] and consumer.seeks == []
    dead = [(k, dict(h)) for t, _, k, h in producer.produced if t.endswith("deadletter")]
    assert [(k, h["driftline-error"]) for k, h in dead] == [(b"big", b"result_too_large")]
    assert [k for t, _, k, _ in producer.produced if t.endswith("results")] == [b"small"]
    assert w.stats.rows == 1


def test_a_consumer_error_in_a_batch_is_logged_and_the_messages_served() -> None:
    # KafkaError == None raised inside list.count, which surfaced as a SystemError.
    producer = _Producer()
    w, _ = _worker(producer)
    msgs = [
        Message(
            topic=REQ, partition=0, offset=1, key=b"a", value=orjson.dumps({"tensor": [[1, 2]]})
        ),
        Message(topic=REQ, partition=0, error=KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART)),
    ]
    w._serve(msgs)
    w._finish_pending()
    assert producer.log[-1] == "commit"
    assert [k for t, _, k, _ in producer.produced if t.endswith("results")] == [b"a"]


def test_a_pipeline_named_twice_is_subscribed_once() -> None:
    w = Worker(KAFKA, WorkerSettings(worker_id="x"), StaticSource(), ["fraud", "fraud", "b"])
    assert w.pipelines == ["fraud", "b"]


def test_at_least_once_a_record_the_producer_refuses_is_isolated_and_dead_lettered() -> None:
    class Refusing(_Producer):
        # librdkafka refuses a record over message.max.bytes in produce() itself.
        def produce(self, topic: str, value: bytes | None = None, *a: Any, **kw: Any) -> None:
            if topic.endswith("results") and b"[666.0," in (value or b""):
                raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "too large"))
            super().produce(topic, value, *a, **kw)

    producer = Refusing()
    w, consumer = _worker(producer, "at-least-once")
    msgs = [
        Message(
            topic=REQ,
            partition=0,
            offset=i,
            key=b"k%d" % i,
            value=orjson.dumps({"tensor": [[666 if i == 2 else i, 1]]}),
        )
        for i in range(5)
    ]
    w._serve(msgs)
    assert consumer.seeks == []
    results = [k for t, _, k, _ in producer.produced if t.endswith("results")]
    # At least once: what was produced before the refusal may come again, none is lost.
    assert set(results) == {b"k0", b"k1", b"k3", b"k4"}
    dead = [(k, dict(h)["driftline-error"]) for t, _, k, h in producer.produced if "dead" in t]
    assert dead == [(b"k2", b"produce_failed")]
    assert max(tp.offset for c in consumer.commits for tp in c) == 5


def test_a_pipeline_failure_is_logged_once_per_version_not_once_per_batch(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Labels:
        """Class probabilities as one dict per row, which a result cannot carry."""

        def run(self, x: np.ndarray) -> list[np.ndarray]:
            maps = np.empty((x.shape[0], 1), dtype=object)
            maps[:, 0] = [{"setosa": 1.0} for _ in range(x.shape[0])]
            return [maps]

    def version(v: str) -> PipelineRuntime:
        return PipelineRuntime(
            name="fraud", version=v, models=(RuntimeModel("clf", "sha256:c", Labels()),)
        )

    producer = _Producer()
    w, _ = _worker(producer)
    w._apply_changes([("fraud", version("sha256:1"))])
    request = orjson.dumps({"tensor": [[1, 2]]})
    with caplog.at_level("ERROR", logger="driftline.worker"):
        for offset in range(3):
            w._serve([Message(topic=REQ, partition=0, offset=offset, key=b"k", value=request)])
            w._finish_pending()
        w._apply_changes([("fraud", version("sha256:2"))])  # a redeploy that still fails
        w._serve([Message(topic=REQ, partition=0, offset=3, key=b"k", value=request)])
        w._finish_pending()
    lines = [r.getMessage() for r in caplog.records if r.name == "driftline.worker"]
    assert len(lines) == 2
    assert all("unserializable_output" in line and "'clf'" in line for line in lines)
    assert w.stats.dead_letter_reasons["unserializable_output"] == 4
