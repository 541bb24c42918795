"""Bins and histograms: the bin rules, exact add/subtract/merge, fine-to-coarse consistency."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from driftline.detectors import METRICS, Baseline, Histogram

pytestmark = pytest.mark.unit

EDGES = np.array([0.0, 1.0, 2.0, 5.0])
values_st = hnp.arrays(
    np.float64,
    st.integers(0, 60),
    elements=st.one_of(
        st.floats(-10, 10, allow_nan=False),
        st.sampled_from([0.0, 1.0, 2.0, 5.0, float("nan")]),
    ),
)


def test_bin_rules_explicit_outliers() -> None:
    h = Histogram.from_values([-0.1, 0.0, 1.0, 1.5, 2.0, 5.0, 5.1, np.nan], EDGES)
    # left outlier gets -0.1 and NaN; [0, 1] gets 0 and 1; (1, 2] gets 1.5 and 2; (2, 5] gets 5
    assert h.counts.tolist() == [2, 2, 2, 1, 1]


def test_bin_rules_open_ends() -> None:
    h = Histogram.from_values([-100.0, 0.5, 3.0, 100.0, np.nan], EDGES, outliers="open")
    assert h.counts.tolist() == [3, 0, 2]


@settings(max_examples=80, deadline=None)
@given(a=values_st, b=values_st, c=values_st)
def test_add_subtract_merge_exact(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> None:
    ha, hb, hc = (Histogram.from_values(v, EDGES) for v in (a, b, c))
    together = Histogram.from_values(np.concatenate([a, b, c]), EDGES)
    assert ha.add(hb).add(hc) == together
    assert Histogram.merge([ha, hb, hc]) == together
    assert together.subtract(hb) == Histogram.from_values(np.concatenate([a, c]), EDGES)
    assert (together - ha - hb - hc).total == 0
    assert together.counts.dtype == np.int64
    assert together.total == a.size + b.size + c.size


def test_subtract_refuses_negative_counts() -> None:
    small = Histogram.from_values([0.5], EDGES)
    big = Histogram.from_values([0.5, 0.5], EDGES)
    with pytest.raises(ValueError, match="negative"):
        small.subtract(big)


def test_incompatible_histograms_refused() -> None:
    a = Histogram.from_values([0.5], EDGES)
    b = Histogram.from_values([0.5], EDGES + 1)
    with pytest.raises(ValueError, match="different edges"):
        a.add(b)
    with pytest.raises(ValueError, match="histograms"):
        Histogram.merge([])


def test_histogram_validation_and_roundtrips() -> None:
    with pytest.raises(ValueError, match="counts"):
        Histogram(EDGES, [1, 2, 3])
    with pytest.raises(ValueError, match="counts"):
        Histogram(EDGES, [1, 2, 3, 4, -1])
    with pytest.raises(ValueError, match="outliers"):
        Histogram(EDGES, [1, 2, 3], outliers="closed")
    h = Histogram.from_values([0.5, 3.0, 9.0], EDGES)
    assert Histogram.from_json(h.to_json()) == h
    assert pickle.loads(pickle.dumps(h)) == h
    with pytest.raises(ValueError):
        h.counts[0] = 3


baseline_st = hnp.arrays(
    np.float64,
    st.integers(1, 300),
    elements=st.one_of(
        st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False),
        st.sampled_from([0.0, 1.0, 2.0, float("nan")]),
    ),
).filter(lambda v: np.isfinite(v).any())


@settings(max_examples=60, deadline=None)
@given(
    base=baseline_st,
    window=values_st,
    mode=st.sampled_from(["quantile", "equal", "categorical"]),
    outliers=st.sampled_from(["explicit", "open"]),
    num_bins=st.integers(1, 8),
    fine_bins=st.integers(1, 50),
)
def test_coarse_counts_are_sums_of_fine_counts(
    base: np.ndarray,
    window: np.ndarray,
    mode: str,
    outliers: str,
    num_bins: int,
    fine_bins: int,
) -> None:
    b = Baseline.from_values(
        base, bins=mode, num_bins=num_bins, outliers=outliers, fine_bins=fine_bins
    )
    assert set(b.edges.tolist()) <= set(b.fine_edges.tolist())
    direct = np.bincount(b.coarse_index(window), minlength=b.num_bins)
    assert np.array_equal(b.coarsen(b.histogram(window).counts), direct)
    assert np.array_equal(b.counts, np.bincount(b.coarse_index(base), minlength=b.num_bins))


@settings(max_examples=40, deadline=None)
@given(base=baseline_st, window=values_st.filter(lambda v: v.size > 0))
def test_raw_and_histogram_give_identical_coarse_metrics(
    base: np.ndarray, window: np.ndarray
) -> None:
    b = Baseline.from_values(base)
    h = b.histogram(window)
    for metric in ("psi", "maxdiff", "sumdiff", "jensenshannon", "hellinger", "chi2"):
        thresholds = {"alpha": 0.01} if metric == "chi2" else {"warning": 0.1, "alert": 0.2}
        raw = b.compare(window, metric=metric, thresholds=thresholds)
        binned = b.compare(h, metric=metric, thresholds=thresholds)
        assert raw == binned, metric
    assert "psi" in METRICS
