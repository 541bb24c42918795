"""The bridge delivers only where the operator said, and survives every malformed message.

On the real broker and Redis, with a real SMTP server and a signed-webhook receiver: spoofed
targets, comma lists and made-up pipelines get nothing; Slack control sequences arrive
escaped; each malformed notification is dead-lettered as ``malformed`` and valid ones after
it are still delivered.
"""

from __future__ import annotations

import copy
import socket
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from confluent_kafka import Producer

from driftline.alerts import _metrics as m
from driftline.alerts.bridge import Bridge
from driftline.alerts.testing import HttpReceiver, always
from driftline.config import KafkaSettings, RedisSettings
from driftline.events import Notification, encode
from driftline.spec import spec_from_dict

from .test_bridge import committed, make_notification, read_all, running, settings_for, wait_for

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fraud"
DECLARED = ["email:ops@example.com", "slack:alerts", "webhook:pager"]


def _canonical(name: str, alert_targets: list[str]) -> dict[str, Any]:
    """The canonical spec of the fraud example under ``name``, with its alert's targets; its
    assay notifies ``webhook:pager`` as an assay with ``notify`` deploys."""
    data = yaml.safe_load((EXAMPLE / "pipeline.yaml").read_text())
    data = copy.deepcopy(data)
    data["name"] = name
    data["alerts"]["high_fraud_5m"]["notify"] = alert_targets
    canonical = spec_from_dict(data, EXAMPLE).to_canonical()
    canonical["assays"]["score_drift"]["notify"] = ["webhook:pager"]
    return canonical


def _publish(topic: str, key: str, value: bytes) -> None:
    producer = Producer(KafkaSettings().client_config())
    producer.produce(topic, key=key.encode(), value=value)
    assert producer.flush(30) == 0


def _note(pipeline: str, alert: str, at: int, targets: list[str], **fields: Any) -> Notification:
    base = make_notification(alert, at, targets, pipeline=pipeline)
    return Notification(**{**base.to_dict(), **fields})


def _smtp() -> tuple[Any, list[Any], int]:
    from aiosmtpd.controller import Controller

    received: list[Any] = []

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            received.append(envelope)
            return "250 OK"

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    return controller, received, port


def test_only_declared_or_allowed_targets_get_notifications(
    topic_factory: Callable[..., str], unique: str, redis_prefix: str
) -> None:
    notifications = topic_factory("notifications")
    deadletter = topic_factory("deadletter")
    pipelines = topic_factory("pipelines", config={"cleanup.policy": "compact"})
    fraud, late, madeup = f"fraud-{unique}", f"late-{unique}", f"madeup-{unique}"
    _publish(pipelines, fraud, orjson.dumps(_canonical(fraud, DECLARED)))
    secret = f"whsec-{unique}"
    controller, mails, port = _smtp()
    try:
        with HttpReceiver(always(200), secrets={"/hooks/pager": secret}) as rx:
            settings, kafka = settings_for(
                (notifications, deadletter),
                unique,
                smtp_url=f"smtp://127.0.0.1:{port}",
                slack_webhooks={
                    "alerts": f"{rx.url}/slack/alerts",
                    "allowed": f"{rx.url}/slack/allowed",
                },
                webhooks={"pager": {"url": f"{rx.url}/hooks/pager", "secret": secret}},
                bridge_pipelines_topic=pipelines,
                bridge_allowed_targets=["slack:allowed"],
            )
            before = {c: m.UNAUTHORIZED.labels(c)._value.get() for c in ("email", "webhook")}
            at = 1_732_170_000_000
            valid = [
                # declared for the alert: all three channels; the condition tries Slack mentions
                _note(fraud, "high_fraud_5m", at, DECLARED,
                      condition="count(x) > 10 <!channel> <@U024BE7LH> <https://evil.example|x>"),
                # an assay notifies where its own section says
                _note(fraud, "score_drift", at + 1, ["webhook:pager"], kind="assay"),
                # a quarantined pipeline may reach any target its spec declares
                _note(fraud, "score_drift", at + 2, ["email:ops@example.com"], kind="error"),
                # the operator's allow-list, for any pipeline
                _note(madeup, "anything", at + 3, ["slack:allowed"]),
            ]  # fmt: skip
            spoofed = [
                _note(fraud, "high_fraud_5m", at + 10, ["email:attacker@evil.example"]),
                _note(fraud, "high_fraud_5m", at + 11, ["email:one@x.example,two@y.example"]),
                _note(madeup, "high_fraud_5m", at + 12, ["webhook:pager"]),
                _note(fraud, "not_declared", at + 13, ["webhook:pager"]),
                # an assay's targets are not the alert's, nor the other way round
                _note(fraud, "score_drift", at + 14, ["email:ops@example.com"], kind="assay"),
                _note(fraud, "score_drift", at + 15, ["email:attacker@evil.example"], kind="error"),
            ]
            good = valid[0].to_dict()
            malformed: list[bytes] = [
                orjson.dumps({**good, "value": "abc"}),
                orjson.dumps({**good, "state": 5}),
                orjson.dumps({**good, "id": 12345}),
                orjson.dumps({**good, "at": 1e20}),
                orjson.dumps({**good, "window": [1, 2]}),
                orjson.dumps({**good, "alert": "x\r\nBcc: v@evil.example"}),
                orjson.dumps({**good, "notify": "email:ops@example.com"}),
                b"[" * 100_000,
                b"\xff\xfe not json",
            ]
            # Valid ones after the malformed ones are still delivered.
            after = _note(fraud, "high_fraud_5m", at + 20, ["webhook:pager"])
            producer = Producer(KafkaSettings().client_config())
            for n in valid + spoofed:
                producer.produce(notifications, key=n.key.encode(), value=encode(n))
            for raw in malformed:
                producer.produce(notifications, key=b"x", value=raw)
            producer.produce(notifications, key=after.key.encode(), value=encode(after))
            assert producer.flush(30) == 0
            total = len(valid) + len(spoofed) + len(malformed) + 1
            with running(Bridge(settings, kafka, RedisSettings(key_prefix=redis_prefix))):
                wait_for(lambda: committed(settings.bridge_group, notifications) == total, 90)
                # A spec deployed while the bridge runs is known before its first alert.
                _publish(pipelines, late, orjson.dumps(_canonical(late, ["webhook:pager"])))
                fresh = _note(late, "high_fraud_5m", at + 30, ["webhook:pager"])
                _publish(notifications, fresh.key, encode(fresh))
                wait_for(lambda: committed(settings.bridge_group, notifications) == total + 1)
            requests = rx.snapshot()
    finally:
        controller.stop()

    # Mail went to the declared address only, once per notification allowed to reach it.
    assert sorted(tuple(e.rcpt_tos) for e in mails) == [("ops@example.com",)] * 2
    hooks = [r for r in requests if r.path == "/hooks/pager"]
    assert all(r.signature_ok for r in hooks)
    hook_ids = Counter(n["id"] for r in hooks for n in orjson.loads(r.body)["notifications"])
    assert hook_ids == Counter([valid[0].id, valid[1].id, after.id, fresh.id])
    slack = {r.path: r.body.decode() for r in requests if r.path.startswith("/slack/")}
    assert set(slack) == {"/slack/alerts", "/slack/allowed"}
    assert "&lt;!channel&gt;" in slack["/slack/alerts"]
    assert "&lt;@U024BE7LH&gt;" in slack["/slack/alerts"]
    assert "&lt;https://evil.example|x&gt;" in slack["/slack/alerts"]
    for needle in ("<!channel>", "<@U024BE7LH>", "<https://evil.example"):
        assert needle not in slack["/slack/alerts"]

    dead = read_all(deadletter, len(spoofed) + len(malformed))
    reasons = Counter(dict(x.headers())["driftline-error"].decode() for x in dead)
    assert reasons == {"unauthorized_target": 5, "bad-target": 1, "malformed": len(malformed)}
    by_id: dict[str, list[str]] = {}
    for x in dead:
        headers = dict(x.headers())
        if headers["driftline-error"] == b"unauthorized_target":
            by_id.setdefault(orjson.loads(x.value())["id"], []).append(
                headers["driftline-target"].decode()
            )
    assert by_id == {
        spoofed[0].id: ["email:attacker@evil.example"],
        spoofed[2].id: ["webhook:pager"],
        spoofed[3].id: ["webhook:pager"],
        spoofed[4].id: ["email:ops@example.com"],
        spoofed[5].id: ["email:attacker@evil.example"],
    }
    malformed_details = {
        x.value(): dict(x.headers())["driftline-detail"].decode()
        for x in dead
        if dict(x.headers())["driftline-error"] == b"malformed"
    }
    assert set(malformed_details) == set(malformed)
    assert "'value'" in malformed_details[malformed[0]]
    assert "'alert'" in malformed_details[malformed[5]]
    assert m.UNAUTHORIZED.labels("email")._value.get() == before["email"] + 3
    assert m.UNAUTHORIZED.labels("webhook")._value.get() == before["webhook"] + 2
