"""A worker outlives its broker going away and coming back, and loses and doubles nothing.

A private single-node KRaft broker (its own ports, its own data directory) is stopped and
started again, as in a broker restart or a rolling upgrade, while requests keep arriving and
an exactly-once worker subprocess serves them. The worker must still be running afterwards,
and a ``read_committed`` reader must see exactly one result per (request id, row).
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import orjson
import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from onnx import TensorProto, helper

from driftline.config import KafkaSettings

from ._private_kafka import PrivateKafka

pytestmark = pytest.mark.integration

WIDTH = 29
REQUESTS = 20_000
CHUNK = 250
PACE_S = 0.375  # 80 chunks: about 30 s of steady traffic
OUTAGE_S = 8.0
LONG_OUTAGE_S = 80.0
PARTITIONS = 3

_WORKER = textwrap.dedent(
    """
    import logging
    import sys

    import onnxruntime as ort

    from driftline.config import KafkaSettings, WorkerSettings
    from driftline.streams.worker import PipelineRuntime, RuntimeModel, StaticSource, Worker

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    model_path, bootstrap, prefix, group, worker_id = sys.argv[1:]
    session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])

    class Runner:
        def run(self, x):
            return session.run(None, {"x": x})

    runtime = PipelineRuntime(
        name="outage",
        version="sha256:outage",
        models=(RuntimeModel("m", "sha256:m", Runner()),),
        validations={"low": lambda t: t[("m", "outputs")][0][:, 0] < 0.5},
        input_width=29,
    )
    settings = WorkerSettings(worker_group=group, worker_id=worker_id, worker_batch_size=100)
    kafka = KafkaSettings(bootstrap_servers=bootstrap, topic_prefix=prefix)
    print("worker up", flush=True)
    stats = Worker(kafka, settings, StaticSource([runtime]), ["outage"]).run()
    print("worker stopped:", stats, flush=True)
    """
)


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[PrivateKafka]:
    """A KRaft broker of this test only; stopped at teardown whatever happened."""
    with PrivateKafka(tmp_path) as broker:
        yield broker


def _model(path: Path) -> Path:
    w = helper.make_tensor("w", TensorProto.FLOAT, [WIDTH, 1], [0.05] * WIDTH)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["xw"]),
            helper.make_node("Sigmoid", ["xw"], ["y"]),
        ],
        "m",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", WIDTH])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 1])],
        initializer=[w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def _feed(
    kafka: KafkaSettings,
    topic: str,
    expected: dict[str, int],
    done: threading.Event,
    errors: list[str],
) -> None:
    """Send REQUESTS requests (1-3 rows each) at a steady pace, through the outage."""
    producer = Producer(
        kafka.client_config(
            **{
                "linger.ms": 5,
                "enable.idempotence": True,
                # Buffer and retry through the outage rather than give up.
                "message.timeout.ms": 300_000,
                "reconnect.backoff.max.ms": 1000,
            }
        )
    )

    def delivered(err: object, _msg: object) -> None:
        if err is not None:
            errors.append(str(err))

    rng = np.random.default_rng(7)
    for start in range(0, REQUESTS, CHUNK):
        for i in range(start, start + CHUNK):
            n = int(rng.integers(1, 4))
            rid = f"r{i}"
            expected[rid] = n
            body = {"id": rid, "tensor": rng.normal(size=(n, WIDTH)).round(5).tolist()}
            producer.produce(topic, orjson.dumps(body), rid.encode(), on_delivery=delivered)
        producer.poll(0)
        time.sleep(PACE_S)
    if producer.flush(240) == 0:
        done.set()


def _produced(consumer: Consumer, topic: str) -> int:
    """Sum of the topic's high watermarks: grows with every produced (even aborted) record.

    0 while the broker cannot tell yet (a partition of a new topic without a leader).
    """
    try:
        return sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(PARTITIONS)
        )
    except KafkaException:
        return 0


def _start(
    script: Path, model: Path, kafka: KafkaSettings, group: str, wid: str, log: Path
) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env["DRIFTLINE_BOOTSTRAP_SERVERS"] = kafka.bootstrap_servers
    env["DRIFTLINE_KAFKA_OPTIONS"] = json.dumps(
        {"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000}
    )
    with log.open("ab") as f:
        return subprocess.Popen(
            [
                sys.executable,
                str(script),
                str(model),
                kafka.bootstrap_servers,
                kafka.topic_prefix,
                group,
                wid,
            ],
            stdout=f,
            stderr=subprocess.STDOUT,
            env=env,
        )


def _tail(log: Path, chars: int = 4000) -> str:
    return log.read_text(errors="replace")[-chars:]


@pytest.mark.parametrize(
    "outage_s",
    [
        pytest.param(OUTAGE_S, id="8s"),
        # Longer than a transaction call's timeout and the stall limit together: the worker's
        # new producer must wait for the broker instead of giving up.
        pytest.param(LONG_OUTAGE_S, id="80s", marks=pytest.mark.timeout(480)),
    ],
)
def test_worker_survives_broker_restart_with_exactly_one_result_per_row(
    tmp_path: Path, unique: str, private_broker: PrivateKafka, outage_s: float
) -> None:
    kafka = private_broker.settings(topic_prefix=f"test.{unique}")
    requests = kafka.topic("outage", "requests")
    results = kafka.topic("outage", "results")
    private_broker.create_topics(
        {requests: PARTITIONS, results: PARTITIONS, kafka.topic("outage", "deadletter"): 1},
    )
    script = tmp_path / "worker_main.py"
    script.write_text(_WORKER)
    model = _model(tmp_path / "m.onnx")
    log = tmp_path / "worker.log"
    group, wid = f"outage-{unique}", f"outage-{unique}"

    expected: dict[str, int] = {}
    feed_errors: list[str] = []
    done = threading.Event()
    feeder = threading.Thread(
        target=_feed, args=(kafka, requests, expected, done, feed_errors), daemon=True
    )
    proc = _start(script, model, kafka, group, wid, log)
    seen: collections.Counter[tuple[str, int]] = collections.Counter()
    try:
        feeder.start()
        # The broker goes away once the worker is in full swing: results exist and more keep
        # coming, so the stop lands among open transactions.
        watcher = Consumer(kafka.client_config(**{"group.id": f"watch-{unique}"}))
        try:
            deadline = time.monotonic() + 60
            while _produced(watcher, results) < 5_000 and time.monotonic() < deadline:
                assert proc.poll() is None, _tail(log)
                time.sleep(0.1)
            assert _produced(watcher, results) > 0, _tail(log)
        finally:
            watcher.close()
        assert proc.poll() is None, _tail(log)

        private_broker.stop()
        with log.open("a") as f:
            f.write("---- test: broker stopped\n")
        deadline = time.monotonic() + outage_s
        while time.monotonic() < deadline:
            assert proc.poll() is None, _tail(log)
            time.sleep(0.5)
        private_broker.start()
        with log.open("a") as f:
            f.write("---- test: broker started again\n")

        feeder.join(280)
        assert done.is_set(), f"the feeder did not deliver everything: {feed_errors[:5]}"
        assert not feed_errors
        total_rows = sum(expected.values())

        reader = Consumer(
            kafka.client_config(
                **{
                    "group.id": f"check-{unique}",
                    "auto.offset.reset": "earliest",
                    "isolation.level": "read_committed",
                    "enable.auto.commit": False,
                }
            )
        )
        try:
            reader.subscribe([results])
            deadline = time.monotonic() + 120
            quiet_since = None
            while time.monotonic() < deadline:
                for m in reader.consume(5000, 1.0):
                    if m.error() is None:
                        ev = orjson.loads(m.value())
                        seen[(ev["id"], ev["row"])] += 1
                if sum(seen.values()) >= total_rows:
                    # Stay a little longer: a duplicate would arrive after the last original.
                    quiet_since = quiet_since or time.monotonic()
                    if time.monotonic() - quiet_since > 3:
                        break
        finally:
            reader.close()
        alive = proc.poll() is None
        assert alive, f"the worker exited with {proc.returncode}:\n{_tail(log)}"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        with contextlib.suppress(OSError):
            sys.stderr.write(_tail(log, 6000))

    want = {(rid, r) for rid, n in expected.items() for r in range(n)}
    missing = want - set(seen)
    doubled = {k: c for k, c in seen.items() if c > 1}
    extra = set(seen) - want
    assert not missing, f"{len(missing)} rows missing, e.g. {sorted(missing)[:5]}"
    assert not doubled, f"{len(doubled)} rows doubled, e.g. {list(doubled.items())[:5]}"
    assert not extra
    assert len(want) == total_rows
