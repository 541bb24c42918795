"""The guarantees the rest of driftline is built on, proven on the real broker and Redis."""

from __future__ import annotations

import time
import uuid

import pytest
import redis
from confluent_kafka import Consumer, Producer, TopicPartition

pytestmark = pytest.mark.integration


def _read_all(config: dict[str, object], topic: str, expect_at_least: int = 0) -> list[bytes]:
    consumer = Consumer(config)
    consumer.assign([TopicPartition(topic, 0, 0)])
    values: list[bytes] = []
    deadline = time.monotonic() + 15
    idle = 0
    while time.monotonic() < deadline:
        msgs = consumer.consume(100, 0.5)
        if not msgs:
            idle += 1
            if len(values) >= expect_at_least and idle >= 3:
                break
            continue
        idle = 0
        values.extend(m.value() for m in msgs if m.error() is None)
    consumer.close()
    return values


def _txn_producer(kafka_config, unique: str) -> Producer:  # type: ignore[no-untyped-def]
    producer = Producer(kafka_config(**{"transactional.id": f"test-{unique}-{uuid.uuid4()}"}))
    producer.init_transactions(30)
    return producer


def test_transactions_commit_and_abort_and_read_committed(kafka_config, topic_factory, unique):  # type: ignore[no-untyped-def]
    topic = topic_factory("txn")
    producer = _txn_producer(kafka_config, unique)

    producer.begin_transaction()
    for i in range(5):
        producer.produce(topic, f"committed-{i}".encode())
    producer.commit_transaction(30)

    producer.begin_transaction()
    for i in range(5):
        producer.produce(topic, f"aborted-{i}".encode())
    producer.flush(30)  # the aborted records really reach the log before the abort marker
    producer.abort_transaction(30)

    producer.begin_transaction()
    producer.produce(topic, b"committed-last")
    producer.commit_transaction(30)

    base = {"group.id": f"g-{unique}", "enable.auto.commit": False}
    committed = _read_all(
        kafka_config(**base, **{"isolation.level": "read_committed"}), topic, expect_at_least=6
    )
    assert committed == [f"committed-{i}".encode() for i in range(5)] + [b"committed-last"]

    everything = _read_all(
        kafka_config(**base, **{"isolation.level": "read_uncommitted"}), topic, expect_at_least=11
    )
    assert sorted(v for v in everything if v.startswith(b"aborted")) == [
        f"aborted-{i}".encode() for i in range(5)
    ]


def test_send_offsets_to_transaction_moves_group_offsets_only_on_commit(
    kafka_config, topic_factory, unique
):  # type: ignore[no-untyped-def]
    source = topic_factory("src")
    sink = topic_factory("sink")
    plain = Producer(kafka_config())
    for i in range(10):
        plain.produce(source, str(i).encode())
    assert plain.flush(30) == 0

    group = f"g-{unique}"
    consumer = Consumer(
        kafka_config(
            **{
                "group.id": group,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
                "session.timeout.ms": 6000,
            }
        )
    )
    consumer.subscribe([source])
    got: list = []
    deadline = time.monotonic() + 30
    while len(got) < 10 and time.monotonic() < deadline:
        got.extend(m for m in consumer.consume(10, 1.0) if m.error() is None)
    assert len(got) == 10

    producer = _txn_producer(kafka_config, unique)

    def committed_offset() -> int:
        (tp,) = consumer.committed([TopicPartition(source, 0)], timeout=15)
        return tp.offset

    # Aborted: the group's offset does not move.
    producer.begin_transaction()
    producer.produce(sink, b"x")
    producer.send_offsets_to_transaction(
        [TopicPartition(source, 0, 5)], consumer.consumer_group_metadata(), 30
    )
    producer.abort_transaction(30)
    assert committed_offset() < 0  # nothing committed yet (OFFSET_INVALID)

    # Committed: it moves to exactly the offset sent.
    producer.begin_transaction()
    producer.produce(sink, b"y")
    producer.send_offsets_to_transaction(
        [TopicPartition(source, 0, 7)], consumer.consumer_group_metadata(), 30
    )
    producer.commit_transaction(30)
    assert committed_offset() == 7
    consumer.close()

    sink_values = _read_all(
        kafka_config(**{"group.id": f"r-{unique}", "isolation.level": "read_committed"}),
        sink,
        expect_at_least=1,
    )
    assert sink_values == [b"y"]


# A batch of HINCRBYs applied atomically together with a per-(topic, partition) offset guard:
# KEYS[1] is the guard hash; ARGV = topic-partition field, batch's last offset, then
# (key, field, increment) triples. Returns 0 when the batch was already applied.
_APPLY = """
local last = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '-1')
local upto = tonumber(ARGV[2])
if upto <= last then return 0 end
for i = 3, #ARGV, 3 do
  redis.call('HINCRBY', ARGV[i], ARGV[i + 1], ARGV[i + 2])
end
redis.call('HSET', KEYS[1], ARGV[1], upto)
return 1
"""


def test_redis_lua_batch_with_offset_guard_is_atomic_and_idempotent(redis_client, redis_prefix):  # type: ignore[no-untyped-def]
    apply = redis_client.register_script(_APPLY)
    guard = f"{redis_prefix}:{{p}}:offsets"
    bucket = f"{redis_prefix}:{{p}}:bucket:1"
    batch = []
    for i in range(100):
        batch += [bucket, f"bin{i % 5}", 1]

    assert apply(keys=[guard], args=["results:0", 99, *batch]) == 1
    assert apply(keys=[guard], args=["results:0", 99, *batch]) == 0  # redelivered: refused
    assert apply(keys=[guard], args=["results:0", 50, *batch]) == 0  # older: refused
    counts = {k.decode(): int(v) for k, v in redis_client.hgetall(bucket).items()}
    assert counts == {f"bin{i}": 20 for i in range(5)}

    # Another partition has its own guard.
    assert apply(keys=[guard], args=["results:1", 10, bucket, "bin0", 3]) == 1
    assert int(redis_client.hget(bucket, "bin0")) == 23

    # A script error stops before the guard moves, so the batch can be retried. (Redis does
    # not roll back increments made before an error, so callers validate batches first.)
    with pytest.raises(redis.ResponseError):
        apply(keys=[guard], args=["results:0", 200, bucket, "bin0", "not-a-number"])
    assert int(redis_client.hget(guard, "results:0")) == 99
