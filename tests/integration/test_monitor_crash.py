"""Crash tests: SIGKILLed monitors and emptied Redis state end with exact windows and alerts."""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
import redis

from driftline.alerts.lifecycle import AlertState, run
from driftline.config import KafkaSettings
from driftline.detectors import Baseline
from driftline.events import notification_id
from driftline.streams.control import ensure_topics
from driftline.streams.monitor import EXIT_BATCH_FAILED
from driftline.streams.state import RedisState

from ._monitor_helpers import (
    produce,
    read_all,
    result,
    start_monitor,
    stop,
    wait_for,
    wait_for_log,
)
from ._private_redis import PrivateRedis, free_port

pytestmark = pytest.mark.integration

N = 50_000
SPAN_MS = 100_000
LATENESS = 1000
ALERT = "count(m.outputs[0][0] > 0.9, '5s', '1s') > 40"


@pytest.fixture
def world(kafka_admin, unique, redis_prefix, tmp_path) -> Iterator[dict[str, Any]]:  # type: ignore[no-untyped-def]
    prefix = f"t{unique}"
    k = KafkaSettings(topic_prefix=prefix)
    ensure_topics(k, [k.topic("fraud", "results")], partitions=3)
    ensure_topics(k, [k.topic("assays"), k.topic("notifications")], partitions=1)
    yield {"prefix": prefix, "k": k, "redis_prefix": redis_prefix, "tmp": tmp_path}
    topics = [t for t in kafka_admin.list_topics(timeout=10).topics if t.startswith(prefix + ".")]
    if topics:
        for f in kafka_admin.delete_topics(topics, operation_timeout=15).values():
            with contextlib.suppress(Exception):
                f.result(30)


def _data(t0: int, seed: int) -> tuple[list[tuple[int, bytes]], np.ndarray]:
    rng = np.random.default_rng(seed)
    i = np.arange(N)
    times = t0 + i * SPAN_MS // N + rng.integers(-300, 300, N)  # out of order within lateness
    sec = (times - t0) // 1000
    burst = ((sec >= 30) & (sec < 36)) | ((sec >= 70) & (sec < 74))
    values = np.where(burst & (rng.random(N) < 0.2), 0.95, rng.uniform(0, 0.85, N))
    rows = [
        (int(k % 3), result(int(t), float(v), int(k)))
        for k, t, v in zip(i, times, values, strict=True)
    ]
    return rows, rng.uniform(0, 0.85, 1000)


def _config(world: dict[str, Any], baseline: np.ndarray, **extra: Any) -> Path:
    conf = {
        **extra,
        "topic_prefix": world["prefix"],
        "key_prefix": world["redis_prefix"],
        "group": f"{world['prefix']}-monitor",
        "datadir": str(world["tmp"] / "faust"),
        "batch_size": 2000,
        "pipelines": [
            {
                "name": "fraud",
                "partitions": 3,
                "lateness_ms": LATENESS,
                "alerts": [{"name": "burst", "when": ALERT}],
                "assays": [
                    {
                        "name": "drift",
                        "iopath": "m.outputs[0][0]",
                        "baseline": baseline.tolist(),
                        "width_ms": 10_000,
                        "interval_ms": 5000,
                        "metric": "psi",
                        "thresholds": {"warning": 0.1, "alert": 0.25},
                    }
                ],
            }
        ],
    }
    path = world["tmp"] / "monitor.json"
    path.write_bytes(orjson.dumps(conf))
    return path


def _offline(events: list[dict[str, Any]], t0: int, base: Baseline) -> dict[str, Any]:
    times = np.array([e["time"] for e in events])
    values = np.array([e["outputs"]["m"][0][0] for e in events])
    high = values > 0.9
    last_end = t0 + 2 * SPAN_MS - LATENESS  # watermark after the flush events
    first = (times.min() // 1000) * 1000 + 1000
    ends = np.arange(first, last_end + 1, 1000)
    counts = np.array([int(high[(times >= e - 5000) & (times < e)].sum()) for e in ends])
    _, transitions = run(AlertState(), counts > 40, ends, counts.astype(float))
    ids = {notification_id("fraud", "burst", t.at, t.state) for t in transitions}
    assays = {}
    for e in range((times.min() // 5000) * 5000 + 5000, last_end + 1, 5000):
        inside = (times >= e - 10_000) & (times < e)
        if inside.any():
            assays[e] = base.compare(
                base.histogram(values[inside]),
                metric="psi",
                thresholds={"warning": 0.1, "alert": 0.25},
            )
    buckets_alert = {}
    for s in np.unique(times // 1000 * 1000):
        buckets_alert[int(s)] = int(high[(times >= s) & (times < s + 1000)].sum())
    return {
        "ids": ids,
        "transitions": transitions,
        "assays": assays,
        "buckets_alert": buckets_alert,
        "times": times,
        "values": values,
    }


def _check(world: dict[str, Any], t0: int, base: Baseline, redis_client: redis.Redis) -> None:
    k = world["k"]
    conf = k.client_config()
    events = read_all(conf, k.topic("fraud", "results"), timeout=30)
    assert len(events) == N + 3
    want = _offline(events, t0, base)
    assert len(want["transitions"]) == 4  # two bursts: fire and resolve twice

    # windows in Redis: every bucket still held equals the recomputation from the topic
    state = RedisState(redis_client, world["redis_prefix"], "fraud")
    held = state.read_buckets(1000, 0, 2**62)
    assert held, "no buckets left in Redis"
    for start, fields in held:
        got_c = sum(int(v) for f, v in fields.items() if f.startswith("c:burst@"))
        assert got_c == want["buckets_alert"].get(start, 0), start
    for start, fields in state.read_buckets(5000, 0, 2**62):
        inside = (want["times"] >= start) & (want["times"] < start + 5000)
        fine = np.bincount(base.fine_index(want["values"][inside]), minlength=base.num_fine_bins)
        got = np.zeros(base.num_fine_bins, dtype=int)
        for f, v in fields.items():
            assert f.startswith("h:"), f
            got[int(f.split(":")[2])] = int(v)
        assert got.tolist() == fine.tolist(), start

    # every alert transition emitted; duplicates, if any, carry the same id
    notes = [n for n in read_all(conf, k.topic("notifications")) if n["kind"] == "alert"]
    assert {n["id"] for n in notes} == want["ids"]
    assays: dict[int, list[dict[str, Any]]] = {}
    for a in read_all(conf, k.topic("assays")):
        assays.setdefault(a["window_end"], []).append(a)
    assert set(assays) == set(want["assays"])
    for end, copies in assays.items():
        for a in copies:
            assert a["score"] == pytest.approx(want["assays"][end].score, rel=1e-9), (
                end - t0,
                [(c["count"], c["score"]) for c in copies],
                want["assays"][end].window_count,
            )
            assert a["status"] == want["assays"][end].status


_FLUSH = """
local keys = redis.call('KEYS', ARGV[1])
for i = 1, #keys, 1000 do
  redis.call('DEL', unpack(keys, i, math.min(i + 999, #keys)))
end
return #keys
"""


def _done(t0: int) -> Any:
    return lambda got: any(a["window_end"] >= t0 + SPAN_MS + 5000 for a in got)


def test_sigkilled_monitors_leave_exact_windows_and_every_transition(world, redis_client):  # type: ignore[no-untyped-def]
    t0 = (int(time.time()) // 10 - 100) * 10_000
    rows, baseline = _data(t0, 1)
    base = Baseline.from_values(baseline)
    config = _config(world, baseline)
    k = world["k"]
    topic = k.topic("fraud", "results")
    flush = [(p, result(t0 + 2 * SPAN_MS, 0.1, N + p)) for p in range(3)]

    killed = threading.Event()
    producer_waits: list[bool] = []

    def producer() -> None:
        for c in range(25):
            chunk = rows[c * 2000 : (c + 1) * 2000]
            produce(k.client_config(), topic, chunk, txid=f"{world['prefix']}-p")
            if c % 5 == 4:  # every fifth chunk: go on only once a monitor was killed meanwhile
                producer_waits.append(killed.wait(120))
                killed.clear()
            else:
                time.sleep(1.0)
        produce(k.client_config(), topic, flush, txid=f"{world['prefix']}-p")

    thread = threading.Thread(target=producer)
    thread.start()
    log = world["tmp"] / "monitor.log"
    state = RedisState(redis_client, world["redis_prefix"], "fraud")
    kills = 0
    alive_at_kill: list[bool] = []
    rng = np.random.default_rng(5)
    proc = None
    try:
        while thread.is_alive() and kills < 10:
            before = _applied(state)
            proc = start_monitor(config, world["tmp"], log)
            # kill only a monitor that has applied output of its own (like the worker's test):
            # one killed while still starting up would prove nothing
            deadline = time.monotonic() + 90
            while _applied(state) <= before and time.monotonic() < deadline:
                time.sleep(0.1)
            if _applied(state) <= before:
                break  # no progress: the assertions below say so
            time.sleep(float(rng.uniform(0.0, 1.0)))
            alive_at_kill.append(thread.is_alive())
            stop(proc, kill=True)
            kills += 1
            killed.set()
        thread.join(120)
        proc = start_monitor(config, world["tmp"], log)
        wait_for(k.client_config(), k.topic("assays"), _done(t0), timeout=150)
        time.sleep(3)
    finally:
        if proc is not None:
            stop(proc)
        killed.set()
        thread.join(60)
    assert kills >= 5, (kills, log.read_text(errors="replace")[-3000:])
    # the producer waited for five kills, each made while results flowed (a later one may
    # meet the producer just done)
    assert all(alive_at_kill[:5]) and all(producer_waits), (alive_at_kill, producer_waits)
    _check(world, t0, base, redis_client)


_SNAPSHOT = """
local keys = redis.call('KEYS', ARGV[1])
local out = {}
for _, k in ipairs(keys) do
  out[#out + 1] = k
  out[#out + 1] = redis.call('DUMP', k)
end
return out
"""

_RESTORE = """
local keys = redis.call('KEYS', ARGV[1])
for i = 1, #keys, 1000 do
  redis.call('DEL', unpack(keys, i, math.min(i + 999, #keys)))
end
for i = 2, #ARGV, 2 do
  redis.call('RESTORE', ARGV[i], 0, ARGV[i + 1])
end
return #keys
"""


def _applied(state: RedisState) -> int:
    offs = state.snapshot().offsets
    return sum(offs.values()) + len(offs)


@pytest.mark.parametrize("how", ["emptied", "back from an older snapshot"])
def test_lost_redis_state_is_rebuilt_from_kafka(world, redis_client, how):  # type: ignore[no-untyped-def]
    """Redis loses what the monitor applied, mid-stream: emptied (the shared test Redis cannot
    be FLUSHALLed; deleting every key of our prefix is the same event for the monitor), or
    restarted from a snapshot (or an AOF fsynced once a second) with offsets, buckets and
    marks older than what was applied. Both are done atomically, like the real thing."""
    t0 = (int(time.time()) // 10 - 100) * 10_000
    rows, baseline = _data(t0, 2 if how == "emptied" else 4)
    base = Baseline.from_values(baseline)
    config = _config(world, baseline)
    k = world["k"]
    topic = k.topic("fraud", "results")
    log = world["tmp"] / "monitor.log"
    state = RedisState(redis_client, world["redis_prefix"], "fraud")
    pattern = f"{world['redis_prefix']}:*"

    def send(part: list[tuple[int, bytes]]) -> None:
        produce(k.client_config(), topic, part, txid=f"{world['prefix']}-p")

    def until_applied(n: int) -> None:
        deadline = time.monotonic() + 90
        while _applied(state) < n and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _applied(state) >= n

    third = N // 3
    proc = start_monitor(config, world["tmp"], log)
    try:
        send(rows[:third])
        until_applied(third)
        snapshot = redis_client.eval(_SNAPSHOT, 0, pattern)
        send(rows[third : 2 * third])
        until_applied(2 * third)
        if how == "emptied":
            assert redis_client.eval(_FLUSH, 0, pattern) > 0
        else:
            assert redis_client.eval(_RESTORE, 0, pattern, *snapshot) > 0
        assert _applied(state) < 2 * third
        send(rows[2 * third :])
        send([(p, result(t0 + 2 * SPAN_MS, 0.1, N + p)) for p in range(3)])
        wait_for(k.client_config(), k.topic("assays"), _done(t0), timeout=150)
        time.sleep(3)
    finally:
        stop(proc)
    text = log.read_text(errors="replace")
    assert "rebuilding" in text, text
    _check(world, t0, base, redis_client)


def test_two_monitors_in_one_group_share_the_work_exactly(world, redis_client):  # type: ignore[no-untyped-def]
    t0 = (int(time.time()) // 10 - 100) * 10_000
    rows, baseline = _data(t0, 3)
    base = Baseline.from_values(baseline)
    config = _config(world, baseline)
    k = world["k"]
    topic = k.topic("fraud", "results")
    tmp = world["tmp"]
    procs = [start_monitor(config, tmp, tmp / "m1.log"), start_monitor(config, tmp, tmp / "m2.log")]
    try:
        # each holds results partitions before the first result: both take part however slow
        # the machine is
        for log in ("m1.log", "m2.log"):
            wait_for_log(tmp / log, r"assigned results partitions \[\d", timeout=90)
        for c in range(10):
            produce(
                k.client_config(),
                topic,
                rows[c * 5000 : (c + 1) * 5000],
                txid=f"{world['prefix']}-p",
            )
            if c == 4:  # one of them dies mid-stream and comes back
                stop(procs[0], kill=True)
                procs[0] = start_monitor(config, tmp, tmp / "m1.log")
            time.sleep(0.5)
        flush = [(p, result(t0 + 2 * SPAN_MS, 0.1, N + p)) for p in range(3)]
        produce(k.client_config(), topic, flush, txid=f"{world['prefix']}-p")
        wait_for(k.client_config(), k.topic("assays"), _done(t0), timeout=150)
        time.sleep(3)
    finally:
        for p in procs:
            stop(p)
    for log in ("m1.log", "m2.log"):  # both took part
        assert "handling partition" in (tmp / log).read_text(errors="replace"), log
    _check(world, t0, base, redis_client)


def test_redis_away_for_a_while_stalls_the_monitor_without_losing_anything(world):  # type: ignore[no-untyped-def]
    """Redis restarts (a failover, an upgrade) while results keep arriving: the monitor
    waits for it and goes on, and the windows end exact."""
    server = PrivateRedis(world["tmp"], durable=True)
    server.start()
    client = redis.Redis.from_url(server.url)
    t0 = (int(time.time()) // 10 - 100) * 10_000
    rows, baseline = _data(t0, 6)
    base = Baseline.from_values(baseline)
    port = free_port()
    config = _config(world, baseline, metrics_port=port)

    def stalled() -> str | None:
        try:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        except httpx.HTTPError:
            return None
        found = re.search(r"^driftline_monitor_stalled (\S+)$", text, re.M)
        return found.group(1) if found else None

    def wait_stalled(value: str) -> None:
        deadline = time.monotonic() + 60
        while stalled() != value and time.monotonic() < deadline:
            time.sleep(0.5)
        assert stalled() == value, (value, log.read_text(errors="replace")[-2000:])

    k = world["k"]
    topic = k.topic("fraud", "results")
    log = world["tmp"] / "monitor.log"
    state = RedisState(client, world["redis_prefix"], "fraud")

    def send(part: list[tuple[int, bytes]]) -> None:
        produce(k.client_config(), topic, part, txid=f"{world['prefix']}-p")

    third = N // 3
    env = {"DRIFTLINE_REDIS_URL": server.url}
    proc = start_monitor(config, world["tmp"], log, env)
    try:
        send(rows[:third])
        deadline = time.monotonic() + 90
        while _applied(state) < third and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _applied(state) >= third
        wait_stalled("0.0")
        server.stop()
        send(rows[third : 2 * third])
        wait_stalled("1.0")  # the monitor meets the missing Redis with a batch in hand
        time.sleep(3)
        assert proc.poll() is None, log.read_text(errors="replace")
        server.start()
        send(rows[2 * third :])
        send([(p, result(t0 + 2 * SPAN_MS, 0.1, N + p)) for p in range(3)])
        wait_for(k.client_config(), k.topic("assays"), _done(t0), timeout=150)
        wait_stalled("0.0")
        time.sleep(3)
        assert proc.poll() is None, log.read_text(errors="replace")
    finally:
        stop(proc)
        try:
            _check(world, t0, base, client)
        finally:
            client.close()
            server.stop()


def test_an_unexpected_error_on_a_batch_ends_the_process_instead_of_dropping_the_batch(
    world, redis_client
):  # type: ignore[no-untyped-def]
    """faust restarts a crashed agent with the next batch; the monitor exits instead, so a
    restart reads the failed batch again and no event goes uncounted."""
    t0 = (int(time.time()) // 10 - 100) * 10_000
    rows, baseline = _data(t0, 7)
    base = Baseline.from_values(baseline)
    config = _config(world, baseline)
    failing = world["tmp"] / "failing.json"
    failing.write_bytes(
        orjson.dumps({**orjson.loads(config.read_bytes()), "fail_first_batch": True})
    )
    k = world["k"]
    topic = k.topic("fraud", "results")
    log = world["tmp"] / "monitor.log"
    produce(k.client_config(), topic, rows[: N // 2], txid=f"{world['prefix']}-p")
    proc = start_monitor(failing, world["tmp"], log)
    try:
        assert proc.wait(60) == EXIT_BATCH_FAILED, log.read_text(errors="replace")
        assert "injected failure" in log.read_text(errors="replace")
        proc = start_monitor(config, world["tmp"], log)
        produce(k.client_config(), topic, rows[N // 2 :], txid=f"{world['prefix']}-p")
        flush = [(p, result(t0 + 2 * SPAN_MS, 0.1, N + p)) for p in range(3)]
        produce(k.client_config(), topic, flush, txid=f"{world['prefix']}-p")
        wait_for(k.client_config(), k.topic("assays"), _done(t0), timeout=150)
        time.sleep(3)
    finally:
        stop(proc)
    _check(world, t0, base, redis_client)


def test_an_unexpected_error_in_housekeeping_ends_the_process(world):  # type: ignore[no-untyped-def]
    """A bug met while following specs or closing idle windows ends the monitor (status 70)
    rather than leaving faust to carry on without its timer."""
    config = _config(world, np.linspace(0, 1, 100))
    failing = world["tmp"] / "failing.json"
    failing.write_bytes(
        orjson.dumps({**orjson.loads(config.read_bytes()), "fail_first_tick": True})
    )
    log = world["tmp"] / "monitor.log"
    proc = start_monitor(failing, world["tmp"], log)
    try:
        assert proc.wait(60) == EXIT_BATCH_FAILED, log.read_text(errors="replace")
    finally:
        stop(proc)
    text = log.read_text(errors="replace")
    assert "injected failure in housekeeping" in text and "unexpected error in housekeeping" in text
