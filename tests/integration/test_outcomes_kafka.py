"""The performance join fed from real Kafka topics, restarted mid-stream, state in real Redis.

What a monitor does per micro-batch: split the records into predictions (results topic) and
labels (feedback topic), dead-letter malformed feedback, ``apply`` both in one Redis script
call, then ``close`` / produce / ``confirm`` and commit the offsets. Five times in the run the
process "dies" between applying a batch and committing its offsets: a new consumer in the
same group and a new join read those batches again, and the offset guard skips them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, Producer

from driftline.expressions import parse
from driftline.performance import BinaryEstimator, BinaryLayout
from driftline.streams._feedback_io import Record, feedback_labels, result_predictions
from driftline.streams.feedback import PerformanceJoin, RedisJoinState

from ..unit.performance._join_stream import MIN, Stream, check_final
from ._monitor_helpers import read_all

pytestmark = pytest.mark.integration

N = 20_000


class Feeder:
    """Produces the stream in 20 steps: each step a slice of results and of shuffled labels.

    Labels are shuffled over the whole run, so at every step some refer to predictions whose
    windows have closed (they revise them) and some to predictions not produced yet.
    """

    def __init__(self, conf: dict[str, Any], stream: Stream, results: str, feedback: str):
        self.p = Producer({**conf, "linger.ms": 20, "enable.idempotence": True})
        self.stream, self.results, self.feedback = stream, results, feedback
        self.step_no, self.steps, self.bad = 0, 20, 0

    def step(self) -> None:
        if self.step_no >= self.steps:
            return
        s, k, n = self.stream, self.step_no, self.steps
        self.step_no += 1
        lo, hi = len(s.ids) * k // n, len(s.ids) * (k + 1) // n
        for i in range(lo, hi):
            doc = {
                "id": s.ids[i],
                "row": int(s.rows[i]),
                "time": int(s.times[i]),
                "outputs": {"m": [[float(s.scores[i])]]},
            }
            self.p.produce(
                self.results, orjson.dumps(doc), s.ids[i].encode(), partition=int(s.parts[i])
            )
        lo, hi = len(s.label_rows) * k // n, len(s.label_rows) * (k + 1) // n
        for j in range(lo, hi):
            ident, row, y, t = s.label_rows[j]
            part = int(s.label_parts[j])
            value = orjson.dumps({"id": ident, "row": row, "label": y, "time": t})
            self.p.produce(self.feedback, value, ident.encode(), partition=part)
            if j % 997 == 0:  # malformed feedback in between: dead-lettered, stops nothing
                self.p.produce(self.feedback, b'{"id": "x", "label": "maybe"}', partition=part)
                self.bad += 1
        assert self.p.flush(60) == 0

    @property
    def done(self) -> bool:
        return self.step_no >= self.steps


def _loop(
    conf: dict[str, Any],
    topics: dict[str, str],
    make_join: Callable[[], PerformanceJoin],
    crashes: set[int],
    feeder: Feeder,
) -> dict[str, int]:
    """Consume both topics to the end, publishing performance events; crash at batch numbers."""
    prediction = [parse("m.outputs[0][0]")]
    producer = Producer({**conf, "linger.ms": 5})
    stats = {"batches": 0, "crashes": 0, "dead": 0, "quiet": 0, "skipped": 0}
    done = False
    while not done:
        consumer = Consumer(
            {
                **conf,
                "group.id": topics["group"],
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
            }
        )
        consumer.subscribe([topics["results"], topics["feedback"]])
        join = make_join()
        try:
            while True:
                feeder.step()
                msgs = [m for m in consumer.consume(2000, 1.0) if m.error() is None]
                if not msgs:
                    stats["quiet"] += feeder.done
                    if stats["quiet"] >= 5:
                        done = True
                        break
                    continue
                stats["quiet"] = 0
                stats["batches"] += 1
                recs = [
                    Record(m.topic(), m.partition(), m.offset(), m.value(), m.timestamp()[1])
                    for m in msgs
                ]
                preds, _ = result_predictions(
                    [r for r in recs if r.topic == topics["results"]], prediction
                )
                labels, dead = feedback_labels([r for r in recs if r.topic == topics["feedback"]])
                for d in dead:
                    producer.produce(topics["deadletter"], d.record.value, headers=d.headers())
                stats["dead"] += len(dead)
                stats["skipped"] += join.apply(preds, labels).skipped
                if stats["batches"] in crashes:
                    stats["crashes"] += 1
                    break  # dies before publishing and committing: the batch comes again
                closing = join.close()
                for e in closing.events:
                    producer.produce(topics["performance"], orjson.dumps(e), b"p/quality")
                assert producer.flush(30) == 0
                join.confirm(closing)
                consumer.commit(asynchronous=False)
        finally:
            consumer.close()
    # the end of the stream: the idle rule closes what is left
    closing = join.close(watermark=topics["final_watermark"])  # type: ignore[arg-type]
    for e in closing.events:
        producer.produce(topics["performance"], orjson.dumps(e), b"p/quality")
    assert producer.flush(30) == 0
    join.confirm(closing)
    return stats


def test_join_from_kafka_survives_restarts_and_equals_offline(  # type: ignore[no-untyped-def]
    topic_factory, kafka_config, redis_client, redis_prefix, unique
) -> None:
    stream = Stream(21, n=N)
    topics: dict[str, Any] = {
        "results": topic_factory("results", partitions=2),
        "feedback": topic_factory("feedback", partitions=2),
        "deadletter": topic_factory("deadletter"),
        "performance": topic_factory("performance"),
        "group": f"perf-{unique}",
        "final_watermark": int(stream.times.max()) + 10 * MIN,
    }
    conf = kafka_config()
    feeder = Feeder(conf, stream, topics["results"], topics["feedback"])

    def make_join() -> PerformanceJoin:
        state = RedisJoinState(redis_client, redis_prefix, "p", "quality", "d1", 10**9)
        return PerformanceJoin(
            "p",
            "quality",
            "sha256:x",
            BinaryLayout(bins=50),
            BinaryEstimator(),
            state,
            width_ms=2 * MIN,
            interval_ms=MIN,
            horizon_ms=10**9,
            partitions=2,
            lateness_ms=5_000,
        )

    stats = _loop(conf, topics, make_join, crashes={2, 4, 6, 8, 10}, feeder=feeder)
    assert stats["crashes"] == 5, stats
    assert stats["skipped"] > 0  # batches read again after a crash were skipped by the guard
    events = read_all(conf, topics["performance"], timeout=20)
    join = make_join()
    check_final(events, stream, join)
    c = join.counters()
    assert c["predictions"] == N
    assert c["labels"] == len(stream.label_rows)
    assert c["relabeled"] > 0 and c["pending"] > 0
    # labels that came after their window had closed revised it
    revised = {e["window_end"] for e in events if e["revision"] > 0}
    assert len(revised) >= len({e["window_end"] for e in events}) // 2
    dead = _raw(conf, topics["deadletter"])
    # re-read batches dead-letter their bad rows again (at least once)
    assert len(dead) == stats["dead"] >= feeder.bad
    headers = dead[0]
    assert headers["driftline-error"] == b"bad_label"
    assert headers["driftline-source-topic"] == topics["feedback"].encode()
    assert {"driftline-detail", "driftline-source-partition", "driftline-source-offset"} <= set(
        headers
    )


def _raw(conf: dict[str, Any], topic: str) -> list[dict[str, bytes]]:
    c = Consumer({**conf, "group.id": f"raw-{time.monotonic_ns()}", "enable.partition.eof": True})
    try:
        from confluent_kafka import TopicPartition

        c.assign([TopicPartition(topic, 0, 0)])
        out: list[dict[str, bytes]] = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            msgs = c.consume(1000, 0.5)
            if any(m.error() is not None for m in msgs):
                out += [dict(m.headers() or []) for m in msgs if m.error() is None]
                break
            out += [dict(m.headers() or []) for m in msgs]
        return out
    finally:
        c.close()
