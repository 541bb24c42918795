"""What the bridge accepts from the notifications topic, and where it may deliver it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from driftline.alerts.authorize import Authorizer
from driftline.alerts.bridge import load_bridge_settings
from driftline.alerts.inbound import MalformedNotification, parse_notification
from driftline.alerts.render import email_message, mrkdwn, slack_payload, stdout_line
from driftline.errors import ConfigError
from driftline.events import Notification
from driftline.notify import parse_target

pytestmark = pytest.mark.unit

GOOD: dict[str, Any] = {
    "id": "n-0123abcd", "alert": "high_fraud_5m", "pipeline": "fraud", "state": "firing",
    "value": 14, "condition": "count(x) > 10", "window": {"start": 0, "end": 300_000},
    "at": 300_000, "severity": "critical", "notify": ["email:ops@example.com"],
    "spec": "sha256:ab", "kind": "alert", "details": None,
}  # fmt: skip


def test_a_quarantine_may_name_no_alert_other_kinds_must() -> None:
    error = parse_notification(orjson.dumps({**GOOD, "alert": "", "kind": "error"}))
    assert error.alert == "" and error.kind == "error"
    with pytest.raises(MalformedNotification, match="'alert'"):
        parse_notification(orjson.dumps({**GOOD, "alert": "", "kind": "assay"}))


def test_a_valid_notification_round_trips() -> None:
    n = parse_notification(orjson.dumps(GOOD))
    assert n.to_dict() == {**GOOD, "value": 14.0}
    assert parse_notification(orjson.dumps({**GOOD, "value": None})).value != 0  # NaN
    extra = parse_notification(orjson.dumps({**GOOD, "from_the_future": 1, "details": {"a": 1}}))
    assert extra.details == {"a": 1}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("value", "abc"), ("value", True), ("value", [1]),
        ("state", 5), ("state", "exploded"),
        ("id", 12345), ("id", "n 1"), ("id", ""),
        ("at", 1e20), ("at", 10**20), ("at", "now"), ("at", 1.5),
        ("window", [1, 2]), ("window", {"start": "0"}), ("window", {"begin": 0}),
        ("alert", "x\r\nBcc: v@evil.example"), ("alert", 7), ("alert", ""),
        ("pipeline", "../etc"), ("pipeline", "p\n"),
        ("severity", "CRIT\r\n"), ("kind", 1),
        ("notify", "email:ops@example.com"), ("notify", [1]), ("notify", ["stdout"] * 101),
        ("condition", "a\nb"), ("condition", 3),
        ("details", [1]), ("spec", {"v": 1}),
    ],
)  # fmt: skip
def test_each_mistyped_field_is_malformed_and_named(field: str, value: Any) -> None:
    with pytest.raises(MalformedNotification) as info:
        parse_notification(json.dumps({**GOOD, field: value}).encode())
    assert f"'{field}" in str(info.value) or f"{field}." in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    "raw", [b"", b"{", b"[" * 100_000, b"\xff\xfe", b"[1, 2]", b"null", b'{"id": "n-1"}']
)
def test_what_is_not_a_notification_object_is_malformed(raw: bytes) -> None:
    with pytest.raises(MalformedNotification):
        parse_notification(raw)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=10,
)


@given(st.dictionaries(st.sampled_from(sorted(GOOD)), JSON))
def test_no_field_value_escapes_as_another_exception(changes: dict[str, Any]) -> None:
    raw = json.dumps({**GOOD, **changes}).encode()
    try:
        n = parse_notification(raw)
    except MalformedNotification:
        return
    # What passes renders for every channel without raising.
    email_message([n], "driftline@example.com", "ops@example.com")
    slack_payload([n])
    stdout_line([n])


def _n(alert: str = "high", pipeline: str = "fraud", kind: str = "alert") -> Notification:
    return Notification("n-1", alert, pipeline, "firing", 1.0, "", {}, 0, "warning", [], "", kind)


SPEC = {
    "alerts": {"high": {"notify": ["email:ops@example.com", "slack:fraud"]}},
    "assays": {"drift": {"notify": ["webhook:pager"]}, "quiet": {}},
}


def test_authorizer_follows_sections_kinds_versions_and_the_allow_list() -> None:
    a = Authorizer(["stdout"])
    a.learn("fraud", SPEC)
    t = parse_target
    assert a.allows(_n(), t("email:ops@example.com"))
    assert not a.allows(_n(), t("email:attacker@evil.example"))
    assert not a.allows(_n(), t("webhook:pager"))  # the assay's target, not the alert's
    assert a.allows(_n("drift", kind="assay"), t("webhook:pager"))
    assert not a.allows(_n("drift", kind="assay"), t("slack:fraud"))
    assert not a.allows(_n("high", kind="assay"), t("slack:fraud"))
    # a quarantined pipeline may reach any target of its spec, nothing else
    assert a.allows(_n("whatever", kind="error"), t("webhook:pager"))
    assert not a.allows(_n("whatever", kind="error"), t("email:attacker@evil.example"))
    assert not a.allows(_n(pipeline="other"), t("email:ops@example.com"))
    assert a.allows(_n(pipeline="other"), t("stdout"))
    # a later version adds targets; earlier ones stay, an undeploy forgets nothing
    a.learn("fraud", {"alerts": {"high": {"notify": ["slack:new"]}}})
    a.learn("fraud", None)
    assert a.allows(_n(), t("slack:new")) and a.allows(_n(), t("slack:fraud"))


def test_authorizer_knows_the_targets_of_performance_alerts() -> None:
    a = Authorizer()
    a.learn(
        "fraud",
        {
            "performance": {
                "quality": {"alerts": {"accuracy_drop": {"notify": ["email:q@x.example"]}}}
            }
        },
    )
    t = parse_target
    assert a.allows(_n("accuracy_drop", kind="performance"), t("email:q@x.example"))
    assert not a.allows(_n("accuracy_drop", kind="alert"), t("email:q@x.example"))
    assert not a.allows(_n("other", kind="performance"), t("email:q@x.example"))
    assert a.allows(_n("any", kind="error"), t("email:q@x.example"))


@pytest.mark.parametrize(
    "doc", [[], "x", {"alerts": []}, {"alerts": {"high": {"notify": "email:x@y.z"}}},
            {"alerts": {"high": {"notify": [5, "email:a@b.example,c@d.example"]}}}],
)  # fmt: skip
def test_authorizer_ignores_what_is_not_a_spec(doc: Any) -> None:
    a = Authorizer()
    a.learn("fraud", doc)
    assert not a.allows(_n(), parse_target("email:x@y.z"))


def test_allowed_targets_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DRIFTLINE_BRIDGE_ALLOWED_TARGETS", " stdout, slack:ops ,stdout")
    assert load_bridge_settings().bridge_allowed_targets == ("stdout", "slack:ops")
    monkeypatch.setenv("DRIFTLINE_BRIDGE_ALLOWED_TARGETS", '["webhook:pd"]')
    assert load_bridge_settings().bridge_allowed_targets == ("webhook:pd",)
    monkeypatch.setenv("DRIFTLINE_BRIDGE_ALLOWED_TARGETS", "email:a@x.example;b@y.example")
    with pytest.raises(ConfigError, match=r"DRIFTLINE_BRIDGE_ALLOWED_TARGETS.*not an email"):
        load_bridge_settings()


def test_text_is_escaped_for_each_channel() -> None:
    n = Notification(**{
        **GOOD, "notify": [], "condition": "count(x) > 10 <!channel> <@U1> & <b>bold</b>",
    })  # fmt: skip
    slack = orjson.dumps(slack_payload([n])).decode()
    assert "<!channel>" not in slack and "<@U1>" not in slack and "<b>" not in slack
    assert "&lt;!channel&gt;" in slack and "&amp;" in slack
    msg = email_message([n], "driftline@example.com", "ops@example.com")
    html = msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert "<b>bold</b>" not in html and "&lt;b&gt;bold&lt;/b&gt;" in html
    assert mrkdwn("a < b") == "a &lt; b"


def test_mail_headers_never_carry_line_breaks() -> None:
    # Built in code (not decoded), so the renderer is the last line of defence.
    n = Notification(**{**GOOD, "alert": "x\r\nBcc: v@evil.example", "severity": "a\nb"})
    msg = email_message([n], "driftline@example.com", "ops@example.com")
    raw = msg.as_bytes()
    assert b"\nBcc:" not in raw
    assert "\n" not in str(msg["Subject"]) and "\r" not in str(msg["Subject"])
    assert "\n" not in stdout_line([n])
