"""Event-time window arithmetic: buckets, lateness, watermarks, window ends, folding, sums.

Everything here is a pure function of numpy arrays, so the live monitor and ``driftline
replay`` compute exactly the same windows from the same ordered events.

Rules (DESIGN §5)
-----------------
* Buckets are aligned to the epoch: the bucket of time ``t`` starts at ``t - t % interval``.
* A window ending at ``end`` (a multiple of ``interval``) holds the buckets
  ``[end - width, end)``; ``width == interval`` is a tumbling window, ``width > interval`` a
  sliding one that is evaluated at every bucket boundary.
* Watermark per partition: the largest event time seen so far in that partition minus the
  allowed lateness (raised to the pipeline's idle floor, see below). An event whose time is
  below its partition's watermark *before* the event is late: it is counted and written to
  the late-events topic, never folded into a window.
* Watermark per pipeline: the minimum over all partitions of the results topic. A window is
  final, and emitted once, when the pipeline watermark reaches its end. Because each accepted
  event is at or above its partition's watermark, which is at or above the pipeline watermark,
  no accepted event can land in a window that has closed; and because every rule only depends
  on each partition's own ordered events, the contents of every window do not depend on how
  partitions interleave — replay reproduces them.
* A pipeline's watermark comes from its own events only. A pipeline that has seen no event
  has no watermark and closes nothing, however long it waits; data that arrives hours or
  days after its event time (a backfill, an edge device that was offline) gets its windows,
  because the watermark starts where that data is, not at the wall clock.
* Idle floor: the only wall-clock rule. When a pipeline receives nothing for ``idle_close``
  the monitor raises a persisted floor under every partition's watermark to
  ``latest event time - lateness + wall time elapsed since that event arrived``: an idle
  stream's event time advances as fast as the wall clock from where its events stopped, so
  windows close and alerts resolve, and a stream whose data is three days behind stays three
  days behind (see :func:`idle_floor`). Replay applies the equivalent deterministic rule at
  the end of its range: it closes every window ending at or before the range end.
* Bounds: window arithmetic never materialises more than its cap of windows
  (:func:`window_ends` computes the capped range), and the monitor refuses events whose time
  is outside ``[now - max_age, now + max_skew]`` (replay: relative to its range end), so one
  event dated in the year 3000 neither allocates its range of windows nor makes every later
  event late.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

__all__ = [
    "bucket_start",
    "classify_late",
    "fold_counts",
    "fold_sums",
    "idle_floor",
    "in_time_bounds",
    "pipeline_watermark",
    "window_ends",
    "window_sums",
]


def bucket_start(times: np.ndarray, interval_ms: int) -> np.ndarray:
    """Start of the epoch-aligned bucket holding each time.

    >>> bucket_start(np.array([0, 999, 1000, 2500]), 1000).tolist()
    [0, 0, 1000, 2000]
    """
    if interval_ms <= 0:
        raise ValueError(f"interval_ms={interval_ms}: must be a positive number of milliseconds")
    t = np.asarray(times, dtype=np.int64)
    return t - np.mod(t, interval_ms)


def classify_late(
    times: np.ndarray, prev_max: int | None, lateness_ms: int, floor: int | None = None
) -> tuple[np.ndarray, int | None]:
    """Which events of one partition (in offset order) are late, and the new max event time.

    An event is late when its time is below ``max(previous max time - lateness, floor)``,
    where "previous" covers the events before it, including earlier batches (``prev_max``).

    >>> late, m = classify_late(np.array([10_000, 4_000, 5_000, 20_000, 16_000]), None, 5_000)
    >>> late.tolist(), m
    ([False, True, False, False, False], 20000)
    >>> classify_late(np.array([1, 2]), None, 0, floor=2)[0].tolist()
    [True, False]
    """
    if lateness_ms < 0:
        raise ValueError(f"lateness_ms={lateness_ms}: must be >= 0")
    t = np.asarray(times, dtype=np.int64)
    if t.size == 0:
        return np.zeros(0, dtype=bool), prev_max
    lo = np.iinfo(np.int64).min // 2
    start = lo if prev_max is None else prev_max
    running = np.maximum.accumulate(np.concatenate(([start], t)))
    before = running[:-1]
    threshold = np.where(before == lo, lo, before - lateness_ms)
    if floor is not None:
        threshold = np.maximum(threshold, floor)
    late = t < threshold
    return late, int(running[-1])


def pipeline_watermark(
    partition_max: Mapping[int, int],
    partitions: int,
    lateness_ms: int,
    floor: int | None = None,
) -> int | None:
    """Watermark of a pipeline: min over all ``partitions`` of (max time - lateness), or the floor.

    A partition that has seen no event holds the watermark back (``None``) unless a floor is set.

    >>> pipeline_watermark({0: 10_000, 1: 8_000}, 2, 1_000)
    7000
    >>> pipeline_watermark({0: 10_000}, 2, 1_000) is None
    True
    >>> pipeline_watermark({0: 10_000}, 2, 1_000, floor=3_000)
    3000
    """
    marks: list[int] = []
    for p in range(partitions):
        m = partition_max.get(p)
        own = None if m is None else m - lateness_ms
        if floor is not None:
            own = floor if own is None else max(own, floor)
        if own is None:
            return None
        marks.append(own)
    return min(marks) if marks else floor


def idle_floor(partition_max: Mapping[int, int], lateness_ms: int, idle_ms: int) -> int | None:
    """The floor of an idle pipeline: latest event time - lateness + wall time idle.

    ``None`` when the pipeline has seen no event (it has nothing to close).

    >>> idle_floor({0: 10_000, 1: 7_000}, 1_000, 5_000)
    14000
    >>> idle_floor({}, 1_000, 5_000) is None
    True
    """
    if not partition_max:
        return None
    return max(partition_max.values()) - lateness_ms + max(0, int(idle_ms))


def in_time_bounds(times: np.ndarray, now_ms: int, max_age_ms: int, max_skew_ms: int) -> np.ndarray:
    """Which event times lie in ``[now - max_age, now + max_skew]``.

    >>> in_time_bounds(np.array([0, 50, 100, 200]), 100, 50, 10).tolist()
    [False, True, True, False]
    """
    t = np.asarray(times, dtype=np.int64)
    return (t >= now_ms - max_age_ms) & (t <= now_ms + max_skew_ms)


def window_ends(
    last_end: int | None,
    first_bucket: int | None,
    watermark: int | None,
    interval_ms: int,
    limit: int | None = None,
) -> np.ndarray:
    """Ends of the windows that close now: after ``last_end``, up to the watermark.

    Without a previous close, the first window to close is the earliest one holding
    ``first_bucket`` (the oldest bucket with data). ``limit`` caps how many are returned
    (the earliest ones); the range is capped before it is built, so a far watermark costs
    nothing.

    >>> window_ends(None, 1000, 3500, 1000).tolist()
    [2000, 3000]
    >>> window_ends(3000, 1000, 3500, 1000).tolist()
    []
    >>> window_ends(3000, 1000, 6000, 1000).tolist()
    [4000, 5000, 6000]
    >>> window_ends(0, 0, 32_503_680_000_000, 1000, limit=2).tolist()
    [1000, 2000]
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit={limit}: must be >= 1")
    if watermark is None:
        return np.zeros(0, dtype=np.int64)
    if last_end is None:
        if first_bucket is None:
            return np.zeros(0, dtype=np.int64)
        start = first_bucket - first_bucket % interval_ms + interval_ms
    else:
        start = last_end + interval_ms
    stop = watermark - watermark % interval_ms
    if limit is not None:
        stop = min(stop, start + (limit - 1) * interval_ms)
    if stop < start:
        return np.zeros(0, dtype=np.int64)
    return np.arange(start, stop + 1, interval_ms, dtype=np.int64)


def fold_counts(
    buckets: np.ndarray, bins: np.ndarray, num_bins: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-bucket bin counts of a batch: ``(unique bucket starts, counts[bucket, bin])``.

    >>> b, c = fold_counts(np.array([0, 0, 10, 0]), np.array([1, 1, 0, 2]), 3)
    >>> b.tolist(), c.tolist()
    ([0, 10], [[0, 2, 1], [1, 0, 0]])
    """
    ub, inv = np.unique(np.asarray(buckets, dtype=np.int64), return_inverse=True)
    flat = inv.astype(np.int64) * num_bins + np.asarray(bins, dtype=np.int64)
    counts = np.bincount(flat, minlength=ub.size * num_bins).reshape(ub.size, num_bins)
    return ub, counts


def fold_sums(
    buckets: np.ndarray, values: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-bucket ``(starts, truthy count, sum, non-NaN count)`` of one evaluated column.

    Truthy means non-zero and not NaN (a boolean condition that holds).

    >>> b, c, s, k = fold_sums(np.array([0, 0, 5]), np.array([1.0, np.nan, 0.0]))
    >>> b.tolist(), c.tolist(), s.tolist(), k.tolist()
    ([0, 5], [1, 0], [1.0, 0.0], [1, 1])
    """
    ub, inv = np.unique(np.asarray(buckets, dtype=np.int64), return_inverse=True)
    v = np.asarray(values, dtype=np.float64)
    ok = ~np.isnan(v)
    truthy = ok & (v != 0)
    count = np.bincount(inv, weights=truthy, minlength=ub.size).astype(np.int64)
    known = np.bincount(inv, weights=ok, minlength=ub.size).astype(np.int64)
    total = np.bincount(inv, weights=np.where(ok, v, 0.0), minlength=ub.size)
    return ub, count, total, known


def window_sums(
    bucket_starts: np.ndarray, bucket_values: np.ndarray, ends: np.ndarray, width_ms: int
) -> np.ndarray:
    """Sum of the bucket rows inside ``[end - width, end)`` for each window end.

    ``bucket_values`` is ``(n_buckets,)`` or ``(n_buckets, k)``; buckets need not be sorted or
    contiguous. Uses prefix sums, so the cost is linear in buckets plus windows.

    >>> window_sums(np.array([0, 10, 20]), np.array([1, 2, 4]), np.array([10, 20, 30]), 20).tolist()
    [1, 3, 6]
    """
    starts = np.asarray(bucket_starts, dtype=np.int64)
    vals = np.asarray(bucket_values)
    order = np.argsort(starts, kind="stable")
    starts = starts[order]
    vals = vals[order]
    zero = np.zeros((1, *vals.shape[1:]), dtype=vals.dtype)
    prefix = np.concatenate([zero, np.cumsum(vals, axis=0)], axis=0)
    e = np.asarray(ends, dtype=np.int64)
    hi = np.searchsorted(starts, e, side="left")
    lo = np.searchsorted(starts, e - width_ms, side="left")
    out: np.ndarray = prefix[hi] - prefix[lo]
    return out
