"""Per-row outlier scores against a baseline: Mahalanobis distance and river's HalfSpaceTrees.

Both follow the detector contract (validated constructor, ``clone()``, picklable, seeded) and
return a frozen :class:`OutlierResult` with one score per row and the rows flagged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats

__all__ = ["HalfSpaceTrees", "Mahalanobis", "OutlierResult"]


@dataclass(frozen=True)
class OutlierResult:
    """Scores (higher = more unusual), the threshold applied and which rows exceed it.

    >>> OutlierResult((0.2, 3.5), 1.0, (False, True)).flags
    (False, True)
    """

    scores: tuple[float, ...]
    threshold: float
    flags: tuple[bool, ...]

    @property
    def count(self) -> int:
        """Rows flagged.

        >>> OutlierResult((0.2, 3.5, 4.0), 1.0, (False, True, True)).count
        2
        """
        return sum(self.flags)


def _rows(values: ArrayLike, name: str) -> NDArray[np.float64]:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise ValueError(f"{name}: expected a non-empty 1-D or 2-D array, got shape {arr.shape}")
    return arr


def _check_alpha(alpha: float) -> None:
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 < alpha < 1:
        raise ValueError(f"alpha: must be between 0 and 1 (exclusive), got {alpha!r}")


class Mahalanobis:
    """Squared Mahalanobis distance of each row from the baseline mean.

    Rows are flagged when the distance exceeds the chi-square (d degrees of freedom) quantile
    at ``1 - alpha``, the null distribution for roughly Gaussian features. A small ``ridge``
    keeps the covariance invertible with collinear features. NaN rows score NaN, unflagged.

    >>> rng = np.random.default_rng(0)
    >>> det = Mahalanobis(rng.normal(size=(2000, 3)))
    >>> det.score([[0.0, 0.0, 0.0], [6.0, 6.0, 6.0]]).flags
    (False, True)
    """

    def __init__(self, baseline: ArrayLike, alpha: float = 0.001, ridge: float = 1e-9):
        base = _rows(baseline, "baseline")
        base = base[~np.isnan(base).any(axis=1)]
        if base.shape[0] <= base.shape[1]:
            raise ValueError(
                f"baseline: need more rows than features ({base.shape[1]}), got {base.shape[0]}"
            )
        _check_alpha(alpha)
        if not (math.isfinite(ridge) and ridge >= 0):
            raise ValueError(f"ridge: must be a non-negative number, got {ridge!r}")
        self.baseline, self.alpha, self.ridge = base, float(alpha), float(ridge)
        self.mean = base.mean(axis=0)
        cov = np.atleast_2d(np.cov(base, rowvar=False))
        scale = float(np.trace(cov)) / cov.shape[0] or 1.0
        self.precision = np.linalg.pinv(cov + ridge * scale * np.eye(cov.shape[0]))
        self.threshold = float(stats.chi2.isf(alpha, base.shape[1]))

    def get_params(self) -> dict[str, Any]:
        """Constructor arguments (``baseline`` is the NaN-free baseline actually used).

        >>> det = Mahalanobis([[0.0, 1.0], [1.0, 0.0], [np.nan, 2.0], [2.0, 2.0]], alpha=0.01)
        >>> p = det.get_params()
        >>> p["baseline"].shape, p["alpha"], p["ridge"]
        ((3, 2), 0.01, 1e-09)
        """
        return {"baseline": self.baseline, "alpha": self.alpha, "ridge": self.ridge}

    def clone(self) -> Mahalanobis:
        """A new detector with the same parameters (refitted from the same baseline).

        >>> det = Mahalanobis(np.random.default_rng(0).normal(size=(200, 2)))
        >>> det.clone().score([[5.0, 5.0]]).scores == det.score([[5.0, 5.0]]).scores
        True
        """
        return Mahalanobis(**self.get_params())

    def score(self, rows: ArrayLike) -> OutlierResult:
        """Score rows (vectorized).

        >>> det = Mahalanobis(np.random.default_rng(0).normal(size=(200, 2)))
        >>> r = det.score([[0.0, 0.0], [5.0, 5.0], [np.nan, 0.0]])
        >>> [round(s, 2) for s in r.scores], round(r.threshold, 2), r.flags
        ([0.01, 48.65, nan], 13.82, (False, True, False))
        """
        x = _rows(rows, "rows")
        if x.shape[1] != self.mean.size:
            raise ValueError(f"rows: {x.shape[1]} features, the baseline has {self.mean.size}")
        d = x - self.mean
        scores = np.einsum("ij,jk,ik->i", d, self.precision, d)
        flags = np.nan_to_num(scores, nan=-np.inf) > self.threshold
        return OutlierResult(tuple(scores.tolist()), self.threshold, tuple(flags.tolist()))


class HalfSpaceTrees:
    """river's HalfSpaceTrees, fitted on the baseline, scoring rows without learning from them.

    Feature limits come from the baseline range (river expects features in known bounds);
    the threshold is the baseline's own ``1 - alpha`` score quantile, and a row outside the
    (5 % padded) baseline range scores 1, the maximum. river scores one row at
    a time (~0.1-1 ms each), so use it on samples, not on every event of a busy stream.

    >>> rng = np.random.default_rng(0)
    >>> det = HalfSpaceTrees(rng.uniform(size=(500, 2)), n_trees=5, height=6, seed=1)
    >>> det.score([[0.5, 0.5], [40.0, -30.0]]).flags
    (False, True)
    """

    def __init__(
        self,
        baseline: ArrayLike,
        n_trees: int = 10,
        height: int = 8,
        window_size: int = 250,
        alpha: float = 0.01,
        seed: int = 0,
    ):
        base = _rows(baseline, "baseline")
        base = base[~np.isnan(base).any(axis=1)]
        for name, value in (("n_trees", n_trees), ("height", height), ("window_size", window_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")
        if base.shape[0] < window_size:
            raise ValueError(
                f"baseline: need at least window_size ({window_size}) rows, got {base.shape[0]}"
            )
        _check_alpha(alpha)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed: expected an integer, got {seed!r}")
        self.baseline = base
        self.n_trees, self.height, self.window_size = n_trees, height, window_size
        self.alpha, self.seed = float(alpha), seed
        from river import anomaly

        lo, hi = base.min(axis=0), base.max(axis=0)
        pad = np.where(hi > lo, hi - lo, 1.0) * 0.05
        self._lo, self._hi = lo - pad, hi + pad
        limits: dict[Any, tuple[float, float]] = {
            i: (float(self._lo[i]), float(self._hi[i])) for i in range(base.shape[1])
        }
        self._model = anomaly.HalfSpaceTrees(
            n_trees=n_trees, height=height, window_size=window_size, limits=limits, seed=seed
        )
        for row in base.tolist():
            self._model.learn_one(dict(enumerate(row)))
        own = self._raw_scores(base)
        self.threshold = float(np.quantile(own, 1.0 - alpha, method="higher"))

    def get_params(self) -> dict[str, Any]:
        """Constructor arguments (``baseline`` is the NaN-free baseline actually used).

        >>> rng = np.random.default_rng(0)
        >>> det = HalfSpaceTrees(rng.uniform(size=(50, 2)), n_trees=3, height=4, window_size=50)
        >>> {k: v for k, v in det.get_params().items() if k != "baseline"}
        {'n_trees': 3, 'height': 4, 'window_size': 50, 'alpha': 0.01, 'seed': 0}
        """
        return {
            "baseline": self.baseline,
            "n_trees": self.n_trees,
            "height": self.height,
            "window_size": self.window_size,
            "alpha": self.alpha,
            "seed": self.seed,
        }

    def clone(self) -> HalfSpaceTrees:
        """A new detector with the same parameters, refitted (seeded) on the same baseline.

        >>> rng = np.random.default_rng(0)
        >>> det = HalfSpaceTrees(rng.uniform(size=(50, 2)), n_trees=3, height=4, window_size=50)
        >>> det.clone().threshold == det.threshold
        True
        """
        return HalfSpaceTrees(**self.get_params())

    def _raw_scores(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        model = self._model
        return np.array([model.score_one(dict(enumerate(r))) for r in x.tolist()])

    def score(self, rows: ArrayLike) -> OutlierResult:
        """Score rows (one river call per row); a row outside the feature limits scores high.

        >>> rng = np.random.default_rng(0)
        >>> det = HalfSpaceTrees(rng.uniform(size=(50, 2)), n_trees=3, height=4, window_size=50,
        ...                      seed=1)
        >>> r = det.score([[0.5, 0.5], [3.0, 0.5]])
        >>> [round(s, 3) for s in r.scores], round(r.threshold, 3), r.flags
        ([0.751, 1.0], 0.896, (False, True))
        """
        x = _rows(rows, "rows")
        if x.shape[1] != self.baseline.shape[1]:
            raise ValueError(
                f"rows: {x.shape[1]} features, the baseline has {self.baseline.shape[1]}"
            )
        scores = self._raw_scores(x)
        # river clips rows to the limits, so a far-away row looks like a corner of the
        # baseline; a row outside the limits gets the top score instead
        outside = np.any((x < self._lo) | (x > self._hi), axis=1)
        scores = np.where(outside, 1.0, scores)
        flags = scores > self.threshold
        return OutlierResult(tuple(scores.tolist()), self.threshold, tuple(flags.tolist()))
