"""Distances between binned distributions and between samples, as plain numpy functions.

Density functions work along the last axis, so a stack of resampled windows is scored in one
call (threshold calibration relies on it).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.stats import distributions

try:  # the function behind kstwo.sf, without the ~50 µs argument checking of rv_continuous
    from scipy.stats._ksstats import kolmogn as _kolmogn
except ImportError:  # pragma: no cover - older or newer scipy layouts
    _kolmogn = None

__all__ = [
    "PSI_FLOOR",
    "hellinger",
    "jensenshannon",
    "ks_pvalue",
    "ks_statistic_sorted",
    "maxdiff",
    "psi",
    "sumdiff",
    "wasserstein",
]

_SCIPY_MAX_AUTO_N = 10_000

#: Proportion that replaces an empty bin in PSI (Wallaroo's convention).
PSI_FLOOR = 0.005

FloatArray = NDArray[np.float64]


def _pair(b: ArrayLike, w: ArrayLike) -> tuple[FloatArray, FloatArray]:
    bb = np.asarray(b, dtype=np.float64)
    ww = np.asarray(w, dtype=np.float64)
    if bb.shape[-1] != ww.shape[-1]:
        raise ValueError(
            f"window_densities: {ww.shape[-1]} bins, but baseline_densities has {bb.shape[-1]}"
        )
    return bb, ww


def _psi_array(b: ArrayLike, w: ArrayLike) -> FloatArray | np.float64:
    bb, ww = _pair(b, w)
    bb = np.where(bb == 0, PSI_FLOOR, bb)
    ww = np.where(ww == 0, PSI_FLOOR, ww)
    return np.sum((ww - bb) * np.log(ww / bb), axis=-1)


def psi(baseline_densities: ArrayLike, window_densities: ArrayLike) -> float:
    """Population stability index, Wallaroo's definition.

    ``sum((w - b) * ln(w / b))`` over bin proportions, where a zero proportion on either side
    is replaced by 0.005 (so a bin empty on both sides contributes nothing).

    >>> round(psi([0.5, 0.5], [0.4, 0.6]), 6)
    0.040547
    >>> round(psi([0.0, 1.0], [0.1, 0.9]), 6)
    0.295131
    """
    return float(_psi_array(baseline_densities, window_densities))


def maxdiff(baseline_densities: ArrayLike, window_densities: ArrayLike) -> float:
    """Largest absolute difference of bin proportions.

    >>> maxdiff([0.5, 0.5], [0.25, 0.75])
    0.25
    """
    b, w = _pair(baseline_densities, window_densities)
    return float(np.max(np.abs(w - b), axis=-1))


def sumdiff(baseline_densities: ArrayLike, window_densities: ArrayLike) -> float:
    """Half the sum of absolute differences of bin proportions (total variation distance).

    >>> sumdiff([0.5, 0.5], [0.25, 0.75])
    0.25
    """
    b, w = _pair(baseline_densities, window_densities)
    return float(0.5 * np.sum(np.abs(w - b), axis=-1))


def _js_array(b: ArrayLike, w: ArrayLike) -> FloatArray | np.float64:
    bb, ww = _pair(b, w)
    bb = bb / np.sum(bb, axis=-1, keepdims=True)
    ww = ww / np.sum(ww, axis=-1, keepdims=True)
    m = 0.5 * (bb + ww)
    with np.errstate(divide="ignore", invalid="ignore"):
        kb = np.where(bb > 0, bb * np.log(bb / m), 0.0)
        kw = np.where(ww > 0, ww * np.log(ww / m), 0.0)
    div = 0.5 * (np.sum(kb, axis=-1) + np.sum(kw, axis=-1))
    return np.sqrt(np.maximum(div, 0.0))


def jensenshannon(baseline_densities: ArrayLike, window_densities: ArrayLike) -> float:
    """Jensen-Shannon distance (natural log), as ``scipy.spatial.distance.jensenshannon``.

    >>> round(jensenshannon([0.5, 0.5], [0.25, 0.75]), 6)
    0.183908
    """
    return float(_js_array(baseline_densities, window_densities))


def _hellinger_array(b: ArrayLike, w: ArrayLike) -> FloatArray | np.float64:
    bb, ww = _pair(b, w)
    bc = np.sum(np.sqrt(bb * ww), axis=-1)
    return np.sqrt(np.maximum(1.0 - bc, 0.0))


def hellinger(baseline_densities: ArrayLike, window_densities: ArrayLike) -> float:
    """Hellinger distance ``sqrt(1 - sum(sqrt(b * w)))``, between 0 and 1.

    >>> hellinger([1.0, 0.0], [0.0, 1.0])
    1.0
    """
    return float(_hellinger_array(baseline_densities, window_densities))


def ks_statistic_sorted(base_sorted: FloatArray, window: FloatArray) -> float:
    """Two-sample KS statistic given a sorted baseline; equal to ``scipy.stats.ks_2samp``'s.

    For samples of at most 10,000 values scipy (default method) snaps the statistic to its
    exact rational value, and so does this function; above that both return the raw maximum.

    >>> ks_statistic_sorted(np.array([1.0, 2.0, 3.0]), np.array([2.5, 3.5]))
    0.6666666666666666
    """
    w = np.sort(window)
    both = np.concatenate([base_sorted, w])
    cdf1 = np.searchsorted(base_sorted, both, side="right") / base_sorted.size
    cdf2 = np.searchsorted(w, both, side="right") / w.size
    diff = cdf1 - cdf2
    d = float(max(np.clip(-diff.min(), 0, 1), diff.max()))
    n1, n2 = base_sorted.size, w.size
    if max(n1, n2) <= _SCIPY_MAX_AUTO_N:
        # the statistic is a multiple of 1/lcm(n1, n2); snapping to it gives the correctly
        # rounded value, which is what ks_2samp returns by default for these sizes
        lcm = n1 // math.gcd(n1, n2) * n2
        d = round(d * lcm) / lcm
    return d


def ks_pvalue(statistic: float, n: int, m: int) -> float:
    """Two-sided p-value of a two-sample KS statistic, Smirnov's asymptotic form.

    The same formula as ``scipy.stats.ks_2samp(..., method="asymp")``.

    >>> round(ks_pvalue(0.1, 1000, 1000), 4)
    0.0
    >>> ks_pvalue(0.0, 10, 10)
    1.0
    """
    big, small = max(n, m), min(n, m)
    # scipy rounds the effective size; with two single values it would round to 0
    en = max(float(np.round(big * small / (big + small))), 1.0)
    if _kolmogn is not None and 0.0 <= statistic <= 1.0:
        p = float(_kolmogn(en, statistic, cdf=False))
    else:
        p = float(distributions.kstwo.sf(statistic, en))
    return float(np.clip(p, 0.0, 1.0))


def wasserstein(x: ArrayLike, y: ArrayLike) -> float:
    """First Wasserstein distance between two 1-D samples (``scipy.stats.wasserstein_distance``).

    >>> wasserstein([0.0, 1.0, 3.0], [5.0, 6.0, 8.0])
    5.0
    """
    u = np.sort(np.asarray(x, dtype=np.float64))
    v = np.sort(np.asarray(y, dtype=np.float64))
    if u.size == 0 or v.size == 0:
        raise ValueError("x, y: both samples need at least one value")
    both = np.sort(np.concatenate([u, v]))
    deltas = np.diff(both)
    cu = np.searchsorted(u, both[:-1], side="right") / u.size
    cv = np.searchsorted(v, both[:-1], side="right") / v.size
    return float(np.sum(np.abs(cu - cv) * deltas))


def wasserstein_binned(
    fine_edges: FloatArray, base_cdf: FloatArray, window_cdf: FloatArray
) -> FloatArray | np.float64:
    """Wasserstein distance from CDFs at the interior boundaries (last axis).

    Mass is taken as uniform inside each interior bin (CDFs linear in between), and mass of
    outlier bins sits on the outermost edge, so values far outside the baseline range are
    under-weighted. ``base_cdf``/``window_cdf`` hold the CDF at each of ``fine_edges``.
    """
    d = base_cdf - window_cdf
    left, right = d[..., :-1], d[..., 1:]
    width = np.diff(fine_edges)
    same = left * right >= 0
    a, b = np.abs(left), np.abs(right)
    with np.errstate(divide="ignore", invalid="ignore"):
        crossing = np.where(a + b > 0, (left**2 + right**2) / (2 * (a + b)), 0.0)
    per_bin = np.where(same, 0.5 * (a + b), crossing)
    return np.sum(per_bin * width, axis=-1)
