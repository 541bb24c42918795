"""A running ``driftline monitor`` picks up a pipeline deployed after it started."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from driftline.config import KafkaSettings, RedisSettings, Settings
from driftline.spec import load_spec
from driftline.streams._monitor_redis import check_redis
from driftline.streams.control import ControlPlane, ensure_topics
from driftline.streams.monitor import Monitor

from ._monitor_helpers import produce, stop, wait_for
from ._private_redis import PrivateRedis

pytestmark = pytest.mark.integration

MODELS = Path(__file__).resolve().parents[2] / "examples" / "fraud" / "models"

SPEC = f"""
name: late
models:
  - {{name: ccfraud, path: {MODELS}/ccfraud.onnx}}
alerts:
  burst:
    when: count(ccfraud.outputs[0][0] > 0.9, "2s", "1s") >= 5
options: {{lateness: 0s, partitions: 2}}
"""


def _row(i: int, t: int, v: float) -> bytes:
    doc: dict[str, Any] = {
        "id": f"r{i}",
        "row": 0,
        "time": t,
        "pipeline": "late",
        "spec": "s",
        "inputs": [0.0] * 29,
        "outputs": {"ccfraud": [[v]]},
        "models": {"ccfraud": "x"},
    }
    return orjson.dumps(doc)


def _wait_for_group(k: KafkaSettings, group: str, log: Path, timeout: float = 90) -> None:
    from confluent_kafka import ConsumerGroupState
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(k.client_config())
    deadline = time.monotonic() + timeout
    while True:
        d = admin.describe_consumer_groups([group])[group].result(10)
        held = [tp.topic for m in d.members for tp in m.assignment.topic_partitions]
        if d.state == ConsumerGroupState.STABLE and k.topic("pipelines") in held:
            return
        assert time.monotonic() < deadline, (d.state, held, log.read_text(errors="replace"))
        time.sleep(0.5)


def test_pipeline_deployed_after_start_is_monitored(topic_prefix, redis_prefix, tmp_path):  # type: ignore[no-untyped-def]
    env = dict(os.environ)
    env.update(
        {
            "DRIFTLINE_TOPIC_PREFIX": topic_prefix,
            "DRIFTLINE_KEY_PREFIX": redis_prefix,
            "DRIFTLINE_MONITOR_GROUP": f"{topic_prefix}-monitor",
            "DRIFTLINE_MONITOR_DATADIR": str(tmp_path / "faust"),
            "DRIFTLINE_MONITOR_IDLE_CLOSE_MS": "3600000",
        }
    )
    k = KafkaSettings(topic_prefix=topic_prefix)
    ensure_topics(k, [k.topic("assays"), k.topic("notifications")], partitions=1)
    log = tmp_path / "monitor.log"
    with open(log, "ab") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "driftline", "monitor"],
            env=env,
            cwd=tmp_path,
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    try:
        # the monitor has joined its group (stable, holding the control topic) with nothing
        # to watch yet: what is deployed from now on reaches it only by following
        _wait_for_group(k, f"{topic_prefix}-monitor", log)
        spec = tmp_path / "pipeline.yaml"
        spec.write_text(SPEC)
        cp = ControlPlane(k)
        cp.deploy(load_spec(spec))
        cp.close()
        t0 = (int(time.time()) // 10 - 60) * 10_000
        rows = [(i % 2, _row(i, t0 + 3_000 + i, 0.95), 0) for i in range(6)]
        rows += [(p, _row(100 + p, t0 + 9_000, 0.1), 0) for p in range(2)]
        ensure_topics(k, [k.topic("late", "results")], partitions=2)
        produce(k.client_config(), k.topic("late", "results"), rows, txid=f"{topic_prefix}-p")
        notes = wait_for(
            k.client_config(),
            k.topic("notifications"),
            lambda got: any(n.get("state") == "resolved" for n in got),
            timeout=60,
        )
    finally:
        stop(proc)
    text = log.read_text(errors="replace")
    got = [(n["state"], n["at"] - t0) for n in notes if n["kind"] == "alert"]
    assert got == [("firing", 4_000), ("resolved", 6_000)], text


def test_a_spec_met_with_redis_down_starts_once_redis_answers(  # type: ignore[no-untyped-def]
    topic_prefix, redis_prefix, tmp_path
):
    """Redis may start after the monitor (compose, a failover): the spec waits, not dropped."""
    k = KafkaSettings(topic_prefix=topic_prefix)
    path = tmp_path / "pipeline.yaml"
    path.write_text(SPEC)
    spec = load_spec(path)
    cp = ControlPlane(k)
    cp.deploy(spec)
    cp.close()
    server = PrivateRedis(tmp_path)  # not started: nothing listens on its port yet
    client = redis.Redis.from_url(server.url, socket_connect_timeout=1, socket_timeout=2)
    settings = Settings(kafka=k, redis=RedisSettings(key_prefix=redis_prefix))
    monitor = Monitor(settings, client=client)
    try:
        check_redis(client, redis_prefix)  # Redis down at start: a warning, not an error
        monitor.apply_spec("late", spec.to_canonical())
        assert "late" not in monitor.pipelines and "late" in monitor.waiting
        monitor.retry_waiting()  # still down
        assert "late" in monitor.waiting
        server.start()  # Redis answers now
        deadline = time.monotonic() + 30
        while "late" in monitor.waiting and time.monotonic() < deadline:
            time.sleep(0.1)
            monitor.retry_waiting()
        assert "late" in monitor.pipelines and not monitor.waiting
        assert monitor.topics == [k.topic("late", "results")]
        # Redis goes away again: a newer spec (or an undeploy) replaces the waiting one
        server.stop()
        monitor.apply_spec("late", spec.to_canonical())
        assert "late" in monitor.waiting
        monitor.apply_spec("late", None)
        assert not monitor.waiting and not monitor.pipelines
    finally:
        monitor.close_all()
        server.stop()
