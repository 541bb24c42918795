"""Formatting helpers shared by the listing commands."""

from __future__ import annotations

import datetime as dt
import json

__all__ = ["ms_to_iso", "num", "short", "tensor_summary"]


def ms_to_iso(ms: object) -> str:
    """UTC ``YYYY-mm-dd HH:MM:SS`` of epoch milliseconds; ``-`` when not a number.

    >>> ms_to_iso(1700000000000)
    '2023-11-14 22:13:20'
    >>> ms_to_iso(None)
    '-'
    """
    if isinstance(ms, bool) or not isinstance(ms, int | float):
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def num(x: object) -> str:
    """A number in 4 significant digits; ``-`` for None.

    >>> num(0.123456), num(None), num(3)
    ('0.1235', '-', '3')
    """
    return "-" if x is None else f"{x:.4g}" if isinstance(x, float) else str(x)


def short(values: object, limit: int = 6) -> str:
    """A list cut after ``limit`` items, floats in 4 significant digits.

    >>> short([0.5, 1, 2, 3, 4, 5, 6])
    '[0.5, 1, 2, 3, 4, 5, …]'
    >>> short([1, 2])
    '[1, 2]'
    """
    if isinstance(values, list) and len(values) > limit:
        return (
            "["
            + ", ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in values[:limit])
            + ", …]"
        )
    return json.dumps(values)


def tensor_summary(tensors: list[dict[str, object]]) -> str:
    """``name[shape]`` of each tensor.

    >>> tensor_summary([{"name": "x", "shape": [1, 29]}])
    'x[1, 29]'
    """
    return ", ".join(f"{t.get('name')}{list(t.get('shape') or [])}" for t in tensors)  # type: ignore[call-overload]
