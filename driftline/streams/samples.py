"""Bounded, deterministic per-window samples for metrics that need raw values (MMD).

Each accepted event gets a priority from a hash of its ``(id, row)`` (of its partition and
offset when it has no id). A bucket keeps the ``size`` values of smallest priority (a
bottom-k sample); a window's sample is the ``size`` smallest over its buckets. Bottom-k
samples merge exactly, so the sample of a window does not depend on how batches, monitor
processes or a replay cut the stream, and adding the same event twice changes nothing: a
redelivered batch leaves the sample as it was.

>>> p = priorities(["r-1", "r-1", None], [0, 1, 0], [0, 0, 3], [10, 11, 12])
>>> bool(p[0] != p[1]), bool(0 <= p.min() and p.max() < 1)
(True, True)
>>> merge([[(0.5, 2.0), (0.1, 1.0)], [(0.3, 3.0)]], 2)
[1.0, 3.0]
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

__all__ = ["SAMPLE_SIZE", "member", "merge", "parse_member", "priorities"]

#: Values kept per bucket and per window (the MMD test subsamples to 500 rows as well).
SAMPLE_SIZE = 500

_SCALE = float(1 << 53)


def priorities(
    ids: Sequence[Any], rows: Sequence[Any], partitions: Sequence[int], offsets: Sequence[int]
) -> np.ndarray:
    """Priority in ``[0, 1)`` of each event, from a hash of ``(id, row)``.

    An event without an id is keyed by ``(partition, offset)``, which replay reads again
    unchanged. 53 bits, so a priority is an exact double (a Redis sorted-set score).
    """
    out = np.empty(len(ids), dtype=np.float64)
    for i, (ident, row, p, o) in enumerate(zip(ids, rows, partitions, offsets, strict=True)):
        key = f"@{p}:{o}" if ident is None else f"{ident}\0{row}"
        digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
        out[i] = (int.from_bytes(digest, "big") >> 11) / _SCALE
    return out


def member(priority: float, value: float) -> bytes:
    """Sorted-set member of one sampled value: unique per priority, value recoverable.

    >>> parse_member(member(0.25, -1.5))
    -1.5
    """
    return f"{priority!r}|{float(value)!r}".encode()


def parse_member(raw: bytes | str) -> float:
    """The value of a sampled member."""
    text = raw.decode() if isinstance(raw, bytes) else raw
    return float(text.rpartition("|")[2])


def merge(buckets: Iterable[Sequence[tuple[float, float]]], size: int) -> list[float]:
    """Values of the ``size`` smallest priorities over buckets of ``(priority, value)``, in
    priority order (so a seeded test subsampling them is reproducible)."""
    pooled = sorted((p, v) for b in buckets for p, v in b)
    return [v for _, v in pooled[:size]]
