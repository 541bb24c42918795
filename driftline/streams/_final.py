"""Buckets the watermark has passed, read from Redis once and kept while windows need them."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["FinalBuckets"]


class FinalBuckets:
    """Counters of buckets that no event can reach any more, read from Redis once.

    A bucket is final once the watermark has passed its end: every event accepted later is at
    or after the watermark. A sliding window reads all of its buckets at each close (300 for
    five minutes of one-second buckets), so without this every close re-read them all.
    """

    def __init__(self, columns: int) -> None:
        self.lo = self.hi = 0  # buckets with start in [lo, hi) are held (absent ones are empty)
        self.starts = np.zeros(0, dtype=np.int64)
        self.rows = np.zeros((0, columns), dtype=np.float64)
        self.empty = True

    def read(
        self,
        fetch: Callable[[int, int], tuple[np.ndarray, np.ndarray]],
        lo: int,
        hi: int,
        final: int,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Buckets with start in ``[lo, hi)``; those starting before ``final`` are final."""
        if self.empty or not self.lo <= lo <= self.hi:
            self.lo = self.hi = lo
            self.starts, self.rows = self.starts[:0], self.rows[:0]
        keep = self.starts >= lo
        starts, rows = self.starts[keep], self.rows[keep]
        if self.hi < hi:
            new_starts, new_rows = fetch(self.hi, hi)
            starts = np.concatenate([starts, new_starts])
            rows = np.concatenate([rows, new_rows])
            self.hi = max(self.hi, min(hi, final))
        held = starts < self.hi
        self.lo, self.starts, self.rows, self.empty = lo, starts[held], rows[held], False
        inside = starts < hi
        return starts[inside], rows[inside]
