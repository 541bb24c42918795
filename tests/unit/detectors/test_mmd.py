"""Kernel MMD against a direct computation, and its permutation p-value."""

from __future__ import annotations

import numpy as np
import pytest

from driftline.detectors import Baseline, KernelMMD, mmd

pytestmark = pytest.mark.unit

ALPHA = {"alpha": 0.05}


def _naive_mmd2(x: np.ndarray, y: np.ndarray, bandwidth: float) -> float:
    def k(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.exp(-np.sum((a - b) ** 2) / (2 * bandwidth**2)))

    n, m = len(x), len(y)
    sxx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    syy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    sxy = sum(k(x[i], y[j]) for i in range(n) for j in range(m)) / (n * m)
    return sxx + syy - 2 * sxy


def test_statistic_matches_direct_computation() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(25, 2)), rng.normal(0.5, 1, size=(18, 2))
    r = mmd(x, y, bandwidth=1.3, n_permutations=50, thresholds={"alert": 1.0})
    assert r.score == pytest.approx(_naive_mmd2(x, y, 1.3), rel=1e-9, abs=1e-12)


def test_median_heuristic_bandwidth() -> None:
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(30, 3)), rng.normal(size=(20, 3))
    z = np.vstack([x, y])
    d = np.sqrt(((z[:, None, :] - z[None, :, :]) ** 2).sum(-1))
    expected = float(np.median(d[np.triu_indices(len(z), 1)]))
    r = mmd(x, y, n_permutations=10, thresholds={"alert": 1.0})
    assert r.details["bandwidth"] == pytest.approx(expected)
    assert r.score == pytest.approx(_naive_mmd2(x, y, expected), rel=1e-9, abs=1e-12)


def test_p_value_range_and_power() -> None:
    rng = np.random.default_rng(2)
    ref = rng.normal(size=(200, 4))
    same = mmd(
        ref, rng.normal(size=(150, 4)), n_permutations=199, seed=3, thresholds={"alpha": 0.01}
    )
    moved = mmd(
        ref,
        rng.normal(0.4, 1, size=(150, 4)),
        n_permutations=199,
        seed=3,
        thresholds={"alpha": 0.01},
    )
    assert 1 / 200 <= same.p_value <= 1.0  # type: ignore[operator]
    assert same.p_value > 0.01  # type: ignore[operator]
    assert moved.p_value == pytest.approx(1 / 200)
    assert mmd(ref, rng.normal(0.4, 1, size=(150, 4)), seed=3).status == "alert"
    assert moved.status == "alert"  # default thresholds: auto 0.001, enough permutations


def test_null_p_values_are_roughly_uniform() -> None:
    rng = np.random.default_rng(4)
    ps = [
        mmd(
            rng.normal(size=(40, 2)),
            rng.normal(size=(40, 2)),
            n_permutations=99,
            seed=i,
            thresholds=ALPHA,
        ).p_value
        for i in range(60)
    ]
    share = np.mean(np.array(ps) <= 0.1)
    assert 0.0 < share < 0.25


def test_subsampling_cap_and_determinism() -> None:
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(3000, 2)), rng.normal(size=(2000, 2))
    a = mmd(x, y, max_samples=100, n_permutations=20, seed=9, thresholds={"alpha": 0.1})
    b = mmd(x, y, max_samples=100, n_permutations=20, seed=9, thresholds={"alpha": 0.1})
    assert a == b
    assert a.window_count == 2000 and a.baseline_count == 3000


def test_mmd_through_baseline_on_raw_values() -> None:
    rng = np.random.default_rng(6)
    base = Baseline.from_values(rng.normal(size=2000), sample_size=300)
    assert base.compare(rng.normal(size=200), "mmd").status == "ok"
    assert base.compare(rng.normal(1.0, 1, size=200), "mmd").status == "alert"


def test_input_errors() -> None:
    with pytest.raises(ValueError, match="features"):
        mmd(np.zeros((10, 2)), np.zeros((10, 3)))
    with pytest.raises(ValueError, match="finite"):
        mmd(np.array([1.0, np.nan, 2.0]), np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="n_permutations"):
        mmd(np.zeros((10, 2)), np.ones((10, 2)), n_permutations=99, thresholds={"alpha": 0.001})
    with pytest.raises(ValueError, match="reference"):
        KernelMMD(np.zeros((1, 2)))
