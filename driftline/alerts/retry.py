"""Retry policy: exponential backoff with full jitter, and HTTP ``Retry-After`` parsing."""

from __future__ import annotations

import random
from email.utils import parsedate_to_datetime

__all__ = ["backoff_delay", "is_retryable_status", "parse_retry_after"]


def backoff_delay(
    attempt: int, base_s: float, cap_s: float, rng: random.Random | None = None
) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based).

    Full jitter: uniform in ``[0, min(cap, base * 2**(attempt-1))]``, so that many bridges
    retrying the same receiver spread out instead of hammering it in lock step.

    >>> backoff_delay(3, 0.5, 60.0, random.Random(1)) <= 2.0
    True
    >>> backoff_delay(30, 0.5, 60.0, random.Random(1)) <= 60.0
    True
    """
    if attempt < 1:
        raise ValueError(f"attempt={attempt}: attempts count from 1")
    if base_s <= 0 or cap_s <= 0:
        raise ValueError(f"base_s={base_s}, cap_s={cap_s}: both must be positive")
    ceiling = min(cap_s, base_s * 2.0 ** min(attempt - 1, 62))
    return (rng or random).uniform(0.0, ceiling)


def parse_retry_after(value: str | None, now_s: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date), or None.

    >>> parse_retry_after("3", 0.0)
    3.0
    >>> parse_retry_after("Thu, 01 Jan 1970 00:00:10 GMT", 4.0)
    6.0
    >>> parse_retry_after("soon", 0.0) is None
    True
    """
    if value is None:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(text).timestamp() - now_s
        except (TypeError, ValueError, IndexError):
            return None
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


def is_retryable_status(status: int) -> bool:
    """Whether an HTTP status may succeed on retry (5xx, 408, 425, 429).

    >>> [is_retryable_status(s) for s in (200, 400, 404, 408, 429, 500, 503)]
    [False, False, False, True, True, True, True]
    """
    return status >= 500 or status in (408, 425, 429)
