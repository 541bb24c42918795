"""The engine's memory of final buckets: the same rows as reading Redis every time."""

from __future__ import annotations

import numpy as np

from driftline.streams._final import FinalBuckets as _FinalBuckets


class _Store:
    """Buckets of 1,000 ms as Redis holds them; counts the ranges read."""

    def __init__(self) -> None:
        self.rows: dict[int, float] = {}
        self.reads: list[tuple[int, int]] = []

    def fetch(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        self.reads.append((lo, hi))
        starts = sorted(s for s in self.rows if lo <= s < hi)
        return (
            np.array(starts, dtype=np.int64),
            np.array([[self.rows[s]] for s in starts], dtype=np.float64).reshape(-1, 1),
        )


def test_final_buckets_match_fresh_reads_and_are_read_once():
    store, cache = _Store(), _FinalBuckets(1)
    rng = np.random.default_rng(3)
    for step in range(40):
        # events land at or after the watermark only; some buckets stay empty
        watermark = step * 1000
        for s in range(watermark, watermark + 3000, 1000):
            if rng.random() < 0.7:
                store.rows[s] = store.rows.get(s, 0.0) + float(rng.integers(1, 5))
        lo, hi = watermark - 5000, watermark
        starts, rows = cache.read(store.fetch, lo, hi, final=watermark)
        want_starts, want_rows = store.fetch(lo, hi)
        del store.reads[-1]  # the check's own read
        assert starts.tolist() == want_starts.tolist()
        assert rows.tolist() == want_rows.tolist()
    # after the first close each read fetched only the newly final part
    assert all(b - a <= 1000 for a, b in store.reads[1:])


def test_buckets_not_final_are_read_again_and_a_jump_back_starts_over():
    store, cache = _Store(), _FinalBuckets(1)
    store.rows = {0: 1.0, 1000: 2.0}
    starts, rows = cache.read(store.fetch, 0, 2000, final=1000)  # bucket 1000 still open
    assert rows[:, 0].tolist() == [1.0, 2.0]
    store.rows[1000] = 5.0
    store.rows[0] = 99.0  # final buckets cannot change; the cache keeps what it read
    starts, rows = cache.read(store.fetch, 0, 2000, final=2000)
    assert rows[:, 0].tolist() == [1.0, 5.0]
    starts, rows = cache.read(store.fetch, -5000, 2000, final=2000)  # before what it holds
    assert starts.tolist() == [0, 1000] and rows[:, 0].tolist() == [99.0, 5.0]
