"""The bridge keeps delivering while its Redis (de-duplication, rate limits) is unreachable.

Each test gives the bridge a private ``redis-server`` that it stops and starts again; the
bridge runs as a subprocess (``python -m driftline.alerts.bridge``) against the real broker
and a local webhook receiver. With Redis down, delivery is at-least-once: nothing is held
back, and a redelivered notification may be sent twice.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import orjson
import pytest
import redis

from driftline.alerts.testing import HttpReceiver, always
from driftline.events import Notification

from ._private_redis import PrivateRedis, free_port
from .test_bridge import committed, make_notification, produce

pytestmark = pytest.mark.integration

TARGET = "webhook:pager"
DOWN_LOG = "de-duplication is unavailable"
UP_LOG = "Redis answers again"


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    try:
        yield server
    finally:
        server.stop()


class BridgeProcess:
    """``python -m driftline.alerts.bridge`` with its stderr in a file; fails fast if it dies."""

    def __init__(self, env: dict[str, str], log: Path, metrics_port: int) -> None:
        self.log = log
        self.metrics_port = metrics_port
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "driftline.alerts.bridge", "--channels", "webhook",
                 "--metrics-port", str(metrics_port)],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )  # fmt: skip

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait(self, predicate: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"the bridge exited ({self.proc.returncode}) while waiting for {what}:\n"
                    + self.text()[-3000:]
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}:\n" + self.text()[-3000:])
            time.sleep(0.1)

    def metric(self, name: str, **labels: str) -> float:
        text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10).text
        want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        for line in text.splitlines():
            match = re.fullmatch(rf"{name}\{{(.*)\}} (\S+)", line)
            if match and ",".join(sorted(match.group(1).split(","))) == want:
                return float(match.group(2))
        return 0.0

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return int(self.proc.returncode)


@contextmanager
def bridge_process(
    topic_factory: Callable[..., str], unique: str, redis_url: str, rx: HttpReceiver, tmp: Path
) -> Iterator[tuple[BridgeProcess, str, str]]:
    topic = topic_factory("notifications")
    deadletter = topic_factory("deadletter")
    group = f"bridge-redis-{unique}"
    env = {
        **os.environ,
        "DRIFTLINE_REDIS_URL": redis_url,
        "DRIFTLINE_REDIS_TIMEOUT_S": "2",
        "DRIFTLINE_KEY_PREFIX": f"test:{unique}",
        "DRIFTLINE_BRIDGE_TOPIC": topic,
        "DRIFTLINE_BRIDGE_DEADLETTER_TOPIC": deadletter,
        "DRIFTLINE_BRIDGE_GROUP": group,
        "DRIFTLINE_BRIDGE_ALLOWED_TARGETS": TARGET,
        "DRIFTLINE_KAFKA_OPTIONS": json.dumps(
            {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500}
        ),
        "DRIFTLINE_WEBHOOKS": json.dumps({"pager": {"url": f"{rx.url}/hook", "secret": unique}}),
        "DRIFTLINE_BRIDGE_RATE_LIMITS": json.dumps({"webhook": 50.0}),
        "DRIFTLINE_BRIDGE_BACKOFF_S": "0.05",
        "DRIFTLINE_BRIDGE_BACKOFF_MAX_S": "0.2",
        "DRIFTLINE_BRIDGE_TIMEOUT_S": "5",
        "DRIFTLINE_BRIDGE_GROUP_MS": "0",
        "DRIFTLINE_LOG_LEVEL": "WARNING",
    }
    proc = BridgeProcess(env, tmp / "bridge.log", free_port())
    try:
        yield proc, topic, group
    finally:
        proc.stop()


def delivered(rx: HttpReceiver) -> Counter[str]:
    """How many times each notification id reached the receiver (signed and answered 200)."""
    out: Counter[str] = Counter()
    for r in rx.snapshot():
        assert r.signature_ok is True
        if r.status == 200:
            out.update(n["id"] for n in orjson.loads(r.body)["notifications"])
    return out


def notes(first: int, count: int) -> list[Notification]:
    return [make_notification(f"alert_{i}", 1_000 * i, [TARGET]) for i in range(first, count)]


def test_delivery_goes_on_while_redis_is_down_and_dedup_resumes(
    topic_factory: Callable[..., str], unique: str, tmp_path: Path, private_redis: PrivateRedis
) -> None:
    private_redis.start()
    with (
        HttpReceiver(always(200), secrets={"/hook": unique}) as rx,
        bridge_process(topic_factory, unique, private_redis.url, rx, tmp_path) as (
            bridge,
            topic,
            group,
        ),
    ):

        def mark(n: Notification) -> str:
            return f"test:{unique}:{{notify}}:sent:{n.id}:{TARGET}"

        # (a) Redis up: delivered once each, and marked.
        up = notes(0, 3)
        produce(topic, up)
        bridge.wait(lambda: committed(group, topic) == 3, "the first notifications")
        assert delivered(rx) == {n.id: 1 for n in up}
        assert all(private_redis.exists(mark(n)) for n in up)

        # (b) Redis stopped: still delivered (at least once), and the bridge lives on.
        private_redis.stop()
        down = notes(3, 6)
        produce(topic, down)
        bridge.wait(lambda: committed(group, topic) == 6, "delivery with Redis down")
        got = delivered(rx)
        assert all(got[n.id] >= 1 for n in down)
        assert all(got[n.id] == 1 for n in up)
        assert bridge.proc.poll() is None
        assert bridge.text().count(DOWN_LOG) == 1  # once per outage, not once per job
        assert UP_LOG not in bridge.text()
        for operation in ("check", "mark"):
            count = bridge.metric(
                "driftline_bridge_dedup_unavailable_total", channel="webhook", operation=operation
            )
            assert count == len(down), operation

        # (c) Redis back (empty) on the same port: delivered, marked, and de-dup works again.
        private_redis.start()
        again = notes(6, 9)
        produce(topic, again)
        bridge.wait(lambda: committed(group, topic) == 9, "delivery with Redis back")
        bridge.wait(lambda: all(private_redis.exists(mark(n)) for n in again), "the marks")
        assert bridge.text().count(UP_LOG) == 1
        # An already delivered and marked notification published again is not sent twice.
        produce(topic, again[:1])
        bridge.wait(lambda: committed(group, topic) == 10, "the copy to be consumed")
        got = delivered(rx)
        assert all(got[n.id] == 1 for n in up + again), got
        assert all(got[n.id] >= 1 for n in down)
        assert bridge.text().count(DOWN_LOG) == 1
        assert bridge.stop() == 0


def test_bridge_starts_with_redis_down_and_delivers(
    topic_factory: Callable[..., str], unique: str, tmp_path: Path, private_redis: PrivateRedis
) -> None:
    # The private server is not started yet: nothing listens on its port.
    with (
        HttpReceiver(always(200), secrets={"/hook": unique}) as rx,
        bridge_process(topic_factory, unique, private_redis.url, rx, tmp_path) as (
            bridge,
            topic,
            group,
        ),
    ):
        first = notes(0, 2)
        produce(topic, first)
        bridge.wait(lambda: committed(group, topic) == 2, "delivery with Redis down at start")
        assert all(delivered(rx)[n.id] >= 1 for n in first)
        assert bridge.text().count(DOWN_LOG) == 1
        assert bridge.proc.poll() is None

        # Redis starts: the bridge's client connects by itself and marks deliveries again.
        private_redis.start()
        later = notes(2, 3)
        produce(topic, later)
        bridge.wait(lambda: committed(group, topic) == 3, "delivery after Redis started")
        key = f"test:{unique}:{{notify}}:sent:{later[0].id}:{TARGET}"
        bridge.wait(lambda: private_redis.exists(key), "the mark in the started Redis")
        assert delivered(rx)[later[0].id] == 1
        assert bridge.text().count(UP_LOG) == 1
        assert bridge.stop() == 0


@pytest.mark.parametrize(
    ("missing", "command"),
    [
        ("-evalsha", "'evalsha'"),
        ("-time", "Redis refused the rate limit scripts"),
        ("-set", "'set'"),
        ("-exists", "'exists'"),
    ],
)
def test_a_redis_user_without_a_needed_command_stops_the_bridge_at_start(
    topic_factory: Callable[..., str],
    unique: str,
    tmp_path: Path,
    private_redis: PrivateRedis,
    missing: str,
    command: str,
) -> None:
    private_redis.start()
    admin = redis.Redis(port=private_redis.port)
    admin.acl_setuser(
        "limited", enabled=True, passwords=[f"+pw{unique}"], keys=["*"],
        commands=["+@all", missing],
    )  # fmt: skip
    admin.close()
    url = f"redis://limited:pw{unique}@127.0.0.1:{private_redis.port}/0"
    with (
        HttpReceiver(always(200), secrets={"/hook": unique}) as rx,
        bridge_process(topic_factory, unique, url, rx, tmp_path) as (bridge, _topic, _group),
    ):
        assert bridge.proc.wait(60) == 3
        text = bridge.text()
    assert "Redis refused" in text and command in text
    assert "+evalsha +script|load" in text  # the fix: what to grant
    assert "Traceback" not in text
    assert f"pw{unique}" not in text


def test_a_redis_user_with_the_documented_commands_is_enough(
    topic_factory: Callable[..., str], unique: str, tmp_path: Path, private_redis: PrivateRedis
) -> None:
    from driftline.alerts.bridge import REDIS_ACL

    private_redis.start()
    admin = redis.Redis(port=private_redis.port)
    rules = REDIS_ACL.replace("<key prefix>", f"test:{unique}").split()
    admin.execute_command("ACL", "SETUSER", "bridge", "on", f">pw{unique}", *rules)
    admin.close()
    url = f"redis://bridge:pw{unique}@127.0.0.1:{private_redis.port}/0"
    with (
        HttpReceiver(always(200), secrets={"/hook": unique}) as rx,
        bridge_process(topic_factory, unique, url, rx, tmp_path) as (bridge, topic, group),
    ):
        sent = notes(0, 2)
        produce(topic, sent)
        bridge.wait(lambda: committed(group, topic) == 2, "delivery with the least privileges")
        produce(topic, sent[:1])  # a copy: suppressed by the de-duplication mark
        bridge.wait(lambda: committed(group, topic) == 3, "the copy to be consumed")
        assert delivered(rx) == {n.id: 1 for n in sent}
        assert DOWN_LOG not in bridge.text()
        assert all(
            private_redis.exists(f"test:{unique}:{{notify}}:sent:{n.id}:{TARGET}") for n in sent
        )
        assert bridge.stop() == 0
