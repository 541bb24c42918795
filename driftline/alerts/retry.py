"""Retry policy: exponential backoff with full jitter, and HTTP ``Retry-After`` parsing."""

from __future__ import annotations

from email.utils import parsedate_to_datetime

# Exponential backoff with full jitter is the Kafka layer's, shared by every service.
from driftline.kafka.loop import backoff_delay

__all__ = ["backoff_delay", "is_retryable_status", "parse_retry_after"]


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
