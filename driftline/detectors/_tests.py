"""Two-sample tests on raw samples and counts: KS and chi-squared, as plain functions."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats

from driftline.detectors._bins import as_float_array
from driftline.detectors._distances import ks_pvalue, ks_statistic_sorted
from driftline.detectors._result import DriftResult
from driftline.detectors._thresholds import (
    DEFAULT_THRESHOLDS,
    status_for,
    validate_thresholds,
)

__all__ = ["chi2", "chi2_counts", "ks"]


def _applied(metric: str, thresholds: dict[str, float] | None) -> dict[str, float]:
    thr = dict(DEFAULT_THRESHOLDS if thresholds is None else thresholds)
    validate_thresholds(metric, thr)
    if "auto" in thr:
        return {"auto": float(thr["auto"]), "alpha": float(thr["auto"])}
    return {k: float(v) for k, v in thr.items()}


def ks(
    x: ArrayLike,
    y: ArrayLike,
    *,
    method: str = "asymp",
    thresholds: dict[str, float] | None = None,
) -> DriftResult:
    """Exact two-sample Kolmogorov-Smirnov statistic of raw samples ``x`` (baseline), ``y``.

    The statistic equals ``scipy.stats.ks_2samp(x, y).statistic`` bit for bit. The p-value
    uses Smirnov's asymptotic distribution (``method="asymp"``, fast) or scipy's exact
    computation (``method="exact"``, slow for large samples). NaN values are rejected.

    >>> r = ks([1.0, 2.0, 3.0, 4.0], [3.5, 4.5, 5.5], thresholds={"alpha": 0.05})
    >>> round(r.score, 4), r.status
    (0.75, 'ok')
    """
    a = as_float_array(x, "x")
    b = as_float_array(y, "y")
    if a.size == 0 or b.size == 0:
        raise ValueError("x, y: both samples need at least one value")
    if np.isnan(a).any() or np.isnan(b).any():
        raise ValueError("x, y: KS needs values without NaN; drop or impute them first")
    if method not in ("asymp", "exact"):
        raise ValueError(f"method: {method!r} is not 'asymp' or 'exact'")
    applied = _applied("ks", thresholds)
    d = ks_statistic_sorted(np.sort(a), b)
    if method == "exact":
        p = float(stats.ks_2samp(a, b, method="exact").pvalue)
    else:
        p = ks_pvalue(d, a.size, b.size)
    use_p = "alpha" in applied
    return DriftResult(
        metric="ks",
        score=d,
        p_value=p,
        status=status_for(d, p, applied, use_p),
        thresholds=applied,
        edges=[],
        baseline_densities=[],
        window_densities=[],
        window_count=int(b.size),
        baseline_count=int(a.size),
        details={"exact": 1.0},
    )


def chi2(
    baseline_counts: ArrayLike,
    window_counts: ArrayLike,
    *,
    thresholds: dict[str, float] | None = None,
) -> DriftResult:
    """Chi-squared test of homogeneity of two count vectors (categories or bins).

    The 2 × k contingency table without empty columns, no continuity correction: the same
    numbers as ``scipy.stats.chi2_contingency(table, correction=False)``.

    >>> r = chi2([50, 30, 20], [20, 30, 50], thresholds={"alpha": 0.01})
    >>> round(r.score, 3), r.status
    (25.714, 'alert')
    """
    b = np.asarray(baseline_counts)
    w = np.asarray(window_counts)
    if b.ndim != 1 or b.shape != w.shape:
        raise ValueError(
            f"window_counts: shape {w.shape} must match baseline_counts {b.shape} (1-D)"
        )
    if np.any(b < 0) or np.any(w < 0) or b.sum() == 0 or w.sum() == 0:
        raise ValueError("baseline_counts, window_counts: need non-negative counts, not all zero")
    applied = _applied("chi2", thresholds)
    statistic, p, dof = chi2_counts(b, w)
    return DriftResult(
        metric="chi2",
        score=statistic,
        p_value=p,
        status=status_for(statistic, p, applied, "alpha" in applied),
        thresholds=applied,
        edges=[],
        baseline_densities=(b / b.sum()).tolist(),
        window_densities=(w / w.sum()).tolist(),
        window_count=int(w.sum()),
        baseline_count=int(b.sum()),
        details={"dof": float(dof)},
    )


def chi2_counts(base: NDArray[Any], window: NDArray[Any]) -> tuple[float, float, int]:
    """Statistic, p-value and degrees of freedom of the 2 × k homogeneity test."""
    table = np.vstack([base, window]).astype(np.float64)
    table = table[:, table.sum(axis=0) > 0]
    dof = table.shape[1] - 1
    if dof < 1:
        return 0.0, 1.0, 0
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
    statistic = float(np.sum((table - expected) ** 2 / expected))
    return statistic, float(stats.chi2.sf(statistic, dof)), dof
