"""Performance metrics from bucket statistics against scikit-learn on random joined data."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from driftline.performance import (
    DELAY_EDGES_MS,
    BinaryLayout,
    Layout,
    MulticlassLayout,
    RegressionLayout,
    fold,
)

pytestmark = pytest.mark.unit

SEEDS = range(25)


def window(
    lay: Layout, pred: np.ndarray, label: np.ndarray, delay: np.ndarray | None = None
) -> np.ndarray:
    """Statistics of one window built from random buckets, summed (as the join does)."""
    rng = np.random.default_rng(len(pred))
    n = len(pred)
    delay = np.zeros(n) if delay is None else delay
    buckets = rng.integers(0, 5, n) * 1000
    pi, pw = lay.prediction_entries(pred)
    li, lw = lay.label_entries(pred, label, delay)
    _, s1 = fold(buckets, pi, pw, lay.size)
    _, s2 = fold(buckets, li, lw, lay.size)
    return s1.sum(axis=0) + s2.sum(axis=0)


def close(a: float, b: float, tol: float = 1e-9) -> bool:
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= tol * max(1.0, abs(b))


# -- binary ---------------------------------------------------------------------------------


def binary_case(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 400))
    kind = seed % 5
    y = rng.integers(0, 2, n)
    if kind == 1:
        y = np.ones(n, dtype=int)  # all one class
    elif kind == 2:
        y = np.zeros(n, dtype=int)
    score = np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0, 1)
    if kind == 3:
        score = rng.uniform(0, 0.4, n)  # nothing predicted positive
    return score, y


@pytest.mark.parametrize("seed", SEEDS)
def test_binary_matches_sklearn(seed: int) -> None:
    score, y = binary_case(seed)
    lay = BinaryLayout(threshold=0.5, bins=200)
    m = lay.metrics(window(lay, score, y))
    yhat = (score >= 0.5).astype(int)
    tn, fp, fn, tp = skm.confusion_matrix(y, yhat, labels=[0, 1]).ravel()
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (tp, fp, tn, fn)
    assert m["predictions"] == m["labeled"] == len(y)
    assert m["coverage"] == 1.0
    assert close(m["accuracy"], skm.accuracy_score(y, yhat))
    nan = np.nan
    p, r, f, _ = skm.precision_recall_fscore_support(
        y, yhat, labels=[1], average=None, zero_division=nan
    )
    assert close(m["precision"], float(p[0]))
    assert close(m["recall"], float(r[0]))
    assert close(m["f1"], float(f[0]))
    spec = skm.recall_score(1 - y, 1 - yhat, zero_division=nan)
    assert close(m["specificity"], float(spec))
    assert close(m["log_loss"], skm.log_loss(y, score, labels=[0, 1]), 1e-9)
    if 0 < y.sum() < len(y):
        exact = skm.roc_auc_score(y, score)
        assert abs(m["roc_auc"] - exact) <= m["roc_auc_bound"] + 1e-12
        # and the binned value is the exact AUC of the binned scores
        assert close(m["roc_auc"], skm.roc_auc_score(y, lay.score_bin(score)))
    else:
        assert math.isnan(m["roc_auc"]) and math.isnan(m["roc_auc_bound"])


def test_binary_auc_bound_is_small_for_fine_bins() -> None:
    score, y = binary_case(5)
    lay = BinaryLayout(bins=1000)
    m = lay.metrics(window(lay, score, y))
    assert m["roc_auc_bound"] < 0.01
    assert abs(m["roc_auc"] - skm.roc_auc_score(y, score)) <= m["roc_auc_bound"]


def test_binary_empty_window_is_all_nan_and_zero_counts() -> None:
    lay = BinaryLayout()
    m = lay.metrics(lay.zeros())
    assert (m["predictions"], m["labeled"], m["tp"], m["fn"]) == (0, 0, 0, 0)
    for k in ("coverage", "accuracy", "precision", "recall", "f1", "roc_auc", "log_loss"):
        assert math.isnan(m[k]), k


def test_scores_outside_the_range_and_nan_fall_in_end_bins() -> None:
    lay = BinaryLayout(bins=10)
    assert lay.score_bin(np.array([-3.0, 0.0, 0.999, 1.0, 7.0, np.nan])).tolist() == [
        0,
        0,
        9,
        9,
        9,
        0,
    ]


def test_binary_valid_labels() -> None:
    lay = BinaryLayout()
    assert lay.valid_label(np.array([0, 1, 2, np.nan, 0.5])).tolist() == [
        True,
        True,
        False,
        False,
        False,
    ]


# -- add and subtract -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "lay", [BinaryLayout(bins=20), MulticlassLayout(classes=4), RegressionLayout()]
)
def test_statistics_add_and_subtract(lay: Layout) -> None:
    rng = np.random.default_rng(3)
    n = 300
    if isinstance(lay, MulticlassLayout):
        pred = rng.integers(0, 4, n).astype(float)
        old, new = rng.integers(0, 4, n).astype(float), rng.integers(0, 4, n).astype(float)
    elif isinstance(lay, BinaryLayout):
        pred = rng.uniform(0, 1, n)
        old, new = rng.integers(0, 2, n).astype(float), rng.integers(0, 2, n).astype(float)
    else:
        pred = rng.normal(size=n)
        old, new = rng.normal(size=n), rng.normal(size=n)
    delay = rng.uniform(0, 1e8, n)
    # labels revised: old pairs taken out, new ones put in, equals new alone
    i, w = lay.label_entries(pred, old, delay)
    j, v = lay.label_entries(pred, new, delay)
    both = np.concatenate([i, j]), np.concatenate([-w, v])
    revised = fold(np.zeros(2 * n), *both, lay.size)[1][0] + fold(np.zeros(n), i, w, lay.size)[1][0]
    direct = fold(np.zeros(n), j, v, lay.size)[1][0]
    np.testing.assert_allclose(revised, direct, atol=1e-8)
    # a window is the sum of its buckets
    buckets = rng.integers(0, 7, n)
    per = fold(buckets, j, v, lay.size)[1].sum(axis=0)
    np.testing.assert_allclose(per, direct, rtol=1e-12, atol=1e-9)


# -- multiclass -----------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_multiclass_matches_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    k = int(rng.integers(3, 7))
    n = int(rng.integers(1, 300))
    y = rng.integers(0, k, n)
    if seed % 4 == 1:
        y = np.full(n, int(rng.integers(0, k)))  # all one class
    if seed % 4 == 2:
        y[y == 0] = 1  # an empty class
    pred = np.where(rng.uniform(size=n) < 0.6, y, rng.integers(0, k, n))
    lay = MulticlassLayout(classes=k)
    m = lay.metrics(window(lay, pred.astype(float), y.astype(float)))
    labels = list(range(k))
    nan = np.nan
    assert close(m["accuracy"], skm.accuracy_score(y, pred))
    for avg in ("macro", "weighted"):
        p, r, f, _ = skm.precision_recall_fscore_support(
            y, pred, labels=labels, average=avg, zero_division=nan
        )
        assert close(m[f"{avg}_precision"], float(p)), avg
        assert close(m[f"{avg}_recall"], float(r)), avg
        assert close(m[f"{avg}_f1"], float(f)), avg
    p, r, f, s = skm.precision_recall_fscore_support(
        y, pred, labels=labels, average=None, zero_division=nan
    )
    for c in range(k):
        got = m["per_class"][str(c)]
        assert close(got["precision"], float(p[c]))
        assert close(got["recall"], float(r[c]))
        assert close(got["f1"], float(f[c]))
        assert got["support"] == s[c]


def test_multiclass_names_and_invalid_labels() -> None:
    lay = MulticlassLayout(classes=3, names=("cat", "dog", "eel"))
    assert lay.valid_label(np.array([0, 2, 3, -1, 1.5, np.nan])).tolist() == [
        True,
        True,
        False,
        False,
        False,
        False,
    ]
    m = lay.metrics(window(lay, np.array([0.0, 1.0]), np.array([0.0, 0.0])))
    assert set(m["per_class"]) == {"cat", "dog", "eel"}
    assert m["per_class"]["cat"]["support"] == 2
    assert math.isnan(m["per_class"]["eel"]["precision"])


# -- regression -----------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_regression_matches_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 500))
    y = rng.normal(10, 3, n)
    if seed % 5 == 1:
        y[: n // 3] = 0.0  # zero labels: mape's eps
    pred = y + rng.normal(0.5, 1, n)
    lay = RegressionLayout()
    m = lay.metrics(window(lay, pred, y))
    assert close(m["mae"], skm.mean_absolute_error(y, pred))
    assert close(m["rmse"], math.sqrt(skm.mean_squared_error(y, pred)))
    assert close(m["mape"], skm.mean_absolute_percentage_error(y, pred), 1e-9)
    assert close(m["r2"], skm.r2_score(y, pred), 1e-7)
    assert close(m["bias"], float(np.mean(pred - y)))


def test_regression_constant_labels_follow_sklearn() -> None:
    lay = RegressionLayout()
    y = np.full(10, 3.0)
    assert lay.metrics(window(lay, y.copy(), y))["r2"] == skm.r2_score(y, y) == 1.0
    assert lay.metrics(window(lay, y + 1, y))["r2"] == skm.r2_score(y, y + 1) == 0.0
    assert math.isnan(lay.metrics(window(lay, y[:1], y[:1]))["r2"])


# -- common ---------------------------------------------------------------------------------


def test_coverage_and_delay_quantiles() -> None:
    lay = RegressionLayout()
    pred = np.arange(10.0)
    pi, pw = lay.prediction_entries(pred)
    delays = np.array([0, 500, 5_000, 5_000, 5_000, 30_000, 30_000, 7_200_000, -100.0])
    li, lw = lay.label_entries(pred[:9], pred[:9], delays)
    stats = fold(np.zeros(10), pi, pw, lay.size)[1][0] + fold(np.zeros(9), li, lw, lay.size)[1][0]
    m = lay.metrics(stats)
    assert (m["predictions"], m["labeled"]) == (10, 9)
    assert m["coverage"] == 0.9
    # sorted delays: 0,0,500 | 5k x3 | 30k x2 | 7.2M  -> p50 is the 5th (5 s, bin <= 10 s)
    assert m["label_delay_p50_ms"] == DELAY_EDGES_MS[1]
    assert m["label_delay_p90_ms"] == DELAY_EDGES_MS[5]
    assert m["label_delay_p99_ms"] == DELAY_EDGES_MS[5]
    assert lay.metrics(np.concatenate([[1e6], np.zeros(lay.size - 1)]))["label_delay_p50_ms"] != 0


def test_metrics_checks_the_vector_length() -> None:
    with pytest.raises(ValueError, match="expected a vector of"):
        BinaryLayout().metrics(np.zeros(3))
