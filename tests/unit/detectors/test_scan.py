"""The ``mean`` metric and the multi-scale WindowScan: oracles, null rate, accumulation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import stats

from driftline.detectors import Baseline, Histogram, WindowScan

pytestmark = pytest.mark.unit


def _mean_oracle(base_values: np.ndarray, window: np.ndarray, fine_bins: int) -> float:
    """Two-sample z-test p-value on the centroid-mapped values, written out with numpy."""
    b = Baseline.from_values(base_values, fine_bins=fine_bins, sample_size=None)
    edges = b.fine_edges

    # fine bin of each value, by the bin rules (interior bins right-closed, outliers outside)
    def index(v: np.ndarray) -> np.ndarray:
        idx = np.searchsorted(edges[1:-1], v, side="left") + 1
        idx[v < edges[0]] = 0
        idx[v > edges[-1]] = edges.size
        idx[np.isnan(v)] = 0
        return idx

    bi, wi = index(base_values), index(window)
    centroids = np.array(
        [base_values[bi == j].mean() if np.any(bi == j) else np.nan for j in range(edges.size + 1)]
    )
    centroids[0], centroids[-1] = edges[0], edges[-1]
    g_base, g_window = centroids[bi], centroids[wi]
    mu, sd = g_base.mean(), g_base.std()
    z = (g_window.mean() - mu) / (sd * math.sqrt(1 / window.size + 1 / base_values.size))
    return float(2 * stats.norm.sf(abs(z)))


@pytest.mark.parametrize("fine_bins", [10, 200])
@pytest.mark.parametrize("shift", [0.0, 0.1, 1.0])
def test_mean_metric_matches_a_direct_computation(fine_bins: int, shift: float) -> None:
    rng = np.random.default_rng(int(shift * 10) + fine_bins)
    base_values = rng.gamma(2.0, size=4000)
    window = rng.gamma(2.0, size=700) + shift
    window[:3] = [-5.0, 100.0, np.nan]  # both outlier bins and NaN
    base = Baseline.from_values(base_values, fine_bins=fine_bins, sample_size=None)
    raw = base.compare(window, "mean", {"alpha": 0.01})
    binned = base.compare(base.histogram(window), "mean", {"alpha": 0.01})
    assert raw == binned
    assert raw.p_value == pytest.approx(_mean_oracle(base_values, window, fine_bins), rel=1e-9)


def test_mean_metric_is_close_to_the_raw_z_test_with_fine_bins() -> None:
    # with 200 fine quantile bins the centroid map loses little: the binned z of a window
    # stays within about 0.1 of the z-test on the raw values
    rng = np.random.default_rng(3)
    base_values = rng.normal(size=10_000)
    base = Baseline.from_values(base_values)
    gaps = []
    for shift in (0.0, 0.1, 0.3):
        for _ in range(20):
            window = rng.normal(shift, 1, size=1000)
            r = base.compare(window, "mean", {"alpha": 0.01})
            raw_z = (window.mean() - base_values.mean()) / (
                base_values.std() * math.sqrt(1 / 1000 + 1 / 10_000)
            )
            gaps.append(r.details["z"] - raw_z)
            assert r.score == pytest.approx(abs(window.mean() - base_values.mean()), abs=0.01)
    assert max(abs(g) for g in gaps) < 0.15
    assert abs(float(np.mean(gaps))) < 0.1


def test_mean_metric_clips_at_the_baseline_range() -> None:
    base = Baseline.from_values(np.linspace(0.0, 1.0, 1001))
    far, farther = base.compare([2.0] * 50, "mean"), base.compare([1e9] * 50, "mean")
    assert far == farther
    assert far.status == "alert" and far.details["difference"] == pytest.approx(0.5)
    constant = Baseline.from_values(np.full(100, 2.0))  # documented: nothing to test
    assert constant.compare([2.0, 3.0], "mean").p_value == 1.0
    assert constant.compare([2.0, 3.0], "psi", {"alert": 0.25}).status == "alert"


@settings(max_examples=40, deadline=None)
@given(
    window=hnp.arrays(
        np.float64, st.integers(1, 60), elements=st.floats(-10, 10) | st.just(float("nan"))
    )
)
def test_mean_p_value_is_a_probability(window: np.ndarray) -> None:
    base = Baseline.from_values(np.linspace(-3, 3, 301))
    r = base.compare(window, "mean", {"alpha": 0.01})
    assert 0.0 <= (r.p_value or 0.0) <= 1.0 and r.score >= 0.0


# -- WindowScan ---------------------------------------------------------------------


def _base(seed: int = 0, size: int = 10_000) -> Baseline:
    return Baseline.from_values(np.random.default_rng(seed).normal(size=size), seed=seed)


@pytest.mark.parametrize("test", ["mean", "chi2", "ks"])
def test_each_scale_is_the_merged_windows_test(test: str) -> None:
    rng = np.random.default_rng(1)
    base = _base()
    scan = WindowScan(base, test=test, alpha=1e-9, scales=(1, 2, 3))
    windows = [base.histogram(rng.normal(0.02 * i, 1, size=300 + 50 * i)) for i in range(3)]
    results = [scan.update(w) for w in windows]
    assert [sorted(r.p_values) for r in results] == [[1], [1, 2], [1, 2, 3]]
    last = results[-1]
    for s, p in last.p_values.items():
        merged = Histogram.merge(windows[-s:])
        assert p == pytest.approx(base.compare(merged, test, {"alpha": 0.01}).p_value, rel=1e-12)
    best = min(last.p_values.values())
    assert last.p_value == pytest.approx(min(1.0, 3 * best))
    assert last.status == "ok" and last.p_value > 1e-9


def test_alarm_drops_the_held_windows() -> None:
    rng = np.random.default_rng(2)
    base = _base()
    scan = WindowScan(base)
    for _ in range(5):
        scan.update(rng.normal(size=500))
    assert scan.held == 5
    hit = scan.update(rng.normal(3.0, 1, size=500))
    assert hit.drift and hit.scale == 1 and hit.windows == 6
    assert scan.held == 0 and scan.n_windows == 6
    after = scan.update(rng.normal(size=500))
    assert list(after.p_values) == [1] and after.windows == 1


def test_null_rate_stays_below_alpha_with_fresh_baselines() -> None:
    # the windows of a stream share one baseline, whose own sampling error correlates the
    # scales and the windows; a fresh baseline per stream averages over it
    rng = np.random.default_rng(20)
    alarms = windows = 0
    for stream in range(40):
        base = Baseline.from_values(rng.normal(size=2000), seed=stream)
        scan = WindowScan(base, alpha=0.02)
        hists = [base.histogram(rng.normal(size=400)) for _ in range(60)]
        alarms += sum(scan.update(h).drift for h in hists)
        windows += len(hists)
    rate = alarms / windows
    # Bonferroni over 4 scales plus dropping windows after an alarm: at most alpha; about
    # 0.6 alpha in simulation
    assert 0.002 < rate <= 0.02, rate


def test_small_persistent_shift_accumulates() -> None:
    # 0.1 baseline standard deviations on windows of 1,000: one window rarely shows it
    # (the per-window mean test at the same alpha alarms on about 40 % of such windows, KS
    # and PSI on under 10 %), the merged windows do
    rng = np.random.default_rng(5)
    delays_scan, single_hits = [], 0
    for stream in range(12):
        base = Baseline.from_values(rng.normal(size=10_000), seed=stream)
        scan = WindowScan(base, alpha=0.002)
        for _ in range(10):
            scan.update(rng.normal(size=1000))
        for delay in range(1, 9):
            h = base.histogram(rng.normal(0.1, 1, size=1000))
            single_hits += base.compare(h, "ks").status == "alert"
            if scan.update(h).drift:
                delays_scan.append(delay)
                break
    assert len(delays_scan) == 12
    assert np.mean(delays_scan) <= 2.5
    assert single_hits <= 6


def test_scan_catches_a_category_mix_change_with_chi2() -> None:
    rng = np.random.default_rng(6)
    cats = np.arange(4.0)
    base = Baseline.from_values(
        rng.choice(cats, p=[0.4, 0.3, 0.2, 0.1], size=10_000), "categorical"
    )
    scan = WindowScan(base, test="chi2", alpha=0.002)
    before = [scan.update(rng.choice(cats, p=[0.4, 0.3, 0.2, 0.1], size=200)) for _ in range(20)]
    after = [scan.update(rng.choice(cats, p=[0.36, 0.3, 0.2, 0.14], size=200)) for _ in range(12)]
    assert not any(r.drift for r in before)
    assert any(r.drift for r in after)


def test_scan_rejects_empty_and_foreign_windows() -> None:
    scan = WindowScan(_base())
    with pytest.raises(ValueError, match="empty"):
        scan.update([])
    with pytest.raises(ValueError, match="fine grid"):
        scan.update(Histogram.from_values([1.0], [0.0, 1.0]))
    assert scan.n_windows == 0
