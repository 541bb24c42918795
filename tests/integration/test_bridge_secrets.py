"""Secrets test: with secrets configured, nothing the bridge logs, exports or writes has them."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from driftline.alerts.testing import HttpReceiver
from driftline.config import KafkaSettings
from driftline.events import Notification, encode, notification_id

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _all_messages(topic: str) -> list[bytes]:
    consumer = Consumer(
        KafkaSettings().client_config(
            **{"group.id": f"audit-{time.time_ns()}", "auto.offset.reset": "earliest"}
        )
    )
    consumer.assign([TopicPartition(topic, 0, 0)])
    out: list[bytes] = []
    idle = 0
    while idle < 3:
        batch = [x for x in consumer.consume(100, 1.0) if x.error() is None]
        idle = 0 if batch else idle + 1
        for x in batch:
            out.append((x.key() or b"") + (x.value() or b"") + repr(x.headers() or []).encode())
    consumer.close()
    return out


def test_no_secret_in_logs_metrics_or_topics(
    topic_factory: Callable[..., str], unique: str, redis_prefix: str, tmp_path: Path
) -> None:
    topic = topic_factory("notifications")
    deadletter = topic_factory("deadletter")
    smtp_password = f"smtp-pw-{unique}"
    slack_token = f"T0/B0/slacktoken{unique}"
    hook_token = f"hooktoken{unique}"
    hook_secret = f"signing-key-{unique}"
    secrets = [smtp_password, slack_token, hook_token, hook_secret]
    metrics_port = _free_port()
    # The receiver fails everything and quotes the request path (which holds the token) in its
    # error bodies; SMTP points at a closed port. Every path ends in errors and dead letters.
    with HttpReceiver(lambda p, n: (500, {}, 0.0), echo_path=True) as rx:
        env = {
            **os.environ,
            "DRIFTLINE_BRIDGE_TOPIC": topic,
            "DRIFTLINE_BRIDGE_DEADLETTER_TOPIC": deadletter,
            "DRIFTLINE_BRIDGE_GROUP": f"bridge-secrets-{unique}",
            "DRIFTLINE_BRIDGE_ALLOWED_TARGETS": (
                "email:ops@example.com,slack:ops,webhook:pager,stdout"
            ),
            "DRIFTLINE_KEY_PREFIX": redis_prefix,
            "DRIFTLINE_KAFKA_OPTIONS": json.dumps({"session.timeout.ms": 6000}),
            "DRIFTLINE_SMTP_URL": f"smtp://ops:{smtp_password}@127.0.0.1:{_free_port()}",
            "DRIFTLINE_SLACK_WEBHOOKS": json.dumps({"ops": f"{rx.url}/services/{slack_token}"}),
            "DRIFTLINE_WEBHOOKS": json.dumps(
                {"pager": {"url": f"{rx.url}/hook?token={hook_token}", "secret": hook_secret}}
            ),
            "DRIFTLINE_BRIDGE_MAX_ATTEMPTS": "2",
            "DRIFTLINE_BRIDGE_BACKOFF_S": "0.05",
            "DRIFTLINE_BRIDGE_TIMEOUT_S": "2",
            "DRIFTLINE_BRIDGE_GROUP_MS": "0",
            "DRIFTLINE_LOG_LEVEL": "DEBUG",
        }
        # The webhook URL is also given through a file, as an orchestrator would mount it.
        hooks_file = tmp_path / "webhooks.json"
        hooks_file.write_text(env.pop("DRIFTLINE_WEBHOOKS"))
        env["DRIFTLINE_WEBHOOKS_FILE"] = str(hooks_file)
        note = Notification(
            id=notification_id("fraud", "a", 1, "firing"), alert="a", pipeline="fraud",
            state="firing", value=1.0, condition="mean(x) > 0.5", window={"start": 0, "end": 1},
            at=1, severity="critical", spec="sha256:0",
            notify=["email:ops@example.com", "slack:ops", "webhook:pager", "stdout"],
        )  # fmt: skip
        producer = Producer(KafkaSettings().client_config())
        producer.produce(topic, key=note.key.encode(), value=encode(note))
        assert producer.flush(30) == 0
        proc = subprocess.Popen(
            [sys.executable, "-m", "driftline.alerts.bridge", "--metrics-port", str(metrics_port)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + 90
            while len(_all_messages(deadletter)) < 3:
                if time.monotonic() > deadline or proc.poll() is not None:
                    proc.kill()
                    _out, err = proc.communicate(timeout=10)
                    raise AssertionError(f"dead letters did not arrive: {err[-3000:]!r}")
                time.sleep(0.5)
            metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
            proc.send_signal(signal.SIGTERM)
            stdout, stderr = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=10)
        requests = rx.snapshot()

    logs = stdout.decode() + stderr.decode()
    written = b"".join(_all_messages(deadletter) + _all_messages(topic)).decode(errors="replace")
    # The bridge did run into the errors that could have leaked the secrets.
    assert any(slack_token in r.path for r in requests)
    assert any(hook_token in r.path for r in requests)
    assert "http-500" in written and "smtp-connection" in written
    assert "driftline_bridge_notifications_deadlettered_total" in metrics
    assert "FIRING: a on fraud" in logs  # the stdout channel delivered
    for secret in secrets:
        assert secret not in logs, secret
        assert secret not in metrics, secret
        assert secret not in written, secret
