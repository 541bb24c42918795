"""Metric registry, threshold validation, status rules and PSI's sample-size-aware cut.

Threshold dicts (one of):

- ``{"warning": w, "alert": a}`` (either key may be left out): on the score, for every metric.
  Status is ``alert`` if score >= a, else ``warning`` if score >= w, else ``ok``.
- ``{"alpha": a}`` plus optionally ``"warning_alpha": b`` (b > a): on the p-value, for the
  metrics that have one (ks, chi2, mmd, mean). ``alert`` if p <= a, ``warning`` if p <= b.
- ``{"auto": alpha}``: a false-alarm rate per window. For p-value metrics this is ``alpha``;
  for PSI the critical value comes from its chi-square approximation at the actual window and
  baseline sizes (plus the exact effect of the 0.005 floor on empty baseline bins); for the
  other distances it is calibrated by resampling from the baseline (cached per size).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from numpy.typing import NDArray
from scipy import optimize, stats

from driftline.detectors._distances import PSI_FLOOR
from driftline.detectors._result import Status

__all__ = [
    "DEFAULT_THRESHOLDS",
    "METRICS",
    "P_VALUE_METRICS",
    "psi_critical_value",
    "status_for",
    "validate_thresholds",
]

METRICS: tuple[str, ...] = (
    "psi",
    "maxdiff",
    "sumdiff",
    "ks",
    "wasserstein",
    "jensenshannon",
    "hellinger",
    "chi2",
    "mmd",
    "mean",
)
P_VALUE_METRICS: tuple[str, ...] = ("ks", "chi2", "mmd", "mean")
DEFAULT_THRESHOLDS: dict[str, float] = {"auto": 0.001}

_SCORE_KEYS = {"warning", "alert"}
_ALPHA_KEYS = {"alpha", "warning_alpha"}


def _number(thresholds: Mapping[str, float], key: str) -> float:
    value = thresholds[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"thresholds.{key}: expected a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"thresholds.{key}: expected a finite number, got {value!r}")
    return float(value)


def _rate(thresholds: Mapping[str, float], key: str) -> float:
    value = _number(thresholds, key)
    if not 0.0 < value < 1.0:
        raise ValueError(
            f"thresholds.{key}: a rate must be between 0 and 1 (exclusive), got {value}"
        )
    return value


def validate_thresholds(metric: str, thresholds: Mapping[str, float]) -> None:
    """Raise ``ValueError`` naming the problem if ``thresholds`` do not fit ``metric``.

    >>> validate_thresholds("psi", {"warning": 0.1, "alert": 0.25})
    >>> validate_thresholds("psi", {"warning": 0.3, "alert": 0.25})
    Traceback (most recent call last):
    ...
    ValueError: thresholds: warning (0.3) must be below alert (0.25)
    >>> validate_thresholds("ks", {"alpha": 0.01})
    """
    if metric not in METRICS:
        raise ValueError(f"metric: {metric!r} is not one of {', '.join(METRICS)}")
    if not isinstance(thresholds, Mapping) or not thresholds:
        raise ValueError(
            'thresholds: expected a non-empty mapping such as {"warning": 0.1, "alert": 0.25}, '
            f'{{"auto": 0.001}} or {{"alpha": 0.01}}, got {thresholds!r}'
        )
    keys = set(thresholds)
    unknown = keys - _SCORE_KEYS - _ALPHA_KEYS - {"auto"}
    if unknown:
        raise ValueError(
            f"thresholds: unknown key(s) {sorted(unknown)}; use warning/alert, alpha/"
            "warning_alpha or auto"
        )
    groups = [g for g in (_SCORE_KEYS, _ALPHA_KEYS, {"auto"}) if keys & g]
    if len(groups) > 1:
        raise ValueError(
            f"thresholds: mix of {sorted(keys)}; use either warning/alert, alpha/warning_alpha "
            "or auto"
        )
    if "auto" in keys:
        _rate(thresholds, "auto")
        return
    if keys & _ALPHA_KEYS:
        if metric not in P_VALUE_METRICS:
            raise ValueError(
                f"thresholds: alpha applies to p-value metrics ({', '.join(P_VALUE_METRICS)}), "
                f"not {metric!r}; use warning/alert or auto"
            )
        if "alpha" not in keys:
            raise ValueError("thresholds: warning_alpha needs alpha as well")
        a = _rate(thresholds, "alpha")
        if "warning_alpha" in keys:
            b = _rate(thresholds, "warning_alpha")
            if b <= a:
                raise ValueError(f"thresholds: warning_alpha ({b}) must be above alpha ({a})")
        return
    values = {k: _number(thresholds, k) for k in keys}
    for k, v in values.items():
        if v < 0:
            raise ValueError(f"thresholds.{k}: must be >= 0, got {v}")
    if "warning" in values and "alert" in values and values["warning"] >= values["alert"]:
        raise ValueError(
            f"thresholds: warning ({values['warning']:g}) must be below alert ({values['alert']:g})"
        )


def status_for(
    score: float, p_value: float | None, applied: Mapping[str, float], use_p_value: bool
) -> Status:
    """Status from the applied thresholds (see the module docstring).

    >>> status_for(0.3, None, {"warning": 0.1, "alert": 0.25}, False)
    'alert'
    >>> status_for(0.5, 0.02, {"alpha": 0.01, "warning_alpha": 0.05}, True)
    'warning'
    """
    if use_p_value:
        if p_value is None or math.isnan(p_value):
            return "ok"
        if p_value <= applied["alpha"]:
            return "alert"
        if "warning_alpha" in applied and p_value <= applied["warning_alpha"]:
            return "warning"
        return "ok"
    if math.isnan(score):
        return "ok"
    if "alert" in applied and score >= applied["alert"]:
        return "alert"
    if "warning" in applied and score >= applied["warning"]:
        return "warning"
    return "ok"


def _floor_term(count: NDArray[np.float64], n: int) -> NDArray[np.float64]:
    w = count / n
    ww = np.where(w == 0, PSI_FLOOR, w)
    return (ww - PSI_FLOOR) * np.log(ww / PSI_FLOOR)


def psi_critical_value(
    baseline_densities: NDArray[np.float64], n: int, m: int, alpha: float
) -> float:
    """PSI value exceeded with probability about ``alpha`` when the window has no drift.

    For bins the baseline populates, PSI is close to Pearson's statistic divided by the
    sample sizes, so PSI ≈ (1/n + 1/m)·χ²(df = populated bins − 1). Bins empty in the baseline
    (the outlier bins) get, under no drift, about Poisson(n / (m + 1)) window values each, and
    because of the 0.005 floor even one of them adds a large term when n is large; that term
    is added exactly by enumerating its counts.

    >>> b = np.array([0, 0.2, 0.2, 0.2, 0.2, 0.2, 0])
    >>> round(psi_critical_value(b, 1000, 1000, 0.01), 4)
    0.0341
    """
    b = np.asarray(baseline_densities, dtype=np.float64)
    populated = b > 0
    df = max(int(populated.sum()) - 1, 1)
    scale = 1.0 / n + 1.0 / m
    empty = int((~populated).sum())
    if empty == 0:
        return float(scale * stats.chi2.isf(alpha, df))
    lam = n / (m + 1.0)
    top = int(stats.poisson.isf(1e-12, lam)) + 2
    counts = np.arange(top + 1, dtype=np.float64)
    probs = stats.poisson.pmf(counts, lam)
    one_values = _floor_term(counts, n)
    values = np.zeros(1)
    weights = np.ones(1)
    for _ in range(empty):
        values = (values[:, None] + one_values[None, :]).ravel()
        weights = (weights[:, None] * probs[None, :]).ravel()
        keep = weights > 1e-15
        values, weights = values[keep], weights[keep]
        # merge equal sums so the support stays small with several empty bins
        values, inverse = np.unique(np.round(values, 12), return_inverse=True)
        weights = np.bincount(inverse.ravel(), weights=weights).astype(np.float64)

    def excess(t: float) -> float:
        x = (t - values) / scale
        sf = np.where(x <= 0, 1.0, stats.chi2.sf(np.maximum(x, 0.0), df))
        return float(np.sum(weights * sf) - alpha)

    hi = float(values.max() + scale * stats.chi2.isf(alpha / 10, df))
    return float(optimize.brentq(excess, 0.0, hi, xtol=1e-10, rtol=1e-8))
