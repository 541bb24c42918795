"""The bridge against real Kafka and Redis, a real SMTP server and local HTTP receivers."""

from __future__ import annotations

import asyncio
import email
import email.policy
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from driftline.alerts import _metrics as m
from driftline.alerts.bridge import Bridge
from driftline.alerts.testing import HttpReceiver, always
from driftline.config import BridgeSettings, KafkaSettings, RedisSettings
from driftline.events import Notification, encode, notification_id

pytestmark = pytest.mark.integration

KAFKA_OPTIONS = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500}


def make_notification(
    alert: str, at: int, targets: list[str], state: str = "firing", pipeline: str = "fraud"
) -> Notification:
    return Notification(
        id=notification_id(pipeline, alert, at, state),
        alert=alert,
        pipeline=pipeline,
        state=state,  # type: ignore[arg-type]
        value=14.0,
        condition='count(ccfraud.outputs[0][0] > 0.95, "5m", "1s") > 10',
        window={"start": at - 300_000, "end": at},
        at=at,
        severity="critical",
        notify=targets,
        spec="sha256:abc123",
    )


def produce(topic: str, notifications: list[Notification]) -> None:
    producer = Producer(KafkaSettings().client_config())
    for n in notifications:
        producer.produce(topic, key=n.key.encode(), value=encode(n))
    assert producer.flush(30) == 0


def read_all(topic: str, expected: int, timeout_s: float = 30.0) -> list[Any]:
    consumer = Consumer(
        KafkaSettings().client_config(
            **{"group.id": f"reader-{time.time_ns()}", "auto.offset.reset": "earliest"}
        )
    )
    consumer.subscribe([topic])
    out: list[Any] = []
    deadline = time.monotonic() + timeout_s
    while len(out) < expected and time.monotonic() < deadline:
        out += [x for x in consumer.consume(100, 0.5) if x.error() is None]
    # A short extra read catches messages beyond the expected count.
    out += [x for x in consumer.consume(100, 1.0) if x.error() is None]
    consumer.close()
    return out


def committed(group: str, topic: str) -> int:
    consumer = Consumer(KafkaSettings().client_config(**{"group.id": group}))
    parts = consumer.committed([TopicPartition(topic, 0)], timeout=10)
    consumer.close()
    return int(parts[0].offset)


def wait_for(predicate: Callable[[], bool], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.1)


@contextmanager
def running(bridge: Bridge) -> Iterator[Bridge]:
    """Run a bridge on its own event loop thread; stop it gracefully afterwards."""
    loop = asyncio.new_event_loop()
    stop: list[asyncio.Event] = []
    errors: list[BaseException] = []

    def target() -> None:
        asyncio.set_event_loop(loop)

        async def main() -> None:
            stop.append(asyncio.Event())
            await bridge.run(stop[0])

        try:
            loop.run_until_complete(main())
        except BaseException as exc:
            errors.append(exc)
        finally:
            loop.close()

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    wait_for(lambda: bool(stop) or bool(errors), 30)
    try:
        yield bridge
    finally:
        if stop and not loop.is_closed():
            loop.call_soon_threadsafe(stop[0].set)
        thread.join(60)
        assert not thread.is_alive()
        if errors:
            raise errors[0]


#: Targets the tests below deliver to without deploying a spec: the operator's allow-list.
ALLOWED = (
    "slack:fraud-alerts", "webhook:pager", "email:oncall@example.com",
    "slack:c", "slack:slow", "slack:nowhere",
)  # fmt: skip


@pytest.fixture
def topics(topic_factory: Callable[..., str]) -> tuple[str, str]:
    # The bridge's own control topic (see settings_for), so that no colleague's spec counts.
    topic_factory("pipelines", config={"cleanup.policy": "compact"})
    return topic_factory("notifications"), topic_factory("deadletter")


def settings_for(
    topics: tuple[str, str], unique: str, **extra: Any
) -> tuple[BridgeSettings, KafkaSettings]:
    base: dict[str, Any] = {
        "bridge_topic": topics[0],
        "bridge_deadletter_topic": topics[1],
        "bridge_group": f"bridge-{unique}",
        "bridge_group_ms": 0,
        "bridge_backoff_s": 0.05,
        "bridge_backoff_max_s": 0.2,
        "bridge_timeout_s": 2.0,
        "bridge_rate_limits": {"slack": 50.0, "webhook": 50.0, "email": 50.0},
        "bridge_pipelines_topic": f"test.{unique}.pipelines",
        "bridge_allowed_targets": ALLOWED,
    }
    base.update(extra)
    return BridgeSettings(**base), KafkaSettings(kafka_options=KAFKA_OPTIONS)


def test_slack_and_webhook_payloads_signatures_and_commit(
    topics: tuple[str, str], unique: str, redis_prefix: str
) -> None:
    secret = f"whsec-{unique}"
    with HttpReceiver(always(200), secrets={"/hooks/pager": secret}) as rx:
        settings, kafka = settings_for(
            topics,
            unique,
            slack_webhooks={"fraud-alerts": f"{rx.url}/slack/T000/B000/tok{unique}"},
            webhooks={"pager": {"url": f"{rx.url}/hooks/pager", "secret": secret}},
        )
        notes = [
            make_notification("high_fraud_5m", 1_732_170_000_000, ["slack:fraud-alerts"]),
            make_notification(
                "score_drift",
                1_732_170_060_000,
                ["webhook:pager", "slack:fraud-alerts"],
                state="resolved",
            ),
        ]
        produce(topics[0], notes)
        bridge = Bridge(settings, kafka, RedisSettings(key_prefix=redis_prefix))
        with running(bridge):
            wait_for(lambda: len([r for r in rx.snapshot() if r.status == 200]) >= 3)
            wait_for(lambda: committed(settings.bridge_group, topics[0]) == 2, 30)
        reqs = rx.snapshot()
    assert len(reqs) == 3
    slack = [orjson.loads(r.body) for r in reqs if r.path.startswith("/slack/")]
    assert {p["attachments"][0]["color"] for p in slack} == {"#d93f0b", "#2eb67d"}
    firing = next(p for p in slack if p["attachments"][0]["color"] == "#d93f0b")
    assert "FIRING: high_fraud_5m on fraud" in firing["text"]
    facts = str(firing["attachments"][0]["blocks"])
    # Slack mrkdwn carries '>' as '&gt;' (and shows it as '>').
    assert "&gt; 10" in facts and "sha256:abc123" in facts and "14" in facts
    hook = next(r for r in reqs if r.path == "/hooks/pager")
    assert hook.signature_ok is True
    body = orjson.loads(hook.body)
    assert body["state"] == "resolved"
    assert [n["id"] for n in body["notifications"]] == [notes[1].id]
    assert hook.headers["X-Driftline-Delivery"] == notes[1].id


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def test_email_over_starttls_with_login(
    topics: tuple[str, str], unique: str, redis_prefix: str, tmp_path: Path
) -> None:
    import ssl

    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

    cert, key = _self_signed(tmp_path)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    received: list[Any] = []
    logins: list[tuple[bytes, bytes]] = []

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            received.append(envelope)
            return "250 OK"

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
        logins.append((data.login, data.password))
        return AuthResult(success=data.login == b"ops" and data.password == b"s3cr3t pw")

    with socket.socket() as probe:  # aiosmtpd's Controller needs a concrete free port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(
        Handler(), hostname="127.0.0.1", port=port, tls_context=tls, require_starttls=True,
        authenticator=authenticator, auth_require_tls=True,
    )  # fmt: skip
    controller.start()
    try:
        settings, kafka = settings_for(
            topics,
            unique,
            smtp_url=f"smtp://ops:s3cr3t%20pw@localhost:{port}?starttls=true&cafile={cert}",
            smtp_from="driftline@example.com",
        )
        note = make_notification("high_fraud_5m", 1_732_170_000_000, ["email:oncall@example.com"])
        produce(topics[0], [note])
        bridge = Bridge(settings, kafka, RedisSettings(key_prefix=redis_prefix), ["email"])
        with running(bridge):
            wait_for(lambda: len(received) == 1)
            wait_for(lambda: committed(settings.bridge_group, topics[0]) == 1, 30)
    finally:
        controller.stop()
    assert logins == [(b"ops", b"s3cr3t pw")]
    envelope = received[0]
    assert envelope.rcpt_tos == ["oncall@example.com"]
    msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
    subject = str(msg["Subject"])
    assert "FIRING" in subject and "high_fraud_5m" in subject and "14 > 10" in subject
    text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    html = msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
    for needle in ("fraud", "sha256:abc123", "2024-11-21", "critical", note.id):
        assert needle in text and needle in html


def test_429_retry_after_is_honoured_and_500_retried(
    topics: tuple[str, str], unique: str, redis_prefix: str
) -> None:
    script = {0: (429, {"Retry-After": "1"}, 0.0), 1: (500, {}, 0.0)}

    def policy(path: str, n: int) -> tuple[int, dict[str, str], float]:
        return script.get(n, (200, {}, 0.0))

    with HttpReceiver(policy) as rx:
        settings, kafka = settings_for(topics, unique, slack_webhooks={"c": f"{rx.url}/slack/c"})
        retried_before = m.RETRIED.labels("slack", "http-429")._value.get()
        produce(topics[0], [make_notification("a", 1_000, ["slack:c"])])
        with running(Bridge(settings, kafka, RedisSettings(key_prefix=redis_prefix))):
            wait_for(lambda: any(r.status == 200 for r in rx.snapshot()))
        reqs = rx.snapshot()
    assert [r.status for r in reqs] == [429, 500, 200]
    # The receiver asked for one second; a plain backoff here would be at most 0.05 s.
    assert reqs[1].arrived - reqs[0].arrived >= 1.0
    assert m.RETRIED.labels("slack", "http-429")._value.get() == retried_before + 1


def test_timeouts_then_dead_letter_with_last_error(
    topics: tuple[str, str], unique: str, redis_prefix: str
) -> None:
    with HttpReceiver(lambda p, n: (200, {}, 1.5)) as rx:
        token = f"tok-{unique}"
        settings, kafka = settings_for(
            topics, unique,
            slack_webhooks={"slow": f"{rx.url}/slack/{token}"},
            bridge_timeout_s=0.5, bridge_max_attempts=2,
        )  # fmt: skip
        note = make_notification("a", 2_000, ["slack:slow", "slack:nowhere", "sms:123"])
        produce(topics[0], [note])
        with running(Bridge(settings, kafka, RedisSettings(key_prefix=redis_prefix))):
            wait_for(lambda: committed(settings.bridge_group, topics[0]) == 1, 60)
        attempts = len(rx.snapshot())
    dead = read_all(topics[1], 3)
    assert attempts == 2
    by_target = {dict(x.headers())["driftline-target"].decode(): dict(x.headers()) for x in dead}
    assert set(by_target) == {"slack:slow", "slack:nowhere", "sms:123"}
    assert by_target["slack:slow"]["driftline-error"] == b"timeout"
    assert by_target["slack:slow"]["driftline-attempts"] == b"2"
    assert by_target["slack:nowhere"]["driftline-error"] == b"unconfigured-target"
    assert by_target["sms:123"]["driftline-error"] == b"bad-target"
    for x in dead:
        assert orjson.loads(x.value())["id"] == note.id
        assert token not in str(x.headers())


def test_permanent_error_is_not_retried(
    topics: tuple[str, str], unique: str, redis_prefix: str
) -> None:
    with HttpReceiver(always(404)) as rx:
        settings, kafka = settings_for(topics, unique, slack_webhooks={"c": f"{rx.url}/s/c"})
        produce(topics[0], [make_notification("a", 3_000, ["slack:c"])])
        with running(Bridge(settings, kafka, RedisSettings(key_prefix=redis_prefix))):
            wait_for(lambda: committed(settings.bridge_group, topics[0]) == 1, 60)
        assert len(rx.snapshot()) == 1
    [dead] = read_all(topics[1], 1)
    assert dict(dead.headers())["driftline-error"] == b"http-404"


def test_redelivery_is_suppressed_and_bursts_are_grouped(
    topics: tuple[str, str], unique: str, redis_prefix: str
) -> None:
    with HttpReceiver(always(200)) as rx:
        settings, kafka = settings_for(
            topics, unique, slack_webhooks={"c": f"{rx.url}/s/c"}, bridge_group_ms=1500
        )
        burst = [make_notification("flappy", 10_000 + 100 * i, ["slack:c"]) for i in range(5)]
        burst.append(make_notification("other", 10_000, ["slack:c"]))
        produce(topics[0], burst)
        redis = RedisSettings(key_prefix=redis_prefix)
        with running(Bridge(settings, kafka, redis)):
            wait_for(lambda: committed(settings.bridge_group, topics[0]) == 6, 60)
        first = rx.snapshot()
        # A second consumer group rereads everything: Redis says all was already sent.
        dup_before = m.DUPLICATES.labels("slack")._value.get()
        again = settings.model_copy(update={"bridge_group": f"again-{unique}"})
        with running(Bridge(again, kafka, redis)):
            wait_for(lambda: committed(again.bridge_group, topics[0]) == 6, 60)
        second = rx.snapshot()
    assert len(first) == 2
    grouped = next(orjson.loads(r.body) for r in first if b"flappy" in r.body)
    assert len(grouped["attachments"]) == 5
    assert "(5 notifications)" in grouped["text"]
    assert len(second) == 2
    assert m.DUPLICATES.labels("slack")._value.get() == dup_before + 6
