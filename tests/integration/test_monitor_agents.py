"""The faust monitor on the real broker and Redis: windows, count alerts, assays, read_committed."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from driftline.config import KafkaSettings
from driftline.detectors import Baseline
from driftline.streams.control import ensure_topics

from ._monitor_helpers import produce, read_all, result, start_monitor, stop, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def world(kafka_admin, kafka_config, unique, redis_prefix, tmp_path) -> Iterator[dict[str, Any]]:  # type: ignore[no-untyped-def]
    prefix = f"t{unique}"
    k = KafkaSettings(topic_prefix=prefix)
    results = k.topic("fraud", "results")
    ensure_topics(k, [results], partitions=3)
    ensure_topics(k, [k.topic("assays"), k.topic("notifications")], partitions=1)
    yield {
        "prefix": prefix,
        "k": k,
        "results": results,
        "redis_prefix": redis_prefix,
        "conf": kafka_config(),
        "tmp": tmp_path,
    }
    topics = [t for t in kafka_admin.list_topics(timeout=10).topics if t.startswith(prefix + ".")]
    if topics:
        for f in kafka_admin.delete_topics(topics, operation_timeout=15).values():
            with contextlib.suppress(Exception):
                f.result(30)


def _raw(conf: dict[str, Any], topic: str) -> list[tuple[bytes, dict[str, bytes]]]:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({**conf, "group.id": f"raw-{time.monotonic_ns()}", "enable.partition.eof": True})
    try:
        parts = list(c.list_topics(topic, timeout=10).topics[topic].partitions)
        c.assign([TopicPartition(topic, p, 0) for p in parts])
        out, eof, deadline = [], set(), time.monotonic() + 10
        while len(eof) < len(parts) and time.monotonic() < deadline:
            for m in c.consume(100, 0.5):
                if m.error():
                    eof.add(m.partition())
                else:
                    out.append((m.value(), dict(m.headers() or [])))
        return out
    finally:
        c.close()


def _left_after_committed(world: dict[str, Any], group: str) -> int:
    """Committed records a restarted monitor of ``group`` would read again."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({**world["conf"], "group.id": group, "isolation.level": "read_committed"})
    try:
        tps = c.committed([TopicPartition(world["results"], p) for p in range(3)], timeout=10)
        assert all(tp.offset >= 0 for tp in tps), tps
        c.assign(tps)
        return sum(not m.error() for m in c.consume(1000, 3.0))
    finally:
        c.close()


def _config(world: dict[str, Any], pipelines: list[dict[str, Any]], **extra: Any) -> Path:
    conf = {
        "topic_prefix": world["prefix"],
        "key_prefix": world["redis_prefix"],
        "group": f"{world['prefix']}-monitor",
        "datadir": str(world["tmp"] / "faust"),
        "pipelines": pipelines,
        **extra,
    }
    path = world["tmp"] / "monitor.json"
    path.write_bytes(orjson.dumps(conf))
    return path


def test_count_alert_and_assays_on_committed_results_only(world):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(7)
    t0 = (int(time.time()) // 10 - 60) * 10_000
    base_values = rng.uniform(0, 0.5, 1000)
    thresholds = {"warning": 0.1, "alert": 0.25}
    pipe = {
        "name": "fraud",
        "partitions": 3,
        "lateness_ms": 1000,
        "alerts": [{"name": "high", "when": "count(m.outputs[0][0] > 0.9, '2s', '1s') >= 3"}],
        "assays": [
            {
                "name": "psi",
                "iopath": "m.outputs[0][0]",
                "baseline": base_values.tolist(),
                "width_ms": 4000,
                "interval_ms": 2000,
                "metric": "psi",
                "thresholds": thresholds,
            },
            {
                "name": "ks",
                "iopath": "m.outputs[0][0]",
                "baseline": base_values.tolist(),
                "width_ms": 4000,
                "interval_ms": 2000,
                "metric": "ks",
                "thresholds": {"alpha": 0.01},
            },
        ],
    }
    rows, times, values = [], [], []
    i = 0
    for sec in range(20):
        n_high = 4 if sec == 8 else 0
        for j in range(30):
            v = 0.95 if j < n_high else float(rng.uniform(0, 0.5))
            t = t0 + sec * 1000 + int(rng.integers(0, 1000))
            rows.append((i % 3, result(t, v, i)))
            times.append(t)
            values.append(v)
            i += 1
    # an aborted transaction full of high scores at second 14 must never be counted
    aborted = [(j % 3, result(t0 + 14_000 + j, 0.99, 10_000 + j)) for j in range(12)]
    flush = [(p, result(t0 + 30_000, 0.1, 20_000 + p)) for p in range(3)]
    produce(
        world["conf"], world["results"], rows + flush, abort=aborted, txid=f"{world['prefix']}-p"
    )

    proc = start_monitor(_config(world, [pipe]), world["tmp"], world["tmp"] / "monitor.log")
    try:
        k = world["k"]
        assays = wait_for(world["conf"], k.topic("assays"), lambda got: len(got) >= 22)
        notes = wait_for(
            world["conf"],
            k.topic("notifications"),
            lambda got: sum(n["kind"] == "alert" for n in got) >= 2,
            timeout=30,
        )
        time.sleep(2)
        notes = read_all(world["conf"], k.topic("notifications"))
        assays = read_all(world["conf"], k.topic("assays"))
        left = _left_after_committed(world, f"{world['prefix']}-monitor")
    finally:
        stop(proc)
    assert left == 0, "the group's committed offsets must reach past every applied record"
    log = (world["tmp"] / "monitor.log").read_text(errors="replace")
    got = [(n["state"], n["at"] - t0, n["value"]) for n in notes if n["kind"] == "alert"]
    assert got == [("firing", 9000, 4.0), ("resolved", 11000, 0.0)], log
    assert len({n["id"] for n in notes}) == len(notes)

    times_a, values_a = np.array(times), np.array(values)
    base = Baseline.from_values(base_values)
    for name, metric, thr in (("psi", "psi", thresholds), ("ks", "ks", {"alpha": 0.01})):
        got = sorted((a for a in assays if a["assay"] == name), key=lambda a: a["window_end"])
        assert [a["window_end"] - t0 for a in got] == list(range(2000, 24000, 2000))
        for a in got:
            inside = (times_a >= a["window_start"]) & (times_a < a["window_end"])
            offline = base.compare(base.histogram(values_a[inside]), metric=metric, thresholds=thr)
            assert a["count"] == int(inside.sum())
            assert a["score"] == pytest.approx(offline.score, rel=1e-9, abs=1e-12)
            assert a["status"] == offline.status


def test_out_of_order_within_lateness_counts_and_late_events_go_aside(world, redis_client):  # type: ignore[no-untyped-def]
    from driftline.streams.state import RedisState

    t0 = (int(time.time()) // 10 - 60) * 10_000
    pipe = {
        "name": "fraud",
        "partitions": 3,
        "lateness_ms": 2000,
        "alerts": [{"name": "any", "when": "count(m.outputs[0][0] > 0.9, '1s', '1s') >= 1"}],
    }
    order = [10_000, 10_100, 9_000, 8_500, 5_000, 10_200, 7_900]  # offsets 0..6 of partition 0
    rows = [(0, result(t0 + t, 0.95, i), t0 + t) for i, t in enumerate(order)]
    rows.append((1, b'{"broken": ', t0))  # malformed: dead-lettered, never stops the partition
    rows += [(p, result(t0 + 30_000, 0.1, 100 + p), t0 + 30_000) for p in range(3)]
    produce(world["conf"], world["results"], rows, txid=f"{world['prefix']}-p")
    proc = start_monitor(_config(world, [pipe]), world["tmp"], world["tmp"] / "monitor.log")
    try:
        k = world["k"]
        notes = wait_for(world["conf"], k.topic("notifications"), lambda got: len(got) >= 2)
        late = wait_for(world["conf"], k.topic("fraud", "late"), lambda got: len(got) >= 2)
        dead = _raw(world["conf"], k.topic("fraud", "deadletter"))
        for _ in range(30):
            if dead:
                break
            time.sleep(1)
            dead = _raw(world["conf"], k.topic("fraud", "deadletter"))
    finally:
        stop(proc)
    assert [(v, h["driftline-error"]) for v, h in dead] == [(b'{"broken": ', b"malformed-result")]
    # 5_000 and 7_900 arrive after 10_100 was seen: below 10_100 - 2_000, so late
    assert sorted(d["time"] - t0 for d in late) == [5_000, 7_900]
    state = RedisState(redis_client, world["redis_prefix"], "fraud")
    counts = {
        s - t0: sum(int(v) for name, v in f.items() if name.startswith("c:any@"))
        for s, f in state.read_buckets(1000, 0, 2**62)
    }
    assert counts.get(5_000, 0) == 0 and counts.get(7_000, 0) == 0
    assert counts[8_000] == 1 and counts[9_000] == 1 and counts[10_000] == 3
    fired = [(n["state"], n["at"] - t0, n["value"]) for n in notes]
    assert fired == [("firing", 9_000, 1.0), ("resolved", 12_000, 0.0)]


def test_idle_pipeline_closes_windows_on_the_wall_clock(world, redis_client):  # type: ignore[no-untyped-def]
    from driftline.config import MonitorSettings, RedisSettings, Settings
    from driftline.expressions import alert_condition, parse
    from driftline.streams._engine import AlertPlan, Batch, PipelineEngine
    from driftline.streams.monitor import Monitor
    from driftline.streams.state import RedisState

    settings = Settings(kafka=world["k"], redis=RedisSettings(key_prefix=world["redis_prefix"]))
    monitor = Monitor(settings, MonitorSettings(monitor_idle_close_ms=500))
    try:
        cond = alert_condition(parse("count(m.outputs[0][0] > 0.9, '1s', '1s') >= 1"))
        state = RedisState(monitor.client, world["redis_prefix"], "fraud")
        engine = PipelineEngine("fraud", "v", ["m"], [AlertPlan("hi", cond)], [], state, 3, 1000)
        monitor.watch(engine)
        now = int(time.time() * 1000)
        t = now - 5000
        monitor.handle(world["results"], [(0, 0, result(t, 0.95, 0))])
        assert not monitor.close("fraud").notifications  # other partitions hold the watermark
        w = monitor.pipelines["fraud"]
        w.last_event_wall -= 10
        monitor.tick()  # first look at the max times in Redis: progress, not idle
        assert not read_all(world["conf"], world["k"].topic("notifications"))
        w.last_event_wall -= 10  # no progress for 10 s
        monitor.tick()
        notes = read_all(world["conf"], world["k"].topic("notifications"))
        end = t - t % 1000 + 1000
        assert [(n["state"], n["at"]) for n in notes] == [("firing", end), ("resolved", end + 1000)]
        # the idle floor is persisted: an event older than it is late now
        late_row = [(1, 0, result(now - 3000, 0.95, 1))]
        rep_late = engine.ingest(Batch.of(world["results"], late_row))
        assert len(rep_late.late) == 1
    finally:
        monitor.close_all()


def test_an_idle_close_on_a_rolled_back_redis_rebuilds_first(world, redis_client):  # type: ignore[no-untyped-def]
    from driftline.config import MonitorSettings, RedisSettings, Settings
    from driftline.expressions import alert_condition, parse
    from driftline.kafka.offsets import end_offsets
    from driftline.streams._build import read_range
    from driftline.streams._engine import AlertPlan, PipelineEngine
    from driftline.streams.monitor import Monitor
    from driftline.streams.state import RedisState

    settings = Settings(kafka=world["k"], redis=RedisSettings(key_prefix=world["redis_prefix"]))
    monitor = Monitor(settings, MonitorSettings(monitor_idle_close_ms=500))
    topic = world["results"]
    try:
        cond = alert_condition(parse("count(m.outputs[0][0] > 0.9, '2s', '1s') >= 1"))
        state = RedisState(monitor.client, world["redis_prefix"], "fraud")
        engine = PipelineEngine("fraud", "v", ["m"], [AlertPlan("hi", cond)], [], state, 3, 1000)
        monitor.watch(engine)
        t0 = int(time.time() * 1000) - 30_000
        rows = [(i % 3, result(t0 + i * 100, 0.95 if i % 9 == 0 else 0.1, i)) for i in range(240)]
        start = {p: 0 for p in range(3)}

        def feed(stop: dict[int, int]) -> None:
            read_range(
                settings,
                topic,
                start,
                stop,
                lambda b: monitor.handle(
                    topic,
                    [
                        (int(p), int(o), v)
                        for p, o, v in zip(b.partitions, b.offsets, b.values, strict=True)
                    ],
                ),
            )
            start.update(stop)

        produce(world["conf"], topic, rows[:120], txid=f"{world['prefix']}-a")
        feed(end_offsets(settings, topic, range(3)))
        snapshot = {k: redis_client.dump(k) for k in redis_client.scan_iter(f"{state.key()}*")}
        produce(world["conf"], topic, rows[120:], txid=f"{world['prefix']}-b")
        feed(end_offsets(settings, topic, range(3)))
        applied = state.snapshot().offsets
        held = state.read_buckets(1000, 0, 2**62)
        for k in redis_client.scan_iter(f"{state.key()}*"):  # Redis back from the snapshot
            redis_client.delete(k)
        for k, v in snapshot.items():
            redis_client.restore(k, 0, v)
        assert state.snapshot().offsets != applied
        monitor.close("fraud", floor=t0 + 24_000)  # what an idle tick does
        assert state.snapshot().offsets == applied  # replayed from Kafka before closing
        # every bucket the windows still need is as it was (older ones were cleaned up)
        now, before = dict(state.read_buckets(1000, 0, 2**62)), dict(held)
        assert now and {s for s in before if s >= min(now)} == set(now)
        assert all(before[s] == fields for s, fields in now.items())
    finally:
        monitor.close_all()
