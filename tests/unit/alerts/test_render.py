"""Messages people can read: assay transitions, quarantined pipelines, resolved alerts."""

from __future__ import annotations

import orjson
import pytest

from driftline.alerts.render import (
    email_message,
    email_subject,
    email_text,
    slack_payload,
    stdout_line,
    webhook_body,
)
from driftline.events import Notification

pytestmark = pytest.mark.unit

REPLAY = (
    "driftline replay fraud --from 2024-11-21T05:00:00Z --to 2024-11-21T06:20:00Z --audit"
)  # fmt: skip
DETAILS = {
    "assay_status": "alert", "metric": "psi", "score": 0.3127, "threshold": 0.25,
    "thresholds": {"warning": 0.1, "alert": 0.25}, "window_count": 1234,
    "baseline_count": 2000, "iopath": "ccfraud.outputs[0][0]", "replay": REPLAY,
}  # fmt: skip


def assay(state: str = "firing", **details: object) -> Notification:
    return Notification(
        "n-a1", "score_drift", "fraud", state, 0.3127,  # type: ignore[arg-type]
        "psi(ccfraud.outputs[0][0]) status alert",
        {"start": 1_732_165_200_000, "end": 1_732_165_500_000}, 1_732_165_500_000,
        "critical", ["email:ops@example.com"], "sha256:ab", "assay", {**DETAILS, **details},
    )  # fmt: skip


def test_assay_email_says_which_assay_metric_score_threshold_window_sizes_and_replay() -> None:
    n = assay()
    subject = email_subject([n])
    assert subject == (
        "[driftline] FIRING: assay score_drift on fraud [critical] — psi 0.3127 ≥ 0.25 (alert)"
    )
    msg = email_message([n], "driftline@example.com", "ops@example.com")
    text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    html = msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
    for needle in (
        "score_drift", "psi", "0.3127", "0.25", "warning 0.1, alert 0.25",
        "2024-11-21 05:00:00 UTC → 2024-11-21 05:05:00 UTC", "1,234 events", "2,000 values",
        "ccfraud.outputs[0][0]", REPLAY, "fraud", "sha256:ab",
    ):  # fmt: skip
        assert needle in text, needle
        assert needle.replace("→", "&rarr;") in html or needle in html, needle


def test_assay_return_to_ok_says_what_holds_now() -> None:
    n = assay("resolved", assay_status="ok", score=0.04, threshold=0.1)
    assert email_subject([n]).endswith("— psi 0.04, below 0.1")
    assert "RESOLVED" in email_text([n])


def test_assay_slack_and_webhook_carry_the_details() -> None:
    n = assay()
    slack = slack_payload([n])
    blocks = slack["attachments"][0]["blocks"]
    assert blocks[0]["text"]["text"] == "*FIRING* assay `score_drift` on `fraud`"
    assert all(len(b.get("fields", [])) <= 10 for b in blocks)
    fields = " ".join(f["text"] for b in blocks for f in b.get("fields", []))
    assert "1,234 events" in fields and "0.3127" in fields
    assert any(b.get("text", {}).get("text") == f"`{REPLAY}`" for b in blocks)
    assert blocks[-1]["elements"][0]["text"] == "driftline · n-a1"
    body = orjson.loads(webhook_body([n]))
    assert body["kind"] == "assay"
    assert body["notifications"][0]["details"] == DETAILS


def test_assay_with_missing_or_mistyped_details_still_renders() -> None:
    n = Notification(
        "n-a2", "score_drift", "fraud", "firing", 0.2, "", {}, 0, "warning", [], "", "assay",
        {"score": "high", "threshold": None, "window_count": -1, "thresholds": [1]},
    )  # fmt: skip
    assert email_subject([n]).endswith("— score 0.2")
    text = email_text([n])
    assert "Window size" in text and "n/a" not in text.split("Score")[1].splitlines()[0]
    slack_payload([n])
    stdout_line([n])


def test_quarantine_says_the_pipeline_stopped_and_why() -> None:
    n = Notification(
        "n-e1", "score_drift", "fraud", "firing", float("nan"), "", {}, 1_732_165_500_000,
        "critical", ["email:ops@example.com"], "sha256:ab", "error",
        {"cause": "ValueError: baseline has no finite value"},
    )  # fmt: skip
    subject = email_subject([n])
    assert subject == (
        "[driftline] QUARANTINED: pipeline fraud (score_drift) — "
        "ValueError: baseline has no finite value"
    )
    text = email_text([n])
    assert "deploy it again" in text and "other pipelines keep running" in text
    assert "*QUARANTINED* in `score_drift` on `fraud`" in orjson.dumps(slack_payload([n])).decode()
    # Without details the condition text is the cause.
    bare = Notification(
        "n-e2", "p", "fraud", "firing", 0.0, "detector raised", {}, 0, "critical", [], "", "error"
    )
    assert email_subject([bare]).endswith("— detector raised")
    whole = Notification(
        "n-e3", "", "fraud", "firing", 0.0, "spec", {}, 0, "critical", [], "", "error"
    )
    assert email_subject([whole]) == "[driftline] QUARANTINED: pipeline fraud — spec"
    title = slack_payload([whole])["attachments"][0]["blocks"][0]["text"]["text"]
    assert title == "*QUARANTINED* pipeline `fraud`"


@pytest.mark.parametrize(
    ("condition", "state", "value", "tail"),
    [
        ('count(x > 0.95, "5m", "1s") > 10', "resolved", 10.0, "value 10, not above 10"),
        ('count(x > 0.95, "5m", "1s") > 10', "firing", 14.0, "value 14 > 10"),
        ("mean(x) >= 0.5", "resolved", 0.4, "value 0.4, below 0.5"),
        ("mean(x) < 2", "resolved", 2.0, "value 2, not below 2"),
        ("mean(x) <= 2", "resolved", 3.0, "value 3, above 2"),
        ("rate(x) weird", "resolved", 3.0, "value 3"),
    ],
)
def test_count_alert_subject_says_what_holds_now(
    condition: str, state: str, value: float, tail: str
) -> None:
    n = Notification(
        "n-1",
        "high",
        "fraud",
        state,
        value,
        condition,
        {},
        0,
        "critical",
        [],
        "",  # type: ignore[arg-type]
    )
    subject = email_subject([n])
    assert subject.endswith(f"— {tail}")
    if "weird" not in condition:
        assert tail in email_text([n])
