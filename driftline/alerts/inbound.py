"""Decode a notification read from Kafka, checking the type and range of every field.

Anyone who can write to ``driftline.notifications`` can put any bytes there, so the bridge
never trusts a message's shape: a field of the wrong type, a time outside what a date can
show, a name with a line break (which would become a second mail header) is a
:class:`MalformedNotification`, dead-lettered as ``malformed``, never an exception that stops
the process.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from driftline.errors import DriftlineError
from driftline.events import Notification, decode

__all__ = [
    "MAX_NOTIFY",
    "MAX_TIME_MS",
    "MIN_TIME_MS",
    "MalformedNotification",
    "parse_notification",
]

#: The first millisecond of year 1 and the last of year 9999: the dates a message can show.
MIN_TIME_MS = -62_135_596_800_000
MAX_TIME_MS = 253_402_300_799_999
#: At most this many targets per notification.
MAX_NOTIFY = 100
_STATES = ("firing", "resolved")
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,199}")
_PIPELINE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,99}")
# Alert and assay names (letters, digits, '_', '-'), with room for the '.', ':' and '/' of
# derived names such as an error's ``assay/score_drift``.
_ALERT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:/-]{0,199}")
# A quarantine (kind "error") may concern the whole pipeline rather than one of its parts.
_ERROR_ALERT = re.compile(r"(?:[A-Za-z0-9_][A-Za-z0-9_.:/-]{0,199})?")
_WORD = re.compile(r"[a-z][a-z0-9_-]{0,31}")
_SPEC = re.compile(r"[A-Za-z0-9._:-]{0,200}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_MAX_CONDITION = 4000


class MalformedNotification(DriftlineError, ValueError):
    """A notification whose fields do not have the documented types and ranges."""


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _fail(field: str, value: Any, expected: str) -> MalformedNotification:
    return MalformedNotification(
        f"notification field {field!r} is {_show(value)}; expected {expected} "
        "(driftline.events.Notification documents every field)"
    )


def _text(d: Mapping[str, Any], field: str, pattern: re.Pattern[str], expected: str) -> str:
    value = d.get(field)
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise _fail(field, value, expected)
    return value


def _time(field: str, value: Any) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not MIN_TIME_MS <= value <= MAX_TIME_MS
    ):
        raise _fail(field, value, "an integer of epoch milliseconds between years 1 and 9999")
    return value


def _value(value: Any) -> float:
    if value is None:  # NaN travels as null
        return float("nan")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail("value", value, "a number or null")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise _fail("value", value, "a finite number or null")
    return number


def _window(value: Any) -> dict[str, int]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not set(value) <= {"start", "end"}:
        raise _fail("window", value, 'an object {"start": ms, "end": ms}')
    return {k: _time(f"window.{k}", v) for k, v in value.items()}


def _notify(value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > MAX_NOTIFY:
        raise _fail("notify", value, f"a list of at most {MAX_NOTIFY} target strings")
    for item in value:
        if not isinstance(item, str) or len(item) > 300:
            raise _fail("notify", value, "a list of target strings such as 'email:ops@x.org'")
    return list(value)


def parse_notification(raw: bytes | str) -> Notification:
    """Decode and check one notification; :class:`MalformedNotification` says which field.

    Unknown extra fields are ignored, so older bridges read newer events.

    >>> n = parse_notification(b'{"id": "n-1", "alert": "a", "pipeline": "p", "state": "firing",'
    ...                        b' "value": 3, "window": {"start": 0, "end": 60000}, "at": 60000}')
    >>> (n.alert, n.value, n.window, n.kind)
    ('a', 3.0, {'start': 0, 'end': 60000}, 'alert')
    >>> parse_notification(b'{"id": "n-1", "alert": "x\\\\r\\\\nBcc: v@evil", "pipeline": "p",'
    ...                    b' "state": "firing"}')
    Traceback (most recent call last):
    ...
    driftline.alerts.inbound.MalformedNotification: notification field 'alert' is 'x\\r...
    """
    try:
        d = decode(raw)
    except (ValueError, TypeError, RecursionError) as exc:
        raise MalformedNotification(
            f"notification is not JSON ({type(exc).__name__}: {str(exc)[:120]}); "
            "write one JSON object per message"
        ) from None
    if not isinstance(d, dict):
        raise _fail("(message)", d, "a JSON object")
    missing = [k for k in ("id", "alert", "pipeline", "state") if k not in d]
    if missing:
        raise MalformedNotification(
            f"notification is missing field(s) {', '.join(missing)}; "
            "id, alert, pipeline and state are required"
        )
    condition = d.get("condition", "")
    if (
        not isinstance(condition, str)
        or len(condition) > _MAX_CONDITION
        or _CONTROL.search(condition)
    ):
        raise _fail("condition", condition, f"one line of text of at most {_MAX_CONDITION} chars")
    details = d.get("details")
    if details is not None and not isinstance(details, dict):
        raise _fail("details", details, "an object or null")
    kind = _text({"kind": d.get("kind", "alert")}, "kind", _WORD, "'alert', 'assay' or 'error'")
    state = d.get("state")
    if state not in _STATES:
        raise _fail("state", state, f"one of {list(_STATES)}")
    return Notification(
        id=_text(d, "id", _ID, "a string of letters, digits, '.', '_', ':' or '-'"),
        alert=_text(
            d,
            "alert",
            _ERROR_ALERT if kind == "error" else _ALERT,
            "an alert or assay name (letters, digits, '_', '-')",
        ),
        pipeline=_text(d, "pipeline", _PIPELINE, "a pipeline name (letters, digits, '_', '-')"),
        state=state,
        value=_value(d.get("value")),
        condition=condition,
        window=_window(d.get("window")),
        at=_time("at", d.get("at", 0)),
        severity=_text({"severity": d.get("severity", "warning")}, "severity", _WORD, "a word"),
        notify=_notify(d.get("notify")),
        spec=_text({"spec": d.get("spec", "")}, "spec", _SPEC, "a version like 'sha256:<hex>'"),
        kind=kind,
        details=details,
    )
