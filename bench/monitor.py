"""Monitor throughput, alert latency and Redis memory, side by side on one broker and one Redis.

Consumers read the same results topic of the fraud pipeline (synthetic result events whose
champion scores are drawn from ``examples/fraud/data/baseline.csv``):

(a) ceiling    a bare faust agent (same read_committed transport, ``take_events``
               micro-batches) that only counts events: faust's per-event path;
(a') drain     the monitor's faust consumer handing whole fetches to a sink that only
               counts them: the ceiling of the path the monitor uses;
(b) driftline  ``driftline.streams.monitor`` with one count alert
               (``count(ccfraud.outputs[0][0] > 0.95, "5m", "1s") > 10``) and two assays
               (PSI and KS, 5 m windows every 1 m) — one Redis script call per micro-batch;
(b') engine    the same monitor shell and engine fed by a plain confluent consumer (no
               faust), to show what the design costs apart from the framework;
(c) per-event  what one writes without this design: a consumer loop that decodes each event
               and updates Redis with one round trip per event (alert bucket + both assay
               bins in one pipeline call), no windows closed at all.

(b) and (c) run a second time with Redis behind ``bench/_link.py``, a relay that delays each
chunk by ``--link-ms`` each way, because loopback Redis (tens of microseconds per round trip)
is the best case for (c); the measured PING round trips are printed with the rates.

Each faust contender runs in its own process; rates are events divided by the time from its
first to its last micro-batch (start-up and group join excluded). (c) runs on a prefix of the
topic because it is slow. Alert latency: a separate monitor (lateness 0, 1 s buckets) follows
live traffic; bursts of high scores are produced at random points of their bucket and the time
from producing the burst's last (crossing) event to the arrival of its ``firing``
notification is measured (the alert is evaluated when the bucket closes). Redis memory is
sampled in (b) at 25/50/75/100 % of the events.

Usage::

    python bench/monitor.py                   # 1,000,000 events, ~5 minutes on 2 cores
    python bench/monitor.py --events 200000   # quicker
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import orjson
from confluent_kafka import Consumer, Producer, TopicPartition

ROOT = Path(__file__).resolve().parents[1]
BASELINE_CSV = ROOT / "examples" / "fraud" / "data" / "baseline.csv"
PARTITIONS = 3
ALERT = 'count(ccfraud.outputs[0][0] > 0.95, "5m", "1s") > 10'
# Events per second of event time in the throughput topic: 100k events span 1000 s, more than
# the 5-minute windows, so the memory samples show whether state stays flat.
EVENT_RATE = 100


def _baseline() -> np.ndarray:
    return np.loadtxt(BASELINE_CSV, delimiter=",", skiprows=1)


def _event(i: int, t: int, v: float) -> bytes:
    return orjson.dumps(
        {
            "id": f"r{i}",
            "row": 0,
            "time": t,
            "pipeline": "fraud",
            "spec": "bench",
            "inputs": [0.0] * 29,
            "outputs": {"ccfraud": [[v]]},
            "models": {"ccfraud": "bench"},
        }
    )


def _settings(prefix: str, key_prefix: str, redis_url: str | None = None) -> Any:
    from pydantic import SecretStr

    from driftline.config import KafkaSettings, RedisSettings, Settings

    redis = RedisSettings(key_prefix=key_prefix)
    if redis_url:
        redis = RedisSettings(key_prefix=key_prefix, redis_url=SecretStr(redis_url))
    return Settings(kafka=KafkaSettings(topic_prefix=prefix), redis=redis)


def _engine(monitor: Any, key_prefix: str, name: str, lateness: int, alert: str) -> Any:
    from driftline.detectors import Baseline
    from driftline.expressions import alert_condition, parse
    from driftline.streams._engine import (
        AlertPlan,
        AssayPlan,
        DetectorBaseline,
        PipelineEngine,
    )
    from driftline.streams.state import RedisState

    base = Baseline.from_values(_baseline())
    iopath = parse("ccfraud.outputs[0][0]")
    assays = [
        AssayPlan("psi", iopath, DetectorBaseline(base, "psi", None), 300_000, 60_000, "psi"),
        AssayPlan("ks", iopath, DetectorBaseline(base, "ks", None), 300_000, 60_000, "ks"),
    ]
    alerts = [AlertPlan("high_fraud", alert_condition(parse(alert)), severity="critical")]
    state = RedisState(monitor.client, key_prefix, name)
    return PipelineEngine(name, "bench", ["ccfraud"], alerts, assays, state, PARTITIONS, lateness)


def _memory(client: Any, pattern: str) -> int:
    total = 0
    for k in client.scan_iter(match=pattern, count=1000):
        total += int(client.memory_usage(k) or 0)
    return total


# ----------------------------------------------------------------------------- child roles
def _child(args: argparse.Namespace) -> None:
    import faust

    from driftline.config import MonitorSettings
    from driftline.streams._faust_app import _faust_classes, create_app
    from driftline.streams.monitor import Monitor

    out = Path(args.out)
    settings = _settings(args.prefix, args.key_prefix, args.redis_url)
    ms = MonitorSettings(
        monitor_group=f"{args.prefix}-{args.role}",
        monitor_datadir=Path(args.out).with_suffix(".faust"),
        monitor_idle_close_ms=3_600_000,
    )
    marks: dict[str, Any] = {"first": None, "at_m": None, "last": None, "memory": []}
    seen = 0
    n, m = args.n, args.m

    def record(count: int) -> None:
        nonlocal seen
        now = time.monotonic()
        if marks["first"] is None:
            marks["first"] = now
            marks["first_count"] = count
        seen += count
        if marks["at_m"] is None and seen >= m:
            marks["at_m"] = now
            marks["seen_at_m"] = seen
        if seen >= n:
            marks["last"] = now
            marks["seen"] = seen

    def finish() -> None:
        out.write_text(json.dumps(marks))
        os._exit(0)

    if args.role in ("bare", "drain"):
        App = _faust_classes(ms.monitor_fetch_wait_ms)
        app = App(
            ms.monitor_group,
            broker=f"kafka://{settings.kafka.bootstrap_servers}",
            value_serializer="raw",
            web_enabled=False,
            datadir=str(ms.monitor_datadir),
            topic_allow_declare=False,
            topic_disable_leader=True,
            consumer_auto_offset_reset="earliest",
            broker_max_poll_records=ms.monitor_batch_size,
            stream_buffer_maxsize=ms.monitor_batch_size * 2,
        )
        topic = app.topic(settings.kafka.topic("fraud", "results"), value_serializer="raw")

        @app.task
        async def settle_heap() -> None:
            gc.freeze()  # the same runtime setting as the monitor's

        if args.role == "bare":

            @app.agent(topic)
            async def count(stream: Any) -> None:
                async for events in stream.take_events(ms.monitor_batch_size, within=0.2):
                    record(len(events))
                    if seen >= n:
                        finish()

        else:

            async def sink(batch: Any) -> None:
                record(sum(len(rows) for rows in batch.rows.values()))
                if seen >= n:
                    finish()

            app.topics.add(topic)
            app.consumer.batch_sink = sink
        faust.Worker(app, loglevel="warning").execute_from_commandline()
        return

    monitor = Monitor(settings, ms)
    lateness = 0 if args.role == "latency" else 5000
    alert = (
        'count(ccfraud.outputs[0][0] > 0.95, "1s", "1s") >= 20' if args.role == "latency" else ALERT
    )
    monitor.watch(_engine(monitor, args.key_prefix, "fraud", lateness, alert))
    handle = monitor.handle
    checkpoints = [n // 4, n // 2, 3 * n // 4, n]

    def counted(topic: str, records: Any) -> Any:
        r = handle(topic, records)
        record(len(records))
        while checkpoints and seen >= checkpoints[0] and args.role == "monitor":
            cp = checkpoints.pop(0)
            pattern = f"{args.key_prefix}:{{fraud}}:*"
            marks["memory"].append(
                {
                    "events": seen,
                    "total": _memory(monitor.client, pattern),
                    "assay_buckets": _memory(
                        monitor.client, f"{args.key_prefix}:{{fraud}}:b:60000:*"
                    ),
                    "alert_buckets": _memory(
                        monitor.client, f"{args.key_prefix}:{{fraud}}:b:1000:*"
                    ),
                    "checkpoint": cp,
                }
            )
        if args.role in ("monitor", "monitor-net") and seen >= n:
            finish()
        return r

    monitor.handle = counted  # type: ignore[method-assign]

    class _NoControl:
        def snapshot(self) -> dict[str, Any]:
            return {}

        def poll(self, timeout: float = 0.0) -> list[Any]:
            return []

    app = create_app(monitor, follower=_NoControl())
    faust.Worker(app, loglevel="warning").execute_from_commandline()


# ----------------------------------------------------------------------------- parent
def _produce(conf: dict[str, Any], topic: str, n: int, t0: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    base = _baseline()
    values = rng.choice(base, n)
    p = Producer({**conf, "linger.ms": 50, "batch.num.messages": 10000})
    for i in range(n):
        t = t0 + i * 1000 // EVENT_RATE
        event = _event(i, t, float(values[i]))
        while True:
            try:
                p.produce(topic, event, partition=i % PARTITIONS)
                break
            except BufferError:  # the local queue is full: let deliveries drain it
                p.poll(0.05)
        if i % 10_000 == 0:
            p.poll(0)
    p.flush(120)


def _spawn_child(
    role: str, prefix: str, key_prefix: str, n: int, m: int, redis_url: str | None = None
) -> tuple[subprocess.Popen[bytes], Path, Path]:
    """Start this script in ``role``; returns the process, its result file and its log."""
    out = Path(tempfile.mkstemp(prefix=f"dl-bench-{role}-", suffix=".json")[1])
    log = out.with_suffix(".log")
    _TEMP.extend([out, log, out.with_suffix(".faust")])
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--role",
                role,
                "--prefix",
                prefix,
                "--key-prefix",
                key_prefix,
                "--n",
                str(n),
                "--m",
                str(m),
                "--out",
                str(out),
                *(["--redis-url", redis_url] if redis_url else []),
            ],
            stdout=fh,
            stderr=subprocess.STDOUT,
            cwd=tempfile.gettempdir(),
        )
    return proc, out, log


def _run_child(
    role: str,
    prefix: str,
    key_prefix: str,
    n: int,
    m: int,
    timeout: float,
    redis_url: str | None = None,
) -> dict[str, Any]:
    proc, out, log = _spawn_child(role, prefix, key_prefix, n, m, redis_url)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
        raise SystemExit(f"{role} did not finish in {timeout:.0f} s; log: {log}") from None
    text = out.read_text()
    if not text:
        raise SystemExit(f"{role} produced no result; log: {log}")
    return dict(json.loads(text))


def _reader(settings: Any, group: str) -> Consumer:
    """A read_committed consumer assigned to the whole results topic from its start."""
    c = Consumer(
        settings.kafka.client_config(
            **{
                "group.id": group,
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "auto.offset.reset": "earliest",
            }
        )
    )
    topic = settings.kafka.topic("fraud", "results")
    c.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    return c


def _per_event(settings: Any, key_prefix: str, k: int) -> float:
    import redis

    from driftline.detectors import Baseline

    base = Baseline.from_values(_baseline())
    edges = base.fine_edges
    client = redis.Redis.from_url(settings.redis.redis_url.get_secret_value())
    c = _reader(settings, f"{key_prefix}-perevent")
    done = 0
    start = None
    gc.freeze()  # as the monitor does once started: full collections skip the setup's objects
    try:
        while done < k:
            msg = c.poll(1.0)
            if msg is None or msg.error():
                continue
            if start is None:
                start = time.monotonic()
            ev = orjson.loads(msg.value() or b"{}")
            v = ev["outputs"]["ccfraud"][0][0]
            t = ev["time"]
            b = int(np.searchsorted(edges, v, side="right"))
            pipe = client.pipeline(transaction=False)
            pipe.hincrby(f"{key_prefix}:pe:b:1000:{t - t % 1000}", "c", 1 if v > 0.95 else 0)
            pipe.hincrby(f"{key_prefix}:pe:b:60000:{t - t % 60000}", f"psi:{b}", 1)
            pipe.hincrby(f"{key_prefix}:pe:b:60000:{t - t % 60000}", f"ks:{b}", 1)
            pipe.execute()  # one round trip per event
            done += 1
        assert start is not None
        return done / (time.monotonic() - start)
    finally:
        gc.unfreeze()
        c.close()
        for key in client.scan_iter(match=f"{key_prefix}:pe:*", count=1000):
            client.delete(key)
        client.close()


def _engine_only(settings: Any, key_prefix: str, k: int) -> float:
    """(b') the monitor's shell and engine without faust: confluent batches straight in."""
    from driftline.config import MonitorSettings
    from driftline.streams.monitor import Monitor

    monitor = Monitor(settings, MonitorSettings())
    batch = monitor.msettings.monitor_batch_size
    monitor.watch(_engine(monitor, f"{key_prefix}-eng", "fraud", 5000, ALERT))
    topic = settings.kafka.topic("fraud", "results")
    c = _reader(settings, f"{key_prefix}-engine")
    done, start = 0, None
    gc.freeze()  # as the monitor does once started
    try:
        while done < k:
            msgs = [m for m in c.consume(batch, 1.0) if not m.error()]
            if not msgs:
                continue
            if start is None:
                start = time.monotonic()
            rows = [(m.partition() or 0, m.offset() or 0, m.value() or b"") for m in msgs]
            monitor.handle(topic, rows)
            done += len(msgs)
        assert start is not None
        return done / (time.monotonic() - start)
    finally:
        gc.unfreeze()
        c.close()
        monitor.close_all()


def _latency(prefix: str, key_prefix: str, bursts: int) -> list[float]:
    settings = _settings(prefix, key_prefix)
    conf = settings.kafka.client_config()
    topic = settings.kafka.topic("fraud", "results")
    proc, _out, _log = _spawn_child("latency", prefix, key_prefix, 10**12, 10**12)
    stop = threading.Event()
    sent: dict[int, float] = {}  # bucket start (event time) -> produce time of its crossing event
    p = Producer({**conf, "linger.ms": 0})

    def traffic() -> None:
        i = 0
        burst_every = 3.0
        next_burst = time.time() + 8.0  # let the monitor join its group first
        phase = np.random.default_rng(3)  # crossings at random points of their bucket
        while not stop.is_set():
            now_ms = int(time.time() * 1000)
            for part in range(PARTITIONS):
                p.produce(topic, _event(i, now_ms, 0.01), partition=part)
                i += 1
            if time.time() >= next_burst and len(sent) < bursts:
                t = int(time.time() * 1000)
                bucket = t - t % 1000
                if t - bucket < 700:  # the whole burst must land in one bucket
                    for j in range(20):
                        p.produce(topic, _event(i, t, 0.99), partition=j % PARTITIONS)
                        i += 1
                    crossing = time.time()  # the 20th high score makes the count cross
                    p.flush(5)
                    sent[bucket] = crossing
                    next_burst = time.time() + burst_every + float(phase.uniform(0, 1))
            p.poll(0)
            time.sleep(0.01)
        p.flush(10)

    th = threading.Thread(target=traffic)
    th.start()
    latencies: list[float] = []
    c = Consumer(
        {
            **conf,
            "group.id": f"{prefix}-lat",
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
        }
    )
    c.subscribe([settings.kafka.topic("notifications")])
    deadline = time.time() + 30 + bursts * 4
    try:
        while time.time() < deadline and len(latencies) < bursts:
            msg = c.poll(0.2)
            if msg is None or msg.error():
                continue
            arrived = time.time()
            n = orjson.loads(msg.value() or b"{}")
            if n.get("state") != "firing":
                continue
            bucket = int(n["at"]) - 1000
            if bucket in sent:
                latencies.append(arrived - sent[bucket])
    finally:
        stop.set()
        th.join(15)
        c.close()
        proc.kill()
        proc.wait(10)
    return latencies


_TEMP: list[Path] = []


def _remove_temp() -> None:
    import shutil

    for path in _TEMP:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


@contextlib.contextmanager
def _link(settings: Any, delay_ms: float) -> Any:
    """Run ``bench/_link.py`` in front of Redis; yields the Redis URL that goes through it."""
    import socket

    target = urlsplit(settings.redis.redis_url.get_secret_value())
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).with_name("_link.py")),
            str(port),
            target.hostname or "127.0.0.1",
            str(target.port or 6379),
            str(delay_ms),
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != b"ready":
            raise SystemExit("the delay relay did not start")
        yield f"redis://127.0.0.1:{port}{target.path or '/0'}", _rtt_ms(port)
    finally:
        proc.kill()
        proc.wait(10)


def _rtt_ms(port: int) -> float:
    """Median Redis PING round trip (ms) to 127.0.0.1:``port``."""
    out = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("_link.py")), "--measure", str(port)],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout)


def _cleanup(prefix: str, key_prefix: str) -> None:
    import redis
    from confluent_kafka.admin import AdminClient

    settings = _settings(prefix, key_prefix)
    admin = AdminClient(settings.kafka.client_config())
    topics = [t for t in admin.list_topics(timeout=10).topics if t.startswith(prefix + ".")]
    if topics:
        for f in admin.delete_topics(topics, operation_timeout=15).values():
            with contextlib.suppress(Exception):
                f.result(30)
    client = redis.Redis.from_url(settings.redis.redis_url.get_secret_value())
    keys = list(client.scan_iter(match=f"{key_prefix}:*", count=1000))
    for i in range(0, len(keys), 500):
        client.delete(*keys[i : i + 500])
    client.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument(
        "--throughput-events",
        type=int,
        default=200_000,
        help="events over which (a) and (b) rates are measured",
    )
    ap.add_argument("--per-event", type=int, default=20_000, help="events for (c)")
    ap.add_argument("--bursts", type=int, default=10)
    ap.add_argument("--role", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--prefix", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--key-prefix", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--m", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--redis-url", default=None, help=argparse.SUPPRESS)
    ap.add_argument(
        "--link-ms",
        type=float,
        default=0.25,
        help="one-way delay of the relay for the networked (b) and (c); 0 skips them",
    )
    ap.add_argument("--link-events", type=int, default=3_000, help="events for networked (c)")
    args = ap.parse_args()
    if args.role:
        _child(args)
        return

    from driftline.streams.control import ensure_topics

    run = uuid.uuid4().hex[:8]
    prefix, key_prefix = f"bench-{run}", f"bench-{run}"
    settings = _settings(prefix, key_prefix)
    k = settings.kafka
    n = args.events
    m = min(args.throughput_events, n)
    try:
        ensure_topics(k, [k.topic("fraud", "results")], partitions=PARTITIONS)
        ensure_topics(k, [k.topic("assays"), k.topic("notifications")], partitions=1)
        t0 = (int(time.time()) // 60 - 24 * 60) * 60_000
        print(f"producing {n:,} result events ...", flush=True)
        _produce(k.client_config(), k.topic("fraud", "results"), n, t0, seed=1)

        print("(a) bare faust agent ...", flush=True)
        a = _run_child("bare", prefix, key_prefix, m, m, timeout=600)
        rate_a = (a["seen"] - a["first_count"]) / (a["last"] - a["first"])
        print("(a') faust batch drain that only counts ...", flush=True)
        a2 = _run_child("drain", prefix, key_prefix, m, m, timeout=600)
        rate_a2 = (a2["seen"] - a2["first_count"]) / (a2["last"] - a2["first"])
        print("(b) driftline monitor ...", flush=True)
        b = _run_child("monitor", prefix, key_prefix, n, m, timeout=1800)
        rate_b = (b["seen_at_m"] - b["first_count"]) / (b["at_m"] - b["first"])
        rate_b_all = (b["seen"] - b["first_count"]) / (b["last"] - b["first"])
        print("(b') driftline engine without faust ...", flush=True)
        rate_e = _engine_only(settings, key_prefix, m)
        print("(c) per-event implementation ...", flush=True)
        rate_c = _per_event(settings, key_prefix, min(args.per_event, n))
        rate_bn = rate_cn = None
        rtt_local = _rtt_ms(int(urlsplit(settings.redis.redis_url.get_secret_value()).port or 6379))
        rtt_link = float("nan")
        if args.link_ms > 0:
            with _link(settings, args.link_ms) as (url, rtt_link):
                print(f"(b) and (c) with Redis behind a {args.link_ms} ms link ...", flush=True)
                bn = _run_child("monitor-net", f"{prefix}", f"{key_prefix}-net", m, m, 1800, url)
                rate_bn = (bn["seen"] - bn["first_count"]) / (bn["last"] - bn["first"])
                net = _settings(prefix, f"{key_prefix}-net", url)
                rate_cn = _per_event(net, f"{key_prefix}-net", min(args.link_events, n))

        lat_prefix = f"{prefix}-lat"
        ensure_topics(
            _settings(lat_prefix, key_prefix).kafka,
            [f"{lat_prefix}.fraud.results"],
            partitions=PARTITIONS,
        )
        ensure_topics(
            _settings(lat_prefix, key_prefix).kafka,
            [f"{lat_prefix}.assays", f"{lat_prefix}.notifications"],
            partitions=1,
        )
        print("alert latency ...", flush=True)
        lats = _latency(lat_prefix, f"{key_prefix}-lat", args.bursts)
    finally:
        _cleanup(prefix, key_prefix)
        _cleanup(prefix, f"{key_prefix}-net")
        _cleanup(f"{prefix}-lat", f"{key_prefix}-lat")
    _remove_temp()  # kept when a step failed: its log is named in the error

    print()
    print(f"{'system':<34}{'events/s':>12}")
    print(f"{'(a) bare faust agent (ceiling)':<34}{rate_a:>12,.0f}")
    label_a2 = "(a') faust batch drain, no work"
    print(f"{label_a2:<34}{rate_a2:>12,.0f}")
    print(f"{'(b) driftline monitor':<34}{rate_b:>12,.0f}   ({rate_b_all:,.0f} over all {n:,})")
    label_e = "(b') engine alone, no faust"
    print(f"{label_e:<34}{rate_e:>12,.0f}")
    print(f"{'(c) per-event, 1 Redis RTT/event':<34}{rate_c:>12,.0f}")
    if rate_bn is not None and rate_cn is not None:
        print(
            f"with Redis behind a relay adding {args.link_ms} ms each way (PING round trip "
            f"{rtt_link:.3f} ms instead of {rtt_local:.3f} ms on loopback):"
        )
        print(f"{'(b) driftline monitor':<34}{rate_bn:>12,.0f}")
        print(f"{'(c) per-event, 1 Redis RTT/event':<34}{rate_cn:>12,.0f}")
    print()
    mem = b["memory"]
    print("Redis state of (b) while events flow (bytes):")
    print(f"{'events':>10}{'total':>12}{'assay buckets':>15}{'per assay':>12}{'alert buckets':>15}")
    for row in mem:
        print(
            f"{row['events']:>10,}{row['total']:>12,}{row['assay_buckets']:>15,}"
            f"{row['assay_buckets'] // 2:>12,}{row['alert_buckets']:>15,}"
        )
    lat = np.array(lats) if lats else np.array([np.nan])
    p50, p99 = float(np.percentile(lat, 50)), float(np.percentile(lat, 99))
    print(
        f"alert latency over {len(lats)} crossings: p50 {p50:.3f} s, p99 {p99:.3f} s "
        "(lateness 0, 1 s buckets)"
    )
    half = next((r for r in mem if r["checkpoint"] == n // 2), mem[0])
    last = mem[-1]
    growth = last["assay_buckets"] / max(1, half["assay_buckets"])
    print()
    print(f"goal b/a: {rate_b / rate_a:.2f} (target >= 0.7)")
    print(f"b/a': {rate_b / rate_a2:.2f} (share of the batch drain's ceiling the monitor keeps)")
    print(f"goal b/c: {rate_b / rate_c:.1f} (target >= 20)")
    if rate_bn is not None and rate_cn is not None:
        print(f"b/c with a {rtt_link:.2f} ms round trip to Redis: {rate_bn / rate_cn:.1f}")
    print(f"goal b'/c (engine without faust): {rate_e / rate_c:.1f} (target >= 20)")
    print(f"goal alert latency p99: {p99:.3f} s (target <= 2.0 s = interval + 1 s)")
    print(
        f"goal redis memory per assay after {n:,} events: {last['assay_buckets'] // 2:,} bytes, "
        f"{growth:.2f}x the value at {half['events']:,} events (target flat: <= 1.2x)"
    )


if __name__ == "__main__":
    main()
