"""A worker killed with SIGKILL again and again loses and doubles nothing (DESIGN §6).

Requests flow in while a worker subprocess is killed and restarted; afterwards a
``read_committed`` reader must see exactly one result per (request id, row). One kill lands, by
construction, inside a transaction whose results already reached the broker: a
``read_uncommitted`` reader sees them, a ``read_committed`` one never does.
"""

from __future__ import annotations

import collections
import json
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from onnx import TensorProto, helper

from driftline.config import KafkaSettings

pytestmark = pytest.mark.integration

WIDTH = 29
REQUESTS = 20_000
KILLS = 6

_WORKER = textwrap.dedent(
    """
    import os
    import sys
    import time

    import onnxruntime as ort

    from driftline.config import KafkaSettings, WorkerSettings
    from driftline.streams.worker import PipelineRuntime, RuntimeModel, StaticSource, Worker

    model_path, prefix, group, worker_id, hang_flag = sys.argv[1:]
    session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])

    class Runner:
        def run(self, x):
            # A heavier model: a batch takes long enough that kills land inside transactions.
            time.sleep(0.01)
            return session.run(None, {"x": x})

    runtime = PipelineRuntime(
        name="crash",
        version="sha256:crash",
        models=(RuntimeModel("m", "sha256:m", Runner()),),
        validations={"low": lambda t: t[("m", "outputs")][0][:, 0] < 0.5},
        input_width=29,
    )
    class SlowToCommit(Worker):
        # Results reach the broker, then the commit waits: kills land inside open transactions.
        def _produce_all(self, outputs):
            super()._produce_all(outputs)
            if os.path.exists(hang_flag):
                # On the broker, but not committed: then wait for the kill.
                self._producer.flush(30)
                n = sum(len(o.results) for _, _, _, o in outputs if o is not None)
                print(f"hanging in an open transaction after {n} results", flush=True)
                time.sleep(3600)
            time.sleep(0.02)

    settings = WorkerSettings(worker_group=group, worker_id=worker_id, worker_batch_size=100)
    print("worker up", flush=True)
    kafka = KafkaSettings(topic_prefix=prefix)
    SlowToCommit(kafka, settings, StaticSource([runtime]), ["crash"]).run()
    """
)


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
    kafka: KafkaSettings, topic: str, expected: dict[str, int], done: threading.Event
) -> None:
    """Send REQUESTS requests (1–3 rows each) over ~40 s so that kills land mid-stream."""
    producer = Producer(kafka.client_config(**{"linger.ms": 5, "enable.idempotence": True}))
    rng = np.random.default_rng(7)
    chunk = 250
    for start in range(0, REQUESTS, chunk):
        for i in range(start, start + chunk):
            n = int(rng.integers(1, 4))
            rid = f"r{i}"
            expected[rid] = n
            body = {"id": rid, "tensor": rng.normal(size=(n, WIDTH)).round(5).tolist()}
            producer.produce(topic, orjson.dumps(body), rid.encode())
        producer.poll(0)
        time.sleep(0.5)
    assert producer.flush(60) == 0
    done.set()


def _produced(consumer: Consumer, topic: str) -> int:
    """Sum of the topic's high watermarks: grows with every produced (even aborted) record."""
    return sum(
        consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(3)
    )


def _start(
    script: Path, model: Path, kafka: KafkaSettings, group: str, wid: str, log: Path
) -> subprocess.Popen[bytes]:
    hang_flag = script.with_name("hang")
    env = dict(os.environ)
    env["DRIFTLINE_KAFKA_OPTIONS"] = json.dumps(
        {"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000}
    )
    with log.open("ab") as f:
        return subprocess.Popen(
            [sys.executable, str(script), str(model), kafka.topic_prefix, group, wid, hang_flag],
            stdout=f,
            stderr=subprocess.STDOUT,
            env=env,
        )


def test_sigkill_loops_leave_exactly_one_result_per_row(
    tmp_path: Path, unique: str, topic_factory: Callable[..., str]
) -> None:
    kafka = KafkaSettings(topic_prefix=f"test.{unique}")
    requests = topic_factory("crash.requests", partitions=3)
    results = topic_factory("crash.results", partitions=3)
    topic_factory("crash.deadletter", partitions=1)
    script = tmp_path / "worker_main.py"
    script.write_text(_WORKER)
    model = _model(tmp_path / "m.onnx")
    log = tmp_path / "worker.log"
    group, wid = f"crash-{unique}", f"crash-{unique}"

    expected: dict[str, int] = {}
    done = threading.Event()
    feeder = threading.Thread(target=_feed, args=(kafka, requests, expected, done), daemon=True)
    feeder.start()
    rnd = random.Random(11)
    kills = 0
    watcher = Consumer(kafka.client_config(**{"group.id": f"watch-{unique}"}))
    proc = _start(script, model, kafka, group, wid, log)
    try:
        while kills < KILLS:
            # Kill while the worker is busy: once it has produced (committed or not) since it
            # started, then at a random moment of the backlog it is working through.
            before = _produced(watcher, results)
            deadline = time.monotonic() + 60
            while _produced(watcher, results) == before and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(rnd.uniform(0.0, 0.3))
            assert proc.poll() is None, log.read_text()[-3000:]
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
            kills += 1
            proc = _start(script, model, kafka, group, wid, log)
        watcher.close()
        feeder.join(120)
        assert done.is_set()
        # The last kill lands inside an open transaction whose results reached the broker.
        flag = script.with_name("hang")
        flag.touch()
        extra = Producer(kafka.client_config(**{"linger.ms": 5}))
        for i in range(50):
            rid = f"x{i}"
            expected[rid] = 1
            extra.produce(requests, orjson.dumps({"id": rid, "tensor": [[0.1] * WIDTH]}), rid)
        assert extra.flush(30) == 0
        deadline = time.monotonic() + 120
        hung = None
        while hung is None and time.monotonic() < deadline:
            found = re.findall(
                r"hanging in an open transaction after (\d+) results", log.read_text()
            )
            hung = int(found[0]) if found else None
            time.sleep(0.1)
        assert hung, log.read_text()[-3000:]
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        flag.unlink()
        proc = _start(script, model, kafka, group, wid, log)
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
        reader.subscribe([results])
        seen: collections.Counter[tuple[str, int]] = collections.Counter()
        deadline = time.monotonic() + 120
        quiet_since = None
        while time.monotonic() < deadline:
            msgs = [m for m in reader.consume(5000, 1.0) if m.error() is None]
            for m in msgs:
                ev = orjson.loads(m.value())
                seen[(ev["id"], ev["row"])] += 1
            if sum(seen.values()) >= total_rows:
                # Stay a little longer: a duplicate would arrive after the last original.
                quiet_since = quiet_since or time.monotonic()
                if time.monotonic() - quiet_since > 3:
                    break
        reader.close()
        # The aborted output is in the log, visible to a reader that does not skip aborted
        # transactions: at least the hung transaction's results more than committed ones.
        dirty = Consumer(
            kafka.client_config(
                **{
                    "group.id": f"dirty-{unique}",
                    "auto.offset.reset": "earliest",
                    "isolation.level": "read_uncommitted",
                    "enable.auto.commit": False,
                }
            )
        )
        dirty.subscribe([results])
        uncommitted = 0
        deadline = time.monotonic() + 120
        while uncommitted < total_rows + hung and time.monotonic() < deadline:
            uncommitted += sum(m.error() is None for m in dirty.consume(5000, 1.0))
        dirty.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    # Every start printed its line: the first, one per kill, one after the hung transaction.
    assert log.read_text().count("worker up") == KILLS + 2
    assert uncommitted >= total_rows + hung
    want = {(rid, r) for rid, n in expected.items() for r in range(n)}
    missing = want - set(seen)
    doubled = {k: c for k, c in seen.items() if c > 1}
    extra = set(seen) - want
    assert not missing, f"{len(missing)} rows missing, e.g. {sorted(missing)[:5]}"
    assert not doubled, f"{len(doubled)} rows doubled, e.g. {list(doubled.items())[:5]}"
    assert not extra
    assert len(want) == total_rows
