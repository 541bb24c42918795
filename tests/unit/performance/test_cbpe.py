"""CBPE: isotonic calibration against scikit-learn; estimates close to realized, synthetic data."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.isotonic import IsotonicRegression

from driftline.performance import BinaryLayout, MulticlassLayout, fold
from driftline.performance.cbpe import (
    BinaryEstimator,
    Calibrator,
    MulticlassEstimator,
    isotonic_fit,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("seed", range(10))
def test_isotonic_matches_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 500))
    x = np.round(rng.uniform(0, 1, n), 2)  # ties
    y = (rng.uniform(size=n) < x**2).astype(float)
    cal = Calibrator.fit(x, y)
    ref = IsotonicRegression(out_of_bounds="clip").fit(x, y)
    grid = np.linspace(-0.5, 1.5, 301)
    np.testing.assert_allclose(cal(grid), ref.predict(grid), atol=1e-12)


def test_isotonic_refuses_empty_input() -> None:
    with pytest.raises(ValueError, match="no finite"):
        isotonic_fit(np.array([np.nan]), np.array([1.0]))


def realized(scores: np.ndarray, y: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    lay = BinaryLayout(threshold=threshold)
    i, w = lay.label_entries(scores, y, np.zeros(len(y)))
    return lay.metrics(fold(np.zeros(len(y)), i, w, lay.size)[1][0])


def estimated(est: BinaryEstimator, scores: np.ndarray, buckets: int = 1) -> dict[str, float]:
    rng = np.random.default_rng(1)
    i, w = est.entries(scores)
    per = fold(rng.integers(0, buckets, len(scores)), i, w, est.size)[1]
    return est.metrics(per.sum(axis=0))


def test_estimate_close_to_realized_for_calibrated_scores() -> None:
    rng = np.random.default_rng(11)
    s = rng.beta(2, 5, 50_000)
    y = (rng.uniform(size=s.size) < s).astype(float)
    got = estimated(BinaryEstimator(threshold=0.3), s, buckets=12)
    want = realized(s, y, threshold=0.3)
    for k in ("accuracy", "precision", "recall", "specificity", "f1"):
        assert abs(got[k] - want[k]) < 0.015, (k, got[k], want[k])


def test_fitted_calibrator_fixes_miscalibrated_scores_under_covariate_shift() -> None:
    rng = np.random.default_rng(5)
    # the model's score is p**3 of the true probability p: monotone, not calibrated
    p_ref = rng.uniform(0, 1, 40_000)
    y_ref = (rng.uniform(size=p_ref.size) < p_ref).astype(float)
    cal = Calibrator.fit(p_ref**3, y_ref)
    # covariate shift: the monitored window holds more high-probability rows
    p = rng.beta(5, 2, 30_000)
    y = (rng.uniform(size=p.size) < p).astype(float)
    score = p**3
    want = realized(score, y, threshold=0.2)
    fitted = estimated(BinaryEstimator(threshold=0.2, calibrator=cal), score)
    raw = estimated(BinaryEstimator(threshold=0.2), score)
    assert abs(fitted["accuracy"] - want["accuracy"]) < 0.015
    assert abs(raw["accuracy"] - want["accuracy"]) > 0.1  # without calibration it is far off


def test_empty_window_estimate_is_nan() -> None:
    est = BinaryEstimator()
    m = est.metrics(np.zeros(est.size))
    assert all(np.isnan(v) for v in m.values())


def test_multiclass_estimate_close_to_realized() -> None:
    rng = np.random.default_rng(2)
    k = 4
    probs = rng.dirichlet(np.full(k, 0.7), 40_000)
    y = np.array([rng.choice(k, p=row) for row in probs[:2000]])
    ref = MulticlassEstimator.fit(probs[:2000], y)
    live = probs[2000:]
    y_live = (rng.uniform(size=(len(live), 1)) > np.cumsum(live, axis=1)).sum(axis=1)
    y_live = np.minimum(y_live, k - 1)
    lay = MulticlassLayout(classes=k)
    pred = np.argmax(live, axis=1).astype(float)
    i, w = lay.label_entries(pred, y_live.astype(float), np.zeros(len(live)))
    want = lay.metrics(fold(np.zeros(len(live)), i, w, lay.size)[1][0])
    for est in (ref, MulticlassEstimator(classes=k)):
        i, w = est.entries(live)
        got = est.metrics(fold(np.zeros(len(live)), i, w, est.size)[1][0])
        assert abs(got["accuracy"] - want["accuracy"]) < 0.02
        assert abs(got["macro_f1"] - want["macro_f1"]) < 0.03


def test_multiclass_checks_the_shape() -> None:
    with pytest.raises(ValueError, match=r"expected shape \(n, 3\)"):
        MulticlassEstimator(classes=3).entries(np.zeros((2, 2)))
