"""Realized model performance from mergeable sufficient statistics.

Every window bucket holds one float vector of statistics (counts, score histograms on fixed
edges, sums); a window is the sum of its buckets, a revised label subtracts its old
contribution and adds the new one, so buckets add and subtract exactly like the monitor's
counters (DESIGN §6). A :class:`Layout` says where each statistic lives in the vector, turns
joined (prediction, label) pairs into sparse contributions and reads metrics off a summed
vector.

Undefined values are ``nan`` (``null`` in JSON), never a warning: a precision with no
positive prediction, an accuracy with no label, a ROC AUC of a window holding one class only.
Macro and weighted averages leave classes whose value is undefined out, as scikit-learn's
``zero_division=np.nan`` does.

Statistics common to every task (vector positions 0..):

* ``predictions`` — predictions in the bucket (labelled or not),
* ``labeled`` — predictions joined to a label,
* ``delay[i]`` — label delays on :data:`DELAY_EDGES_MS` (label time − prediction time,
  a label before its prediction counts as delay 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "DELAY_EDGES_MS",
    "ESTIMATED_NAMES",
    "METRIC_NAMES",
    "BinaryLayout",
    "Layout",
    "MulticlassLayout",
    "RegressionLayout",
    "auc_bound",
    "fold",
    "layout_for",
]

Task = Literal["binary", "multiclass", "regression"]

#: Upper edges of the label-delay histogram (ms): 1 s, 10 s, 1 min, 10 min, 1 h, 6 h, 1 d, 3 d,
#: 7 d, then everything longer. Delay quantiles are reported as the upper edge of their bin
#: (``inf`` for the last), so they are upper bounds.
DELAY_EDGES_MS: tuple[int, ...] = (
    1_000,
    10_000,
    60_000,
    600_000,
    3_600_000,
    21_600_000,
    86_400_000,
    259_200_000,
    604_800_000,
)
_N_DELAY = len(DELAY_EDGES_MS) + 1
_PRED, _LAB, _DELAY0 = 0, 1, 2
_COMMON = 2 + _N_DELAY
#: Probabilities are clipped to [eps, 1 - eps] for the log loss, as scikit-learn does.
_EPS = float(np.finfo(np.float64).eps)


def _div(a: float, b: float) -> float:
    return a / b if b else math.nan


def _delay_bins(delay_ms: NDArray[np.float64]) -> NDArray[np.int64]:
    d = np.maximum(np.asarray(delay_ms, dtype=np.float64), 0.0)
    return np.searchsorted(np.asarray(DELAY_EDGES_MS, dtype=np.float64), d, side="left").astype(
        np.int64
    )


def fold(
    buckets: NDArray[np.int64], idx: NDArray[np.int64], w: NDArray[np.float64], size: int
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Sum sparse contributions per bucket: ``(unique bucket starts, stats[bucket, size])``.

    ``idx`` and ``w`` are ``(n, k)``: event ``i`` adds ``w[i, j]`` at position ``idx[i, j]``
    of its bucket's vector.

    >>> b, s = fold(np.array([0, 5, 0]), np.array([[0], [1], [1]]), np.ones((3, 1)), 2)
    >>> b.tolist(), s.tolist()
    ([0, 5], [[1.0, 1.0], [0.0, 1.0]])
    """
    ub, inv = np.unique(np.asarray(buckets, dtype=np.int64), return_inverse=True)
    idx = np.asarray(idx, dtype=np.int64)
    flat = (inv.astype(np.int64)[:, None] * size + idx).ravel()
    weights = np.asarray(w, dtype=np.float64).ravel()
    stats = np.bincount(flat, weights=weights, minlength=ub.size * size).astype(np.float64)
    return ub, stats.reshape(ub.size, size)


def _quantile_upper(hist: NDArray[np.float64], q: float) -> float:
    total = float(hist.sum())
    if total <= 0:
        return math.nan
    pos = int(np.searchsorted(np.cumsum(hist), q * total - 1e-9, side="left"))
    return float(DELAY_EDGES_MS[pos]) if pos < len(DELAY_EDGES_MS) else math.inf


@dataclass(frozen=True)
class Layout:
    """Where each statistic of a task lives in a bucket's vector; base of the task layouts."""

    task: Task = field(init=False)

    @property
    def size(self) -> int:
        """Length of a bucket's statistics vector."""
        raise NotImplementedError

    def zeros(self) -> NDArray[np.float64]:
        """An empty statistics vector."""
        return np.zeros(self.size, dtype=np.float64)

    def prediction_entries(
        self, prediction: NDArray[np.float64]
    ) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
        """Contribution of predictions on arrival (counted whether or not a label follows)."""
        n = len(prediction)
        return np.full((n, 1), _PRED, dtype=np.int64), np.ones((n, 1))

    def label_entries(
        self,
        prediction: NDArray[np.float64],
        label: NDArray[np.float64],
        delay_ms: NDArray[np.float64],
    ) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
        """Contribution of joined pairs; negate the weights to take a pair back out."""
        n = len(prediction)
        common = np.stack(
            [np.full(n, _LAB, dtype=np.int64), _DELAY0 + _delay_bins(delay_ms)], axis=1
        )
        idx, w = self._task_entries(
            np.asarray(prediction, dtype=np.float64), np.asarray(label, dtype=np.float64)
        )
        return np.concatenate([common, idx], axis=1), np.concatenate([np.ones((n, 2)), w], axis=1)

    def _task_entries(
        self, prediction: NDArray[np.float64], label: NDArray[np.float64]
    ) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
        raise NotImplementedError

    def valid_label(self, label: NDArray[np.float64]) -> NDArray[np.bool_]:
        """Which labels this task can score (finite; a known class for classification)."""
        return np.isfinite(np.asarray(label, dtype=np.float64))

    def metrics(self, stats: NDArray[np.float64]) -> dict[str, Any]:
        """Metrics of one summed statistics vector (a window)."""
        s = np.asarray(stats, dtype=np.float64)
        if s.shape != (self.size,):
            raise ValueError(f"stats: expected a vector of {self.size} values, got {s.shape}")
        preds, labeled = float(s[_PRED]), float(s[_LAB])
        delays = s[_DELAY0 : _DELAY0 + _N_DELAY]
        out: dict[str, Any] = {
            "predictions": round(preds),
            "labeled": round(labeled),
            "coverage": _div(labeled, preds),
            "label_delay_p50_ms": _quantile_upper(delays, 0.5),
            "label_delay_p90_ms": _quantile_upper(delays, 0.9),
            "label_delay_p99_ms": _quantile_upper(delays, 0.99),
        }
        out.update(self._task_metrics(s[_COMMON:]))
        return out

    def _task_metrics(self, s: NDArray[np.float64]) -> dict[str, Any]:
        raise NotImplementedError


@dataclass(frozen=True)
class BinaryLayout(Layout):
    """Binary classification on a score: positive when ``score >= threshold``.

    Labels are 0 or 1. The score histogram of each class uses ``bins`` equal bins on
    ``[lo, hi]`` (scores outside fall in the end bins). ROC AUC is computed from the two
    histograms with scores of one bin treated as tied; its distance to the exact AUC of the
    raw scores is at most :func:`auc_bound` (half the share of positive/negative pairs that
    share a bin), reported as ``roc_auc_bound``.

    >>> lay = BinaryLayout(threshold=0.5, bins=10)
    >>> idx, w = lay.label_entries(np.array([0.9, 0.2, 0.7]), np.array([1, 0, 0]), np.zeros(3))
    >>> m = lay.metrics(fold(np.zeros(3), idx, w, lay.size)[1][0])
    >>> m["tp"], m["fp"], m["tn"], m["fn"], round(m["precision"], 3), m["roc_auc"]
    (1, 1, 1, 0, 0.5, 1.0)
    """

    threshold: float = 0.5
    bins: int = 100
    lo: float = 0.0
    hi: float = 1.0
    task: Task = field(default="binary", init=False)

    def __post_init__(self) -> None:
        if self.bins < 1:
            raise ValueError(f"bins={self.bins}: must be at least 1")
        if not self.hi > self.lo:
            raise ValueError(f"lo={self.lo}, hi={self.hi}: hi must be greater than lo")

    # positions after the common block
    _TP, _FP, _TN, _FN, _LL = 0, 1, 2, 3, 4
    _HIST = 5

    @property
    def size(self) -> int:
        return _COMMON + self._HIST + 2 * self.bins

    def score_bin(self, score: NDArray[np.float64]) -> NDArray[np.int64]:
        """Histogram bin of each score (clipped into the end bins; NaN in the first)."""
        s = np.asarray(score, dtype=np.float64)
        b = np.floor((s - self.lo) / (self.hi - self.lo) * self.bins)
        b = np.where(np.isnan(b), 0, b)
        return np.clip(b, 0, self.bins - 1).astype(np.int64)

    def valid_label(self, label: NDArray[np.float64]) -> NDArray[np.bool_]:
        lab = np.asarray(label, dtype=np.float64)
        return (lab == 0) | (lab == 1)

    def _task_entries(
        self, prediction: NDArray[np.float64], label: NDArray[np.float64]
    ) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
        pos_pred = prediction >= self.threshold
        y = label == 1
        cell = np.where(
            pos_pred, np.where(y, self._TP, self._FP), np.where(y, self._FN, self._TN)
        ).astype(np.int64)
        p = np.clip(np.where(np.isnan(prediction), 0.5, prediction), _EPS, 1 - _EPS)
        loss = -np.where(y, np.log(p), np.log1p(-p))
        hist = self._HIST + np.where(y, 0, self.bins) + self.score_bin(prediction)
        idx = _COMMON + np.stack([cell, np.full_like(cell, self._LL), hist], axis=1)
        w = np.stack([np.ones_like(loss), loss, np.ones_like(loss)], axis=1)
        return idx, w

    def _task_metrics(self, s: NDArray[np.float64]) -> dict[str, Any]:
        tp, fp, tn, fn = (float(x) for x in s[: self._LL])
        n = tp + fp + tn + fn
        precision = _div(tp, tp + fp)
        recall = _div(tp, tp + fn)
        pos = s[self._HIST : self._HIST + self.bins]
        neg = s[self._HIST + self.bins : self._HIST + 2 * self.bins]
        return {
            "tp": round(tp),
            "fp": round(fp),
            "tn": round(tn),
            "fn": round(fn),
            "accuracy": _div(tp + tn, n),
            "precision": precision,
            "recall": recall,
            "specificity": _div(tn, tn + fp),
            "f1": _div(2 * tp, 2 * tp + fp + fn),
            "roc_auc": _binned_auc(pos, neg),
            "roc_auc_bound": auc_bound(pos, neg),
            "log_loss": _div(float(s[self._LL]), n),
        }


def _binned_auc(pos: NDArray[np.float64], neg: NDArray[np.float64]) -> float:
    """P(score+ > score-) + ½ P(same bin), from per-bin counts in increasing score order."""
    p, q = float(pos.sum()), float(neg.sum())
    if p <= 0 or q <= 0:
        return math.nan
    below = np.cumsum(neg) - neg
    return float((pos * (below + 0.5 * neg)).sum() / (p * q))


def auc_bound(pos: NDArray[np.float64], neg: NDArray[np.float64]) -> float:
    """Largest possible |binned AUC − exact AUC|: half the share of pairs sharing a bin.

    Pairs in different bins are ordered the same way by their bins and by their scores; a
    pair inside one bin counts ½ binned and 0, ½ or 1 exactly.

    >>> auc_bound(np.array([1.0, 1.0]), np.array([1.0, 1.0]))
    0.25
    """
    p, q = float(np.sum(pos)), float(np.sum(neg))
    if p <= 0 or q <= 0:
        return math.nan
    return float(0.5 * np.dot(pos, neg) / (p * q))


@dataclass(frozen=True)
class MulticlassLayout(Layout):
    """Multiclass classification: a confusion matrix over ``classes`` classes (0..K-1).

    The prediction is the predicted class index (the argmax of probabilities, taken before
    the join so a prediction keeps one number). ``names`` optionally names the classes in
    the per-class breakdown.

    >>> lay = MulticlassLayout(classes=3)
    >>> idx, w = lay.label_entries(np.array([0, 1, 2, 2]), np.array([0, 1, 1, 2]), np.zeros(4))
    >>> m = lay.metrics(fold(np.zeros(4), idx, w, lay.size)[1][0])
    >>> m["accuracy"], m["per_class"]["1"]["recall"]
    (0.75, 0.5)
    """

    classes: int = 2
    names: tuple[str, ...] = ()
    task: Task = field(default="multiclass", init=False)

    def __post_init__(self) -> None:
        if self.classes < 2:
            raise ValueError(f"classes={self.classes}: a multiclass task needs at least 2")
        if self.names and len(self.names) != self.classes:
            raise ValueError(f"names: {len(self.names)} names for {self.classes} classes")

    @property
    def size(self) -> int:
        return _COMMON + self.classes * self.classes

    def valid_label(self, label: NDArray[np.float64]) -> NDArray[np.bool_]:
        lab = np.asarray(label, dtype=np.float64)
        with np.errstate(invalid="ignore"):
            return np.isfinite(lab) & (lab == np.round(lab)) & (lab >= 0) & (lab < self.classes)

    def _task_entries(
        self, prediction: NDArray[np.float64], label: NDArray[np.float64]
    ) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
        k = self.classes
        pred = np.clip(np.nan_to_num(prediction, nan=0.0), 0, k - 1).astype(np.int64)
        idx = _COMMON + label.astype(np.int64) * k + pred
        return idx[:, None], np.ones((len(idx), 1))

    def _task_metrics(self, s: NDArray[np.float64]) -> dict[str, Any]:
        k = self.classes
        cm = s.reshape(k, k)  # rows: true class, columns: predicted class
        tp = np.diag(cm)
        support = cm.sum(axis=1)
        predicted = cm.sum(axis=0)
        n = float(cm.sum())
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = np.where(predicted > 0, tp / np.where(predicted > 0, predicted, 1), np.nan)
            recall = np.where(support > 0, tp / np.where(support > 0, support, 1), np.nan)
            den = support + predicted
            f1 = np.where(den > 0, 2 * tp / np.where(den > 0, den, 1), np.nan)
        names = self.names or tuple(str(i) for i in range(k))
        out: dict[str, Any] = {"accuracy": _div(float(tp.sum()), n)}
        for metric, values in (("precision", precision), ("recall", recall), ("f1", f1)):
            out[f"macro_{metric}"] = _nanmean(values, None)
            out[f"weighted_{metric}"] = _nanmean(values, support)
        out["per_class"] = {
            names[i]: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": round(float(support[i])),
            }
            for i in range(k)
        }
        return out


def _nanmean(values: NDArray[np.float64], weights: NDArray[np.float64] | None) -> float:
    ok = ~np.isnan(values)
    if weights is None:
        return float(values[ok].mean()) if ok.any() else math.nan
    w = weights[ok]
    total = float(w.sum())
    return float((values[ok] * w).sum() / total) if total > 0 else math.nan


@dataclass(frozen=True)
class RegressionLayout(Layout):
    """Regression: sums of errors, absolute errors, squared errors and of the labels.

    ``r2`` follows scikit-learn: 1 when labels are constant and predicted exactly, 0 when
    they are constant and not, ``nan`` with fewer than two labels. ``mape`` divides by
    ``max(|label|, eps)`` as scikit-learn does; ``bias`` is mean(prediction − label).

    >>> lay = RegressionLayout()
    >>> idx, w = lay.label_entries(np.array([1.0, 2.0]), np.array([1.0, 4.0]), np.zeros(2))
    >>> m = lay.metrics(fold(np.zeros(2), idx, w, lay.size)[1][0])
    >>> m["mae"], m["rmse"], m["bias"]
    (1.0, 1.414..., -1.0)
    """

    task: Task = field(default="regression", init=False)
    _N, _ERR, _ABS, _SQ, _APE, _Y, _Y2 = range(7)

    @property
    def size(self) -> int:
        return _COMMON + 7

    def _task_entries(
        self, prediction: NDArray[np.float64], label: NDArray[np.float64]
    ) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
        err = prediction - label
        ape = np.abs(err) / np.maximum(np.abs(label), _EPS)
        w = np.stack(
            [np.ones_like(err), err, np.abs(err), err * err, ape, label, label * label], axis=1
        )
        idx = np.broadcast_to(_COMMON + np.arange(7, dtype=np.int64), w.shape).copy()
        return idx, w

    def _task_metrics(self, s: NDArray[np.float64]) -> dict[str, Any]:
        n, err, ab, sq, ape, y, y2 = (float(x) for x in s[:7])
        r2 = math.nan
        if n >= 2:
            ss_tot = max(y2 - y * y / n, 0.0)
            # a total sum of squares at rounding-noise level is a constant label
            if ss_tot <= 1e-12 * max(y2, 1.0):
                r2 = 1.0 if sq <= 1e-12 * max(y2, 1.0) else 0.0
            else:
                r2 = 1.0 - sq / ss_tot
        return {
            "mae": _div(ab, n),
            "rmse": math.sqrt(sq / n) if n else math.nan,
            "mape": _div(ape, n),
            "r2": r2,
            "bias": _div(err, n),
        }


#: Scalar metrics each task reports (alerts may use any of them).
METRIC_NAMES: dict[str, tuple[str, ...]] = {
    "common": (
        "predictions",
        "labeled",
        "coverage",
        "label_delay_p50_ms",
        "label_delay_p90_ms",
        "label_delay_p99_ms",
    ),
    "binary": (
        "tp",
        "fp",
        "tn",
        "fn",
        "accuracy",
        "precision",
        "recall",
        "specificity",
        "f1",
        "roc_auc",
        "roc_auc_bound",
        "log_loss",
    ),
    "multiclass": (
        "accuracy",
        "macro_precision",
        "macro_recall",
        "macro_f1",
        "weighted_precision",
        "weighted_recall",
        "weighted_f1",
    ),
    "regression": ("mae", "rmse", "mape", "r2", "bias"),
}
#: What the CBPE estimate reports per task.
ESTIMATED_NAMES: dict[str, tuple[str, ...]] = {
    "binary": ("accuracy", "precision", "recall", "specificity", "f1"),
    "multiclass": METRIC_NAMES["multiclass"],
}


def layout_for(task: Task, **options: Any) -> Layout:
    """The layout of a task: ``binary`` (threshold, bins, lo, hi), ``multiclass`` (classes,
    names) or ``regression``.

    >>> layout_for("regression").size
    19
    """
    if task == "binary":
        return BinaryLayout(**options)
    if task == "multiclass":
        return MulticlassLayout(**options)
    if task == "regression":
        return RegressionLayout(**options)
    raise ValueError(f"task={task!r}: use binary, multiclass or regression")
