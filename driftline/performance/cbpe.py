"""Confidence-based performance estimation (CBPE): expected metrics of a window without labels.

The idea is NannyML's: when a classifier's scores are calibrated probabilities, a prediction
of class 1 with probability ``p`` is a true positive with probability ``p`` and a false
positive with probability ``1 - p``; summing these over a window gives the expected confusion
matrix, and expected accuracy, precision, recall and F1 follow from it. Scores that are not
calibrated are first mapped through an isotonic calibrator fitted on a labelled reference
(pool-adjacent-violators, linear interpolation between block centres, flat outside the
reference range, as scikit-learn's ``IsotonicRegression(out_of_bounds="clip")`` does).

Here it runs live and windowed: each prediction adds its expected counts to its bucket's
vector at arrival, so the estimate of a window is ready when it closes, before any label,
and buckets add and subtract like the realized statistics.

Estimates are point estimates; they hold while the score-to-outcome relation of the
reference holds (covariate shift, not concept shift), as in NannyML's assumptions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from driftline.performance.metrics import MulticlassLayout

__all__ = ["BinaryEstimator", "Calibrator", "MulticlassEstimator", "isotonic_fit"]


def isotonic_fit(
    x: NDArray[np.float64], y: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Non-decreasing least-squares fit of ``y`` on ``x`` (pool adjacent violators).

    Returns the knots ``(xs, ys)`` of the fitted step function: one knot per distinct ``x``
    at the mean fitted value, ready for ``np.interp``.

    >>> xs, ys = isotonic_fit(np.array([0.1, 0.2, 0.3, 0.4]), np.array([0.0, 1.0, 0.0, 1.0]))
    >>> xs.tolist(), ys.tolist()
    ([0.1, 0.2, 0.3, 0.4], [0.0, 0.5, 0.5, 1.0])
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if x.size == 0:
        raise ValueError("isotonic_fit: no finite (score, label) pair to fit")
    ux, inv = np.unique(x, return_inverse=True)
    w = np.bincount(inv).astype(np.float64)
    s = np.bincount(inv, weights=y)
    # blocks as a stack of (sum, weight, count of distinct x)
    sums: list[float] = []
    weights: list[float] = []
    sizes: list[int] = []
    for si, wi in zip(s.tolist(), w.tolist(), strict=True):
        sums.append(si)
        weights.append(wi)
        sizes.append(1)
        while len(sums) > 1 and sums[-2] / weights[-2] > sums[-1] / weights[-1]:
            sl, wl, nl = sums.pop(), weights.pop(), sizes.pop()
            sums[-1] += sl
            weights[-1] += wl
            sizes[-1] += nl
    ys = np.repeat(np.array(sums) / np.array(weights), sizes)
    return ux, ys


@dataclass(frozen=True)
class Calibrator:
    """Maps raw scores to calibrated probabilities; identity when built without knots.

    >>> c = Calibrator.fit(np.array([0.2, 0.4, 0.6, 0.8]), np.array([0, 0, 1, 1]))
    >>> c(np.array([0.1, 0.5, 0.9])).tolist()
    [0.0, 0.5, 1.0]
    >>> Calibrator.from_dict(c.to_dict()) == c
    True
    """

    xs: tuple[float, ...] = ()
    ys: tuple[float, ...] = ()

    @classmethod
    def fit(cls, scores: NDArray[np.float64], labels: NDArray[np.float64]) -> Calibrator:
        """Fit on a labelled reference (labels 0/1, or 1 where the class is the true one)."""
        xs, ys = isotonic_fit(scores, labels)
        return cls(tuple(xs.tolist()), tuple(ys.tolist()))

    def __call__(self, scores: NDArray[np.float64]) -> NDArray[np.float64]:
        s = np.asarray(scores, dtype=np.float64)
        if not self.xs:
            return np.clip(np.nan_to_num(s, nan=0.0), 0.0, 1.0)
        return np.interp(np.nan_to_num(s, nan=self.xs[0]), self.xs, self.ys)

    def to_dict(self) -> dict[str, list[float]]:
        """JSON form (stored with the pipeline's performance state)."""
        return {"x": list(self.xs), "y": list(self.ys)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Calibrator:
        return cls(tuple(float(v) for v in d["x"]), tuple(float(v) for v in d["y"]))


def _div(a: float, b: float) -> float:
    return a / b if b else math.nan


@dataclass(frozen=True)
class BinaryEstimator:
    """Expected confusion counts of binary predictions: ``[n, tp, fp, tn, fn]`` per bucket.

    >>> from driftline.performance.metrics import fold
    >>> est = BinaryEstimator(threshold=0.5)
    >>> i, w = est.entries(np.array([0.9, 0.2]))
    >>> m = est.metrics(fold(np.zeros(2), i, w, est.size)[1][0])
    >>> round(m["accuracy"], 3), round(m["precision"], 3)
    (0.85, 0.9)
    """

    threshold: float = 0.5
    calibrator: Calibrator = Calibrator()
    size: int = 5

    def entries(self, scores: NDArray[np.float64]) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
        """Sparse contributions of predictions at arrival (see :func:`metrics.fold`)."""
        s = np.asarray(scores, dtype=np.float64)
        p = self.calibrator(s)
        positive = s >= self.threshold
        n = len(s)
        idx = np.stack(
            [
                np.zeros(n, dtype=np.int64),
                np.where(positive, 1, 4),  # tp if predicted positive, else fn
                np.where(positive, 2, 3),  # fp if predicted positive, else tn
            ],
            axis=1,
        )
        w = np.stack([np.ones(n), p, 1.0 - p], axis=1)
        return idx, w

    def metrics(self, stats: NDArray[np.float64]) -> dict[str, float]:
        """Expected accuracy, precision, recall, specificity and F1 of summed statistics."""
        n, tp, fp, tn, fn = (float(v) for v in np.asarray(stats, dtype=np.float64)[:5])
        return {
            "accuracy": _div(tp + tn, n),
            "precision": _div(tp, tp + fp),
            "recall": _div(tp, tp + fn),
            "specificity": _div(tn, tn + fp),
            "f1": _div(2 * tp, 2 * tp + fp + fn),
        }


@dataclass(frozen=True)
class MulticlassEstimator:
    """Expected confusion matrix of multiclass predictions from class probabilities.

    Each class's probability is calibrated one-vs-rest and the row renormalised; the
    predicted class is the argmax of the raw probabilities, and a prediction adds its
    calibrated probability of each true class ``c`` to cell ``(c, predicted)``.

    >>> from driftline.performance.metrics import fold
    >>> est = MulticlassEstimator(classes=3)
    >>> i, w = est.entries(np.array([[0.8, 0.1, 0.1], [0.2, 0.2, 0.6]]))
    >>> m = est.metrics(fold(np.zeros(2), i, w, est.size)[1][0])
    >>> round(m["accuracy"], 3)
    0.7
    """

    classes: int = 3
    calibrators: tuple[Calibrator, ...] = ()

    @property
    def size(self) -> int:
        return self.classes * self.classes

    @classmethod
    def fit(
        cls, probabilities: NDArray[np.float64], labels: NDArray[np.int64]
    ) -> MulticlassEstimator:
        """One calibrator per class on a labelled reference."""
        p = np.asarray(probabilities, dtype=np.float64)
        y = np.asarray(labels)
        k = p.shape[1]
        cals = tuple(Calibrator.fit(p[:, c], (y == c).astype(float)) for c in range(k))
        return cls(classes=k, calibrators=cals)

    def entries(
        self, probabilities: NDArray[np.float64]
    ) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
        p = np.asarray(probabilities, dtype=np.float64)
        k = self.classes
        if p.ndim != 2 or p.shape[1] != k:
            raise ValueError(f"probabilities: expected shape (n, {k}), got {p.shape}")
        pred = np.argmax(np.nan_to_num(p, nan=-1.0), axis=1)
        if self.calibrators:
            cal = np.stack([c(p[:, j]) for j, c in enumerate(self.calibrators)], axis=1)
        else:
            cal = np.clip(np.nan_to_num(p, nan=0.0), 0.0, 1.0)
        total = cal.sum(axis=1, keepdims=True)
        cal = np.where(total > 0, cal / np.where(total > 0, total, 1.0), 1.0 / k)
        idx = np.arange(k, dtype=np.int64)[None, :] * k + pred[:, None]
        return idx, cal

    def metrics(self, stats: NDArray[np.float64]) -> dict[str, Any]:
        """Expected accuracy and macro/weighted precision, recall, F1."""
        lay = MulticlassLayout(classes=self.classes)
        out = lay._task_metrics(np.asarray(stats, dtype=np.float64))
        out.pop("per_class")
        return out
