"""What a person reads: email subject and bodies, Slack blocks, webhook JSON and its signature.

All functions are pure: they take the notifications of one delivery (a burst of the same alert
grouped together, oldest first) and return text, dicts or bytes.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import math
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

import orjson

from driftline.events import Notification

__all__ = [
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "email_message",
    "email_subject",
    "email_text",
    "mrkdwn",
    "one_line",
    "reading",
    "sign",
    "slack_payload",
    "split_condition",
    "stdout_line",
    "verify_signature",
    "webhook_body",
]

SIGNATURE_HEADER = "X-Driftline-Signature"
TIMESTAMP_HEADER = "X-Driftline-Timestamp"

_COLOURS = {"firing": "#d93f0b", "resolved": "#2eb67d"}
_KIND = {"assay": "assay ", "error": "in "}
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_CONDITION = re.compile(r"^(?P<lhs>.*?)\s*(?P<op><=|>=|==|!=|<|>)\s*(?P<rhs>[-+0-9.eE]+)\s*$")


def one_line(text: str) -> str:
    """``text`` without line breaks or other control characters (mail headers, consoles).

    >>> one_line("x\\r\\nBcc: v@evil.example")
    'x Bcc: v@evil.example'
    """
    return _CONTROL.sub(" ", text)


def mrkdwn(text: str) -> str:
    """Escape ``text`` for Slack mrkdwn: ``<!channel>``, ``<@U123>`` and links become inert.

    Slack reads ``<...>`` as mentions and links; it asks for ``&``, ``<`` and ``>`` to be sent
    as ``&amp;``, ``&lt;`` and ``&gt;``, which it then shows as the characters.

    >>> mrkdwn("<!channel> & <@U024BE7LH>")
    '&lt;!channel&gt; &amp; &lt;@U024BE7LH&gt;'
    """
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def split_condition(condition: str) -> tuple[str, str, float] | None:
    """Split ``"count(...) > 10"`` into ``(lhs, op, threshold)``; None if it has another shape.

    >>> split_condition('count(ccfraud.outputs[0][0] > 0.95, "5m", "1s") > 10')
    ('count(ccfraud.outputs[0][0] > 0.95, "5m", "1s")', '>', 10.0)
    >>> split_condition("weird") is None
    True
    """
    m = _CONDITION.match(condition)
    if not m:
        return None
    try:
        return m["lhs"], m["op"], float(m["rhs"])
    except ValueError:
        return None


def _time(ms: Any) -> str:
    if not isinstance(ms, int) or isinstance(ms, bool) or not ms:
        return "-"
    try:
        return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, OSError, ValueError):
        return str(ms)


def _num(x: Any) -> str:
    if isinstance(x, bool) or not isinstance(x, int | float):
        return "n/a"
    if isinstance(x, float) and math.isnan(x):
        return "n/a"
    return f"{x:.6g}"


#: What holds once a condition ``lhs OP threshold`` no longer does, by OP.
_NOT = {
    ">": "not above",
    ">=": "below",
    "<": "not below",
    "<=": "above",
    "==": "not equal to",
    "!=": "equal to",
}


def reading(n: Notification) -> str | None:
    """What the value says about the condition now: ``value 14 > 10`` while firing, ``value 10,
    not above 10`` once resolved; None when the condition has another shape.

    >>> n = Notification("n-1", "a", "p", "resolved", 10.0, "count(x) > 10", {}, 0, "warning",
    ...                  [], "")
    >>> reading(n)
    'value 10, not above 10'
    """
    parts = split_condition(n.condition)
    if parts is None:
        return None
    _lhs, op, threshold = parts
    if n.state == "resolved":
        return f"value {_num(n.value)}, {_NOT[op]} {_num(threshold)}"
    return f"value {_num(n.value)} {op} {_num(threshold)}"


def _detail(n: Notification, key: str) -> Any:
    return (n.details or {}).get(key)


def _text(value: Any, default: str = "-") -> str:
    return default if value is None or value == "" else one_line(str(value))


def _window(n: Notification) -> str:
    return f"{_time(n.window.get('start'))} → {_time(n.window.get('end'))}"


def _thresholds(value: Any) -> str:
    if not isinstance(value, dict) or not value:
        return "-"
    return ", ".join(f"{one_line(str(k))} {_num(v)}" for k, v in value.items())


def _count(value: Any, unit: str) -> str:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return "-"
    return f"{value:,} {unit}"


def _score(n: Notification) -> str:
    score = _detail(n, "score")
    if isinstance(score, bool) or not isinstance(score, int | float):
        score = n.value
    return _num(score)


def _assay_summary(n: Notification) -> str:
    """``psi 0.31 ≥ 0.25 (alert)`` while firing, ``psi 0.04, below 0.1`` once resolved."""
    metric = _text(_detail(n, "metric"), "score")
    threshold = _detail(n, "threshold")
    shown = _score(n)
    if not isinstance(threshold, int | float) or isinstance(threshold, bool):
        return f"{metric} {shown}"
    if n.state == "resolved":
        return f"{metric} {shown}, below {_num(threshold)}"
    status = _text(_detail(n, "assay_status"), "")
    return f"{metric} {shown} ≥ {_num(threshold)}" + (f" ({status})" if status else "")


def _error_cause(n: Notification) -> str:
    for key in ("cause", "detail", "reason", "error"):
        value = _detail(n, key)
        if value:
            return _text(value)
    return _text(n.condition, "unknown cause")


def _facts(n: Notification) -> list[tuple[str, str]]:
    """The fields a reader needs, as (label, text) pairs; the id comes last."""
    if n.kind == "assay":
        facts = [
            ("State", n.state.upper()),
            ("Assay", n.alert),
            ("Metric", _text(_detail(n, "metric"))),
            ("Score", _score(n)),
            ("Status", _text(_detail(n, "assay_status"))),
            ("Threshold", _assay_summary(n)),
            ("Thresholds", _thresholds(_detail(n, "thresholds"))),
            ("Window", _window(n)),
            ("Window size", _count(_detail(n, "window_count"), "events")),
            ("Baseline size", _count(_detail(n, "baseline_count"), "values")),
            ("Input", _text(_detail(n, "iopath"))),
            ("Pipeline", n.pipeline),
            ("Severity", n.severity),
            ("At", _time(n.at)),
            ("Spec version", n.spec or "-"),
            ("Reproduce", _text(_detail(n, "replay"))),
        ]
    elif n.kind == "error":
        what = "QUARANTINED" if n.state == "firing" else "RESUMED"
        facts = [
            ("State", what),
            ("Pipeline", n.pipeline),
            ("Where", n.alert or "the whole pipeline"),
            ("Cause", _error_cause(n)),
            (
                "What to do",
                "nothing: the pipeline runs again"
                if n.state == "resolved"
                else "its other pipelines keep running; fix the spec (or its baseline) and "
                "deploy it again to resume this one",
            ),
            ("At", _time(n.at)),
            ("Spec version", n.spec or "-"),
        ]
    else:
        parts = split_condition(n.condition)
        facts = [("State", n.state.upper()), ("Value", _num(n.value))]
        if parts is not None:
            facts.append(("Threshold", f"{parts[1]} {_num(parts[2])}"))
            facts.append(("Now", reading(n) or "-"))
        facts += [
            ("Condition", n.condition or "-"),
            ("Window", _window(n)),
            ("Pipeline", n.pipeline),
            ("Severity", n.severity),
            ("At", _time(n.at)),
            ("Spec version", n.spec or "-"),
        ]
    facts.append(("Notification id", n.id))
    # Every value on one line: labels and values are laid out one per line (and a header).
    return [(k, one_line(v)) for k, v in facts]


def _headline(group: Sequence[Notification]) -> str:
    last = group[-1]
    more = f" ({len(group)} notifications)" if len(group) > 1 else ""
    if last.kind == "error":
        what = "QUARANTINED" if last.state == "firing" else "RESUMED"
        where = f" ({last.alert})" if last.alert else ""
        text = f"{what}: pipeline {last.pipeline}{where}{more}"
    elif last.kind == "assay":
        text = (
            f"{last.state.upper()}: assay {last.alert} on {last.pipeline} [{last.severity}]{more}"
        )
    else:
        text = f"{last.state.upper()}: {last.alert} on {last.pipeline} [{last.severity}]{more}"
    return one_line(text)


def email_subject(group: Sequence[Notification]) -> str:
    """One-line subject; the latest state wins when a burst is grouped.

    >>> n = Notification("n-1", "high_fraud_5m", "fraud", "firing", 14.0, "count(x) > 10",
    ...                  {"start": 0, "end": 300000}, 300000, "critical", ["stdout"], "sha256:ab")
    >>> email_subject([n])
    '[driftline] FIRING: high_fraud_5m on fraud [critical] — value 14 > 10'
    """
    last = group[-1]
    if last.kind == "assay":
        tail = f" — {_assay_summary(last)}"
    elif last.kind == "error":
        tail = f" — {_error_cause(last)[:160]}"
    else:
        tail = f" — {reading(last) or f'value {_num(last.value)}'}"
    return one_line(f"[driftline] {_headline(group)}{tail}")


def email_text(group: Sequence[Notification]) -> str:
    """Plain-text body: one block of facts per notification, oldest first."""
    lines = [_headline(group), ""]
    for n in group:
        width = max(len(k) for k, _ in _facts(n))
        lines += [f"{k.ljust(width)}  {v}" for k, v in _facts(n)]
        lines.append("")
    lines.append("Sent by driftline.")
    return "\n".join(lines) + "\n"


def _email_html(group: Sequence[Notification]) -> str:
    blocks = []
    for n in group:
        colour = _COLOURS.get(n.state, "#666666")
        rows = "".join(
            f"<tr><th align='left'>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
            for k, v in _facts(n)
        )
        blocks.append(
            f"<table style='border-left:4px solid {colour};padding-left:8px'>{rows}</table>"
        )
    return (
        f"<html><body><h2>{html.escape(_headline(group))}</h2>"
        + "<br>".join(blocks)
        + "<p>Sent by driftline.</p></body></html>"
    )


def email_message(group: Sequence[Notification], sender: str, to: str) -> EmailMessage:
    """A multipart/alternative email (plain text and HTML) for one delivery."""
    msg = EmailMessage()
    msg["Subject"] = email_subject(group)
    msg["From"] = sender
    msg["To"] = one_line(to)
    msg["X-Driftline-Notification"] = one_line(",".join(n.id for n in group))
    msg.set_content(email_text(group))
    msg.add_alternative(_email_html(group), subtype="html")
    return msg


def _slack_title(n: Notification, state: str) -> str:
    if n.kind == "error" and not n.alert:
        return f"*{mrkdwn(state)}* pipeline `{mrkdwn(n.pipeline)}`"
    return f"*{mrkdwn(state)}* {_KIND.get(n.kind, '')}`{mrkdwn(n.alert)}` on `{mrkdwn(n.pipeline)}`"


def slack_payload(group: Sequence[Notification]) -> dict[str, Any]:
    """Incoming-webhook JSON: a fallback ``text`` and one coloured attachment of blocks each.

    >>> n = Notification("n-1", "a", "p", "resolved", 1.0, "mean(x) > 2", {}, 0, "warning",
    ...                  ["slack:c"], "")
    >>> p = slack_payload([n])
    >>> p["attachments"][0]["color"], p["text"]
    ('#2eb67d', 'RESOLVED: a on p [warning]')
    """
    attachments = []
    for n in group:
        facts = _facts(n)[:-1]
        replay = [v for k, v in facts if k == "Reproduce" and v != "-"]
        fields = [
            # Slack refuses a field over 2,000 characters.
            {"type": "mrkdwn", "text": f"*{mrkdwn(k)}*\n{mrkdwn(v[:1900])}"}
            for k, v in facts
            if k != "Reproduce"
        ]
        extra = [
            {"type": "section", "text": {"type": "mrkdwn", "text": f"`{mrkdwn(cmd)}`"}}
            for cmd in replay
        ]
        attachments.append(
            {
                "color": _COLOURS.get(n.state, "#666666"),
                "blocks": [
                    {
                        "type": "section",
                        "text": {
                            "type": "mrkdwn",
                            "text": _slack_title(n, facts[0][1]),
                        },
                    },
                    # Slack allows at most 10 fields per section.
                    *(
                        {"type": "section", "fields": fields[i : i + 10]}
                        for i in range(0, len(fields), 10)
                    ),
                    *extra,
                    {
                        "type": "context",
                        "elements": [{"type": "mrkdwn", "text": f"driftline · {mrkdwn(n.id)}"}],
                    },
                ],
            }
        )
    return {
        "text": mrkdwn(_headline(group)),
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": _headline(group)[:150]}}
        ],
        "attachments": attachments,
    }


def webhook_body(group: Sequence[Notification]) -> bytes:
    """The JSON a webhook receives: ``{"type", "alert", "pipeline", "state", "notifications"}``."""
    last = group[-1]
    return orjson.dumps(
        {
            "type": "driftline.notification",
            "kind": last.kind,
            "alert": last.alert,
            "pipeline": last.pipeline,
            "state": last.state,
            "notifications": [n.to_dict() for n in group],
        }
    )


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """HMAC-SHA256 of ``"<timestamp>." + body`` as ``sha256=<hex>``.

    Binding the timestamp into the signature lets a receiver reject replays of old requests.

    >>> sign("k", 1700000000, b"{}")
    'sha256=...'
    >>> verify_signature("k", "1700000000", b"{}", sign("k", 1700000000, b"{}"), now_s=1700000010)
    True
    """
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def verify_signature(
    secret: str,
    timestamp: str,
    body: bytes,
    signature: str,
    now_s: float,
    tolerance_s: float = 300.0,
) -> bool:
    """Receiver side: check the signature and that the timestamp is within ``tolerance_s``.

    >>> verify_signature("k", "1700000000", b"{}", sign("k", 1700000000, b"{}"), now_s=1800000000)
    False
    """
    try:
        ts = int(timestamp)
    except ValueError:
        return False
    if abs(now_s - ts) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, ts, body), signature)


def stdout_line(group: Sequence[Notification]) -> str:
    """One line for development consoles."""
    last = group[-1]
    line = f"{email_subject(group)[len('[driftline] ') :]} | {last.condition} | {last.id}"
    return one_line(line)
