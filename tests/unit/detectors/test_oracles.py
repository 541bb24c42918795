"""Metrics against scipy and against hand-computed values."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import stats
from scipy.spatial import distance

from driftline.detectors import (
    Baseline,
    chi2,
    hellinger,
    jensenshannon,
    ks,
    maxdiff,
    psi,
    sumdiff,
    wasserstein,
)

pytestmark = pytest.mark.unit

sample_st = hnp.arrays(
    np.float64,
    st.integers(1, 80),
    elements=st.one_of(st.floats(-100, 100), st.sampled_from([0.0, 1.0, 2.5])),
)


# -- PSI, hand-computed ---------------------------------------------------------------------------


def test_psi_hand_computed() -> None:
    b = [0.25, 0.25, 0.25, 0.25]
    w = [0.1, 0.4, 0.3, 0.2]
    expected = (
        (0.1 - 0.25) * math.log(0.1 / 0.25)
        + (0.4 - 0.25) * math.log(0.4 / 0.25)
        + (0.3 - 0.25) * math.log(0.3 / 0.25)
        + (0.2 - 0.25) * math.log(0.2 / 0.25)
    )
    assert psi(b, w) == pytest.approx(expected, rel=1e-12)
    assert psi(b, b) == 0.0
    assert maxdiff(b, w) == pytest.approx(0.15)
    assert sumdiff(b, w) == pytest.approx(0.5 * (0.15 + 0.15 + 0.05 + 0.05))


def test_psi_empty_bin_on_one_side_uses_0005() -> None:
    # window bin 0 empty: replaced by 0.005; baseline bin 2 empty: replaced by 0.005
    b = [0.5, 0.5, 0.0]
    w = [0.0, 0.8, 0.2]
    expected = (
        (0.005 - 0.5) * math.log(0.005 / 0.5)
        + (0.8 - 0.5) * math.log(0.8 / 0.5)
        + (0.2 - 0.005) * math.log(0.2 / 0.005)
    )
    assert psi(b, w) == pytest.approx(expected, rel=1e-12)
    # empty on both sides contributes nothing
    assert psi([0.5, 0.5, 0.0], [0.5, 0.5, 0.0]) == 0.0


def test_psi_through_baseline_with_outlier_bin() -> None:
    base = Baseline.from_values(np.arange(1.0, 11.0), num_bins=2)  # edges 1, 5.5, 10
    assert base.edges.tolist() == [1.0, 5.5, 10.0]
    window = np.array([2.0, 3.0, 7.0, 20.0])  # 20 falls in the right outlier bin
    r = base.compare(window, metric="psi", thresholds={"warning": 0.1, "alert": 0.25})
    assert r.baseline_densities == [0.0, 0.5, 0.5, 0.0]
    assert r.window_densities == [0.0, 0.5, 0.25, 0.25]
    expected = (0.25 - 0.5) * math.log(0.25 / 0.5) + (0.25 - 0.005) * math.log(0.25 / 0.005)
    assert r.score == pytest.approx(expected, rel=1e-12)
    assert r.status == "alert"
    assert r.window_count == 4 and r.baseline_count == 10


def test_psi_nan_counts_in_leftmost_bin() -> None:
    base = Baseline.from_values(np.arange(1.0, 11.0), num_bins=2)
    r = base.compare([np.nan, 2.0], metric="maxdiff", thresholds={"alert": 0.6})
    assert r.window_densities == [0.5, 0.5, 0.0, 0.0]
    assert r.score == pytest.approx(0.5)


# -- KS --------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(x=sample_st, y=sample_st)
def test_ks_statistic_equals_scipy_exactly(x: np.ndarray, y: np.ndarray) -> None:
    ours = ks(x, y, thresholds={"alpha": 0.05})
    with warnings.catch_warnings():
        # scipy falls back from its exact p-value on some tied samples; the statistic stands
        warnings.simplefilter("ignore", RuntimeWarning)
        reference = stats.ks_2samp(x, y)
    assert ours.score == float(reference.statistic)
    if x.size * y.size / (x.size + y.size) >= 1:  # scipy's asymp p-value is defined
        theirs = stats.ks_2samp(x, y, method="asymp")
        assert ours.p_value == pytest.approx(float(theirs.pvalue), rel=1e-6, abs=1e-9)


def test_ks_statistic_equals_scipy_on_large_samples() -> None:
    rng = np.random.default_rng(11)
    x, y = rng.normal(size=20_000), rng.normal(0.05, 1, size=3000)
    ours = ks(x, y)
    theirs = stats.ks_2samp(x, y)
    assert ours.score == float(theirs.statistic)
    assert ours.p_value == pytest.approx(float(theirs.pvalue), rel=1e-9)


def test_ks_exact_p_value_matches_scipy() -> None:
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=40), rng.normal(0.5, 1, size=30)
    assert ks(x, y, method="exact").p_value == pytest.approx(
        stats.ks_2samp(x, y, method="exact").pvalue
    )


def test_ks_raw_window_against_baseline_is_exact() -> None:
    rng = np.random.default_rng(7)
    base_values = rng.normal(size=3000)
    window = rng.normal(0.2, 1.1, size=500)
    base = Baseline.from_values(base_values, sample_size=None)
    r = base.compare(window, metric="ks", thresholds={"alpha": 0.01})
    assert r.score == float(stats.ks_2samp(base_values, window).statistic)
    assert r.details["exact"] == 1.0


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("fine_bins", [20, 200])
def test_binned_ks_within_stated_bound(seed: int, fine_bins: int) -> None:
    rng = np.random.default_rng(seed)
    base_values = rng.normal(size=5000)
    shift = [0.0, 0.1, 0.5, 3.0][seed % 4]
    window = rng.normal(shift, 1 + 0.1 * (seed % 3), size=800)
    base = Baseline.from_values(base_values, fine_bins=fine_bins, sample_size=None)
    binned = base.compare(base.histogram(window), metric="ks", thresholds={"alpha": 0.01})
    exact = float(stats.ks_2samp(base_values, window).statistic)
    bound = binned.details["error_bound"]
    assert binned.details["exact"] == 0.0
    assert binned.score <= exact + 1e-12
    assert exact <= binned.score + bound + 1e-12
    # the binned p-value is conservative
    assert binned.p_value >= stats.ks_2samp(base_values, window, method="asymp").pvalue - 1e-12
    if fine_bins == 200:
        assert bound <= 0.0055


# -- distances ----------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(x=sample_st, y=sample_st)
def test_wasserstein_matches_scipy(x: np.ndarray, y: np.ndarray) -> None:
    assert wasserstein(x, y) == pytest.approx(stats.wasserstein_distance(x, y), rel=1e-9, abs=1e-9)


def test_wasserstein_through_baseline() -> None:
    rng = np.random.default_rng(2)
    base_values, window = rng.normal(size=2000), rng.normal(0.3, 1, size=400)
    base = Baseline.from_values(base_values, sample_size=None)
    exact = base.compare(window, metric="wasserstein", thresholds={"alert": 1.0})
    assert exact.score == pytest.approx(stats.wasserstein_distance(base_values, window))
    binned = base.compare(base.histogram(window), metric="wasserstein", thresholds={"alert": 1.0})
    # mass is spread uniformly inside fine bins: close to, not equal to, the exact value
    assert binned.score == pytest.approx(exact.score, abs=0.03)


densities_st = st.lists(st.floats(0, 1), min_size=2, max_size=12).filter(lambda v: sum(v) > 0)


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_jensenshannon_matches_scipy(data: st.DataObject) -> None:
    b = data.draw(densities_st)
    w = data.draw(st.lists(st.floats(0, 1), min_size=len(b), max_size=len(b)))
    if sum(w) == 0:
        w[0] = 1.0
    assert jensenshannon(b, w) == pytest.approx(distance.jensenshannon(b, w), abs=1e-7)


def test_hellinger_known_values() -> None:
    assert hellinger([0.5, 0.5], [0.5, 0.5]) == 0.0
    assert hellinger([1.0, 0.0], [0.0, 1.0]) == 1.0
    b, w = np.array([0.2, 0.3, 0.5]), np.array([0.1, 0.6, 0.3])
    expected = np.sqrt(0.5 * np.sum((np.sqrt(b) - np.sqrt(w)) ** 2))
    assert hellinger(b, w) == pytest.approx(expected)


@settings(max_examples=60, deadline=None)
@given(
    counts=st.lists(st.tuples(st.integers(0, 500), st.integers(0, 500)), min_size=2, max_size=10)
)
def test_chi2_matches_scipy(counts: list[tuple[int, int]]) -> None:
    b = np.array([c[0] for c in counts])
    w = np.array([c[1] for c in counts])
    table = np.vstack([b, w])
    table = table[:, table.sum(axis=0) > 0]
    if b.sum() == 0 or w.sum() == 0 or table.shape[1] < 2:
        return
    ours = chi2(b, w, thresholds={"alpha": 0.01})
    theirs = stats.chi2_contingency(table, correction=False)
    assert ours.score == pytest.approx(theirs.statistic, rel=1e-9, abs=1e-9)
    assert ours.p_value == pytest.approx(theirs.pvalue, rel=1e-9, abs=1e-12)
    assert ours.details["dof"] == theirs.dof


def test_chi2_through_categorical_baseline() -> None:
    rng = np.random.default_rng(3)
    cats = rng.choice([1.0, 2.0, 3.0], p=[0.5, 0.3, 0.2], size=5000)
    base = Baseline.from_values(cats, bins="categorical")
    assert base.edges.tolist() == [1.0, 1.0, 2.0, 3.0]
    same = base.compare(rng.choice([1.0, 2.0, 3.0], p=[0.5, 0.3, 0.2], size=1000), "chi2")
    mixed = base.compare(rng.choice([1.0, 2.0, 3.0], p=[0.3, 0.3, 0.4], size=1000), "chi2")
    assert same.status == "ok"
    assert mixed.status == "alert"
    # each category in its own bin, plus the two outlier bins
    assert mixed.window_densities[0] == 0.0 and mixed.window_densities[-1] == 0.0
    assert len(mixed.window_densities) == 5
