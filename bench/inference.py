"""Inference throughput and latency, side by side on one machine, one broker, one model.

Three systems serve the same rows of the fraud example (29 float inputs) with the same ONNX
champion (``examples/fraud/models/ccfraud.onnx``):

(a) ceiling   a bare confluent-kafka consume → produce pipe with the worker's transactional
              settings (one transaction per micro-batch) and no model at all;
(b) driftline ``driftline.streams.worker.Worker`` serving the example pipeline (champion, shadow,
              both validations), exactly once;
(c) MLServer  MLServer (from PyPI) in its Kafka server mode with a small onnxruntime runtime,
              installed in ``bench/.mlserver-venv`` on first use (it pins its own dependencies).

Each system runs in its own process. Throughput: N requests are waiting in the input topic
(for MLServer, which reads from the latest offset, they are sent right after it is ready);
the rate is the number of outputs divided by the span of their timestamps. Latency: requests
are sent at a fixed moderate rate and a ``read_committed`` reader notes when each result
arrives; latency = arrival − the request's timestamp.

Usage::

    python bench/inference.py            # full run, ~5–8 minutes
    python bench/inference.py --quick    # ~2–3 minutes
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
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

import numpy as np
import orjson
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parents[1]
FRAUD = ROOT / "examples" / "fraud"
MODEL = FRAUD / "models" / "ccfraud.onnx"
BOOTSTRAP = os.environ.get("DRIFTLINE_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
PARTITIONS = 3


# ----------------------------------------------------------------------------- helpers
def _rows(n: int, seed: int) -> np.ndarray:
    spec = importlib.util.spec_from_file_location("fraud_generate", FRAUD / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return np.asarray(module.normal_rows(n, seed), dtype=np.float64)


def _driftline_messages(rows: np.ndarray, tag: str) -> list[tuple[bytes, bytes, list[Any]]]:
    return [
        (f"{tag}{i}".encode(), orjson.dumps({"id": f"{tag}{i}", "tensor": [r]}), [])
        for i, r in enumerate(rows.tolist())
    ]


def _mlserver_messages(rows: np.ndarray, tag: str) -> list[tuple[bytes, bytes, list[Any]]]:
    headers = [("mlserver-model", b"ccfraud")]
    return [
        (
            f"{tag}{i}".encode(),
            orjson.dumps(
                {"inputs": [{"name": "tensor", "shape": [1, 29], "datatype": "FP32", "data": r}]}
            ),
            headers,
        )
        for i, r in enumerate(rows.tolist())
    ]


def _create(admin: AdminClient, topics: list[str], partitions: int = PARTITIONS) -> None:
    futures = admin.create_topics([NewTopic(t, partitions, 1) for t in topics])
    for f in futures.values():
        f.result(30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        md = admin.list_topics(timeout=5)
        if all(t in md.topics and md.topics[t].partitions for t in topics):
            return
        time.sleep(0.1)


def _send(topic: str, messages: list[tuple[bytes, bytes, list[Any]]], rate: float | None) -> None:
    producer = Producer({"bootstrap.servers": BOOTSTRAP, "linger.ms": 2 if rate else 20})
    start = time.monotonic()
    for i, (key, value, headers) in enumerate(messages):
        while True:
            try:
                producer.produce(topic, value, key, headers=headers or None)
                break
            except BufferError:
                producer.poll(0.05)
        if rate is not None:
            ahead = (i + 1) / rate - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)
            producer.poll(0)
    producer.flush(60)


class _Reader:
    """Reads an output topic (read_committed) in a thread: arrival time per key, timestamps."""

    def __init__(self, topic: str):
        self.topic = topic
        self.arrivals: dict[bytes, float] = {}
        self.first = self.last = 0.0
        self.count = 0
        self._stop = threading.Event()
        self._consumer = Consumer(
            {
                "bootstrap.servers": BOOTSTRAP,
                "group.id": f"bench-reader-{uuid.uuid4().hex}",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 10,
            }
        )
        # Start at the current end: only what the system under test writes from now on counts.
        start = []
        for p in range(PARTITIONS):
            _low, high = self._consumer.get_watermark_offsets(TopicPartition(topic, p), 10)
            start.append(TopicPartition(topic, p, high))
        self._consumer.assign(start)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            msgs = self._consumer.consume(5000, 0.05)
            now = time.time()
            for m in msgs:
                if m.error() is not None:
                    continue
                if not self.count:
                    self.first = now
                self.last = now
                self.count += 1
                key = m.key()
                if key is not None:
                    self.arrivals.setdefault(key, now)

    def wait(self, n: int, timeout: float, stall_s: float = 20.0) -> bool:
        """Until ``n`` outputs arrived, ``timeout`` passed, or nothing came for ``stall_s``."""
        deadline = time.monotonic() + timeout
        seen, progress = self.count, time.monotonic()
        while self.count < n and time.monotonic() < deadline:
            time.sleep(0.1)
            if self.count != seen:
                seen, progress = self.count, time.monotonic()
            elif time.monotonic() - progress > stall_s:
                break
        return self.count >= n

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._consumer.close()

    def throughput(self) -> float:
        """Outputs per second as a read_committed reader sees them, first to last arrival."""
        if self.count < 2:
            return float("nan")
        return (self.count - 1) / max(self.last - self.first, 1e-3)


def _latencies(reader: _Reader, sent: dict[bytes, float]) -> tuple[float, float, int]:
    lat = [reader.arrivals[k] - t for k, t in sent.items() if k in reader.arrivals]
    if not lat:
        return float("nan"), float("nan"), 0
    arr = np.array(lat) * 1000
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 99)), len(lat)


def _send_timed(
    topic: str, messages: list[tuple[bytes, bytes, list[Any]]], rate: float
) -> dict[bytes, float]:
    """Send at ``rate``/s; returns each key's send time (wall clock, as the reader's)."""
    producer = Producer({"bootstrap.servers": BOOTSTRAP, "linger.ms": 0})
    sent: dict[bytes, float] = {}
    start = time.monotonic()
    for i, (key, value, headers) in enumerate(messages):
        ahead = i / rate - (time.monotonic() - start)
        if ahead > 0:
            time.sleep(ahead)
        sent[key] = time.time()
        producer.produce(topic, value, key, headers=headers or None)
        producer.poll(0)
    producer.flush(30)
    return sent


# ----------------------------------------------------------------------------- (a) ceiling
def serve_ceiling(in_topic: str, out_topic: str, group: str, idle_s: float) -> None:
    """Consume → produce the same bytes, one transaction per micro-batch, no model."""
    consumer = Consumer(
        {
            "bootstrap.servers": BOOTSTRAP,
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
        }
    )
    producer = Producer(
        {
            "bootstrap.servers": BOOTSTRAP,
            "transactional.id": f"bench-ceiling-{group}",
            "linger.ms": 2,
            "queue.buffering.max.messages": 1_000_000,
            "enable.idempotence": True,
        }
    )
    producer.init_transactions(30)
    consumer.subscribe([in_topic])
    last = time.monotonic()
    while time.monotonic() - last < idle_s:
        msgs = consumer.consume(2000, 0.02)
        if not msgs:
            continue
        last = time.monotonic()
        producer.begin_transaction()
        offsets: dict[tuple[str, int], int] = {}
        for m in msgs:
            if m.error() is not None:
                continue
            producer.produce(out_topic, m.value(), m.key())
            offsets[(m.topic(), m.partition())] = m.offset() + 1  # type: ignore[index,operator]
        producer.send_offsets_to_transaction(
            [TopicPartition(t, p, o) for (t, p), o in offsets.items()],
            consumer.consumer_group_metadata(),
            30,
        )
        producer.commit_transaction(30)
    consumer.close()


# ----------------------------------------------------------------------------- (b) driftline
def _fraud_runtime(store: str, name: str) -> Any:
    from driftline.models import LoadedModel, ModelStore
    from driftline.spec import load_spec
    from driftline.streams._worker_source import runtime_from_canonical

    spec = load_spec(FRAUD / "pipeline.yaml")
    models = ModelStore(store)
    for m in spec.models:
        assert m.path is not None
        models.put(m.name, m.path)
    canonical = dict(spec.to_canonical(), name=name)
    return runtime_from_canonical(
        canonical, Path(store), lambda sha, path, name: LoadedModel(path, name)
    )


def serve_driftline(prefix: str, group: str, idle_s: float, store: str, name: str) -> None:
    from driftline.config import KafkaSettings, WorkerSettings
    from driftline.streams.worker import StaticSource, Worker

    runtime = _fraud_runtime(store, name)
    kafka = KafkaSettings(topic_prefix=prefix)
    settings = WorkerSettings(worker_group=group, worker_id=group)
    # The worker is one Python thread: its CPU clock over the run bounds its throughput
    # (start-up and the final idle seconds included, so slightly more than per request).
    cpu = time.thread_time()
    stats = Worker(kafka, settings, StaticSource([runtime]), [name]).run(max_idle_s=idle_s)
    cpu = time.thread_time() - cpu
    if stats.messages:
        print(
            f"    driftline worker thread: {cpu / stats.messages * 1e6:.2f} µs CPU per request "
            f"({stats.messages} requests)",
            flush=True,
        )


def core_breakdown(rows: np.ndarray, store: str, batch: int = 2000) -> dict[str, float]:
    """CPU µs per request (thread clock, best of 3) of the worker's pure core and its parts,
    on the example pipeline, in batches as the worker serves them; no Kafka."""
    from driftline.streams._worker_core import process_batch
    from driftline.streams.codec import decode_requests

    runtime = _fraud_runtime(store, "fraud")
    values = [v for _, v, _ in _driftline_messages(rows, "c")]
    batches = [values[i : i + batch] for i in range(0, len(values), batch)]
    ids = [[f"k{i}" for i in range(len(b))] for b in batches]
    times = [[int(time.time() * 1000)] * len(b) for b in batches]
    matrices = [rows[i : i + batch].astype(np.float32) for i in range(0, len(rows), batch)]

    def per_request(fn: Any) -> float:
        best = float("inf")
        for _ in range(3):
            t = time.thread_time()
            for k in range(len(batches)):
                fn(k)
            best = min(best, time.thread_time() - t)
        return best / len(values) * 1e6

    parse = per_request(lambda k: list(map(orjson.loads, batches[k])))
    decode = per_request(
        lambda k: decode_requests(batches[k], width=29, default_ids=ids[k], default_times=times[k])
    )
    models = per_request(lambda k: [m.runner.run(matrices[k]) for m in runtime.models])
    core = per_request(
        lambda k: process_batch(runtime, batches[k], default_ids=ids[k], default_times=times[k])
    )
    return {
        "parse": parse,
        "matrix": decode - parse,
        "models": models,
        "checks_and_events": core - decode - models,
        "core": core,
    }


# ----------------------------------------------------------------------------- (c) MLServer
# MLServer's environment, runtime and start-up live in bench/_mlserver.py (the MLServer
# integration test starts it the same way).
def start_mlserver(workdir: Path, in_topic: str, out_topic: str) -> subprocess.Popen[bytes] | str:
    from _mlserver import start_mlserver as start

    return start(workdir, in_topic, out_topic, BOOTSTRAP, MODEL)


# ----------------------------------------------------------------------------- driver
def _spawn(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, __file__, *args])


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def run(args: argparse.Namespace) -> int:
    n = args.messages or (20_000 if args.quick else 100_000)
    rate = args.rate
    lat_n = int(rate * (args.latency_seconds or (10 if args.quick else 20)))
    # MLServer reads a burst into unbounded concurrent tasks; beyond a few thousand its
    # producer times out and drops answers, so its burst is kept to what it can absorb.
    ml_n = min(n, 5_000)
    tag = uuid.uuid4().hex[:8]
    prefix = f"bench{tag}"
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    topics = {
        "requests": f"{prefix}.fraud.requests",
        "results": f"{prefix}.fraud.results",
        "deadletter": f"{prefix}.fraud.deadletter",
        "ceiling_out": f"{prefix}.ceiling.out",
        "lat_in": f"{prefix}.lat.in",
        "lat_out": f"{prefix}.lat.out",
        "lat_requests": f"{prefix}.fraudlat.requests",
        "lat_results": f"{prefix}.fraudlat.results",
        "lat_deadletter": f"{prefix}.fraudlat.deadletter",
        "ml_in": f"{prefix}.ml.in",
        "ml_out": f"{prefix}.ml.out",
        "ml_lat_in": f"{prefix}.mllat.in",
        "ml_lat_out": f"{prefix}.mllat.out",
    }
    _create(admin, list(topics.values()))
    print(f"bench: {n} requests of 1 row x 29 floats; latency at {rate:g}/s for {lat_n} requests")
    rows = _rows(max(n, lat_n), seed=1)
    results: dict[str, dict[str, float]] = {}
    store = tempfile.mkdtemp(prefix="driftline-bench-")
    parts = core_breakdown(rows[: min(n, 20_000)], store)
    results["core_us_per_request"] = parts
    print(
        "driftline pure core, CPU per request (thread clock, batches of 2,000): "
        f"{parts['core']:.2f} µs = parse {parts['parse']:.2f} + float matrix "
        f"{parts['matrix']:.2f} + champion and shadow {parts['models']:.2f} + validations "
        f"and result events {parts['checks_and_events']:.2f}"
    )
    try:
        _send(topics["requests"], _driftline_messages(rows[:n], "t"), None)

        # Throughput of (a) and (b), alternating and best of --repeat runs: other load on the
        # machine then hurts both alike.
        a_runs: list[float] = []
        b_runs: list[float] = []
        for r in range(args.repeat):
            reader = _Reader(topics["ceiling_out"])
            proc = _spawn("_ceiling", topics["requests"], topics["ceiling_out"], f"a{r}{tag}", "3")
            ok = reader.wait(n, 300)
            _stop(proc)
            reader.close()
            a_runs.append(reader.throughput() if ok else float("nan"))
            reader = _Reader(topics["results"])
            proc = _spawn("_driftline", prefix, f"b{r}{tag}", "3", store)
            ok = reader.wait(n, 300)
            _stop(proc)
            reader.close()
            b_runs.append(reader.throughput() if ok else float("nan"))
            print(
                f"    run {r + 1}: ceiling {a_runs[-1]:.0f} msg/s, driftline {b_runs[-1]:.0f} msg/s"
            )
        a_tp, b_tp = max(a_runs), max(b_runs)

        # (a) ceiling latency.
        proc = _spawn("_ceiling", topics["lat_in"], topics["lat_out"], f"al{tag}", "600")
        reader = _Reader(topics["lat_out"])
        time.sleep(5)  # group join
        sent = _send_timed(topics["lat_in"], _driftline_messages(rows[:lat_n], "l"), rate)
        reader.wait(lat_n, 60)
        _stop(proc)
        reader.close()
        a_p50, a_p99, got = _latencies(reader, sent)
        print(f"    ceiling latency: {got} of {len(sent)} answered")
        results["a"] = {"throughput": a_tp, "p50": a_p50, "p99": a_p99}
        print(f"(a) ceiling   {a_tp:10.0f} msg/s   p50 {a_p50:7.1f} ms   p99 {a_p99:7.1f} ms")

        # (b) driftline latency.
        lat_prefix_proc = _spawn("_driftline_lat", prefix, f"bl{tag}", "600", store)
        reader = _Reader(topics["lat_results"])
        time.sleep(8)  # model load and group join
        sent = _send_timed(topics["lat_requests"], _driftline_messages(rows[:lat_n], "l"), rate)
        reader.wait(lat_n, 60)
        _stop(lat_prefix_proc)
        reader.close()
        b_p50, b_p99, got = _latencies(reader, sent)
        print(f"    driftline latency: {got} of {len(sent)} answered")
        results["b"] = {"throughput": b_tp, "p50": b_p50, "p99": b_p99}
        print(f"(b) driftline {b_tp:10.0f} msg/s   p50 {b_p50:7.1f} ms   p99 {b_p99:7.1f} ms")

        # (c) MLServer.
        c_tp = c_p50 = c_p99 = float("nan")
        if args.skip_mlserver:
            print("(c) MLServer  skipped (--skip-mlserver)")
        else:
            with tempfile.TemporaryDirectory() as d:
                started = start_mlserver(Path(d), topics["ml_in"], topics["ml_out"])
                if isinstance(started, str):
                    print(f"!!! (c) MLServer NOT MEASURED: {started}")
                else:
                    reader = _Reader(topics["ml_out"])
                    _send(topics["ml_in"], _mlserver_messages(rows[:ml_n], "m"), None)
                    ok = reader.wait(ml_n, 600)
                    reader.close()
                    # Rate of what it did answer; a burst it cannot absorb loses requests
                    # (its producer times out with no back-pressure), reported below.
                    c_tp = reader.throughput()
                    _stop(started)
                    if not ok:
                        print(
                            f"!!! MLServer answered {reader.count} of {ml_n} requests of the "
                            "burst; the rest failed inside it (KafkaTimeoutError in its log)"
                        )
            with tempfile.TemporaryDirectory() as d:
                started = start_mlserver(Path(d), topics["ml_lat_in"], topics["ml_lat_out"])
                if not isinstance(started, str):
                    reader = _Reader(topics["ml_lat_out"])
                    sent = _send_timed(
                        topics["ml_lat_in"], _mlserver_messages(rows[:lat_n], "l"), rate
                    )
                    reader.wait(lat_n, 120)
                    reader.close()
                    _stop(started)
                    c_p50, c_p99, got = _latencies(reader, sent)
                    print(f"    MLServer latency: {got} of {len(sent)} answered")
            print(
                f"(c) MLServer  {c_tp:10.0f} msg/s   p50 {c_p50:7.1f} ms   p99 {c_p99:7.1f} ms"
                f"   ({ml_n} requests)"
            )
        results["c"] = {"throughput": c_tp, "p50": c_p50, "p99": c_p99}
    finally:
        with contextlib.suppress(Exception):
            for f in admin.delete_topics(list(topics.values()), operation_timeout=15).values():
                f.result(30)
    ba = b_tp / a_tp if a_tp else float("nan")
    bc = b_tp / c_tp if c_tp and c_tp == c_tp else float("nan")
    print(f"ratio b/a (driftline / ceiling):  {ba:.2f}")
    print(f"ratio b/c (driftline / MLServer): {bc:.1f}")
    print(json.dumps({"results": results, "b/a": ba, "b/c": bc}))
    print(f"goal throughput_vs_ceiling: {ba:.2f} (target 0.5)")
    print(f"goal throughput_vs_mlserver: {bc:.1f} (target 10)")
    return 0


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "_ceiling":
        serve_ceiling(sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5]))
        return 0
    if len(sys.argv) > 1 and sys.argv[1] in ("_driftline", "_driftline_lat"):
        prefix, group, idle, store = sys.argv[2:6]
        # The latency phase serves the same spec under its own name, so on its own topics.
        name = "fraudlat" if sys.argv[1] == "_driftline_lat" else "fraud"
        serve_driftline(prefix, group, float(idle), store, name)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="Fewer messages (~2–3 minutes).")
    parser.add_argument("--messages", type=int, help="Requests for the throughput runs.")
    parser.add_argument("--rate", type=float, default=1000.0, help="Requests/s for latency.")
    parser.add_argument("--latency-seconds", type=float, help="Duration of the latency runs.")
    parser.add_argument("--repeat", type=int, default=2, help="Throughput runs of (a), (b).")
    parser.add_argument("--skip-mlserver", action="store_true", help="Measure (a) and (b) only.")
    return run(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
