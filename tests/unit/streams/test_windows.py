from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driftline.streams.windows import (
    bucket_start,
    classify_late,
    fold_counts,
    fold_sums,
    idle_floor,
    in_time_bounds,
    pipeline_watermark,
    window_ends,
    window_sums,
)

pytestmark = pytest.mark.unit

times_st = st.lists(st.integers(min_value=0, max_value=100_000), min_size=0, max_size=200)


def _naive_late(times: list[int], lateness: int) -> list[bool]:
    out, mx = [], None
    for t in times:
        out.append(mx is not None and t < mx - lateness)
        mx = t if mx is None else max(mx, t)
    return out


@given(times_st, st.integers(min_value=0, max_value=20_000), st.data())
@settings(max_examples=200, deadline=None)
def test_lateness_does_not_depend_on_batch_boundaries(times, lateness, data):
    cuts = sorted(data.draw(st.lists(st.integers(0, len(times)), max_size=5)))
    parts = np.split(np.array(times, dtype=np.int64), cuts)
    mx = None
    late = []
    for part in parts:
        lt, mx = classify_late(part, mx, lateness)
        late.extend(lt.tolist())
    assert late == _naive_late(times, lateness)
    assert mx == (max(times) if times else None)


def test_floor_makes_older_events_late():
    late, mx = classify_late(np.array([5, 15, 9]), 12, 0, floor=10)
    assert late.tolist() == [True, False, True]
    assert mx == 15


def test_bucket_start_rejects_bad_interval():
    with pytest.raises(ValueError, match="interval_ms=0"):
        bucket_start(np.array([1]), 0)


def test_pipeline_watermark_is_min_over_partitions():
    assert pipeline_watermark({0: 50, 1: 30, 2: 40}, 3, 5) == 25
    assert pipeline_watermark({0: 50, 2: 40}, 3, 5) is None
    assert pipeline_watermark({0: 50, 2: 40}, 3, 5, floor=60) == 60


@given(
    st.one_of(st.none(), st.integers(0, 50).map(lambda x: x * 10)),
    st.integers(0, 50).map(lambda x: x * 10),
    st.integers(0, 1000),
)
def test_window_ends_are_consecutive_and_closed(last, first, wm):
    ends = window_ends(last, first, wm, 10)
    # every multiple of 10 after the last emitted end (or the first bucket), up to the
    # watermark: counted one by one, so an always-empty result cannot pass
    after = last if last is not None else first
    expected = [e for e in range(0, 1100, 10) if after < e <= wm]
    assert ends.tolist() == expected


@given(
    st.one_of(st.none(), st.integers(0, 50).map(lambda x: x * 10)),
    st.integers(0, 50).map(lambda x: x * 10),
    st.integers(0, 1000),
    st.integers(1, 30),
)
def test_window_ends_limit_keeps_the_earliest(last, first, wm, limit):
    whole = window_ends(last, first, wm, 10)
    assert window_ends(last, first, wm, 10, limit).tolist() == whole[:limit].tolist()


def test_window_ends_never_builds_more_than_its_cap():
    # a watermark in the year 3000 with one-millisecond windows: 3e16 windows uncapped
    ends = window_ends(None, 0, 32_503_680_000_000, 1, limit=5)
    assert ends.tolist() == [1, 2, 3, 4, 5]
    with pytest.raises(ValueError, match="limit=0"):
        window_ends(None, 0, 10, 1, limit=0)


def test_idle_floor_advances_from_the_latest_event_by_the_idle_time():
    assert idle_floor({}, 1000, 10**9) is None  # no event: nothing to close, ever
    assert idle_floor({0: 5000, 1: 9000}, 1000, 2500) == 10_500
    assert idle_floor({0: 5000}, 1000, -5) == 4000  # a clock step back never lowers it


def test_time_bounds_are_inclusive():
    t = np.array([899, 900, 1000, 1010, 1011])
    assert in_time_bounds(t, 1000, 100, 10).tolist() == [False, True, True, True, False]


@given(
    st.lists(st.tuples(st.integers(0, 30), st.integers(0, 3)), max_size=100),
    st.integers(1, 5),
)
def test_fold_then_window_equals_direct_count(events, width_buckets):
    interval = 10
    t = np.array([e[0] * 7 for e in events], dtype=np.int64)
    bins = np.array([e[1] for e in events], dtype=np.int64)
    b = bucket_start(t, interval)
    ub, counts = fold_counts(b, bins, 4)
    assert counts.sum() == len(events)
    ends = np.arange(10, 250, 10)
    width = width_buckets * interval
    got = window_sums(ub, counts, ends, width) if ub.size else np.zeros((ends.size, 4))
    for i, end in enumerate(ends):
        inside = (t >= end - width) & (t < end)
        expected = np.bincount(bins[inside], minlength=4)
        assert got[i].tolist() == expected.tolist()


def test_fold_sums_counts_truthy_and_nan():
    b, c, s, k = fold_sums(np.array([0, 0, 0, 10]), np.array([2.0, 0.0, np.nan, -1.0]))
    assert b.tolist() == [0, 10]
    assert c.tolist() == [1, 1]
    assert s.tolist() == [2.0, -1.0]
    assert k.tolist() == [2, 1]


def test_window_sums_unsorted_and_sparse_buckets():
    got = window_sums(np.array([30, 0]), np.array([5, 1]), np.array([10, 20, 40]), 20)
    assert got.tolist() == [1, 1, 5]
