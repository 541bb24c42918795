"""Durations written as an integer and a unit: ``250ms``, ``1s``, ``5m``, ``2h``, ``1d``."""

from __future__ import annotations

import re

__all__ = ["MAX_DURATION_MS", "UNITS_MS", "format_duration", "parse_duration"]

UNITS_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
#: The longest duration accepted: 3650 days (about ten years). Windows, lateness and ranges
#: longer than that are mistakes, and their milliseconds would overflow 64-bit arithmetic
#: (event times, Redis scores, JSON) once added to a timestamp.
MAX_DURATION_MS = 3650 * UNITS_MS["d"]
_PATTERN = re.compile(r"(\d{1,12})(ms|s|m|h|d)")


def parse_duration(text: str) -> int:
    """Milliseconds in ``text``; raise ``ValueError`` naming the accepted form otherwise.

    >>> parse_duration("5m"), parse_duration("250ms")
    (300000, 250)
    >>> parse_duration("999999999999d")
    Traceback (most recent call last):
    ...
    ValueError: '999999999999d' is longer than the longest duration accepted, 3650d ...
    """
    match = _PATTERN.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(
            f"{text!r} is not a duration; write an integer and a unit, one of ms, s, m, h, d "
            '(for example "5m" or "250ms")'
        )
    ms = int(match.group(1)) * UNITS_MS[match.group(2)]
    if ms > MAX_DURATION_MS:
        raise ValueError(
            f"{text!r} is longer than the longest duration accepted, 3650d (about ten years); "
            "write a shorter one"
        )
    return ms


def format_duration(ms: int) -> str:
    """The shortest exact spelling of ``ms`` milliseconds.

    >>> format_duration(300000), format_duration(1500)
    ('5m', '1500ms')
    """
    for unit in ("d", "h", "m", "s"):
        size = UNITS_MS[unit]
        if ms and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"
