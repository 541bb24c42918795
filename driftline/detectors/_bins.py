"""Bin edges from a baseline and vectorized bin indexing.

Edges are the ``k + 1`` boundaries ``e_0 <= e_1 < ... < e_k`` of ``k`` interior bins. Interior
bins are right-closed, ``(e_{j}, e_{j+1}]``, except the first, which is closed on both sides,
``[e_0, e_1]``. With ``outliers="explicit"`` two more bins hold values below ``e_0`` (bin 0,
the left outlier bin) and above ``e_k`` (the last bin, the right outlier bin); with
``outliers="open"`` the first and last interior bins extend to minus and plus infinity.
NaN always falls in the leftmost bin (Wallaroo's convention).

Only the ``categorical`` mode produces ``e_0 == e_1``: its first bin is the single value ``e_0``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "BIN_MODES",
    "OUTLIER_MODES",
    "BinMode",
    "OutlierMode",
    "bin_index",
    "compute_edges",
    "num_bins_for",
]

BinMode = Literal["quantile", "equal", "provided", "categorical"]
OutlierMode = Literal["explicit", "open"]
BIN_MODES: tuple[str, ...] = ("quantile", "equal", "provided", "categorical")
OUTLIER_MODES: tuple[str, ...] = ("explicit", "open")


def as_float_array(values: ArrayLike, name: str = "values") -> NDArray[np.float64]:
    """1-D float64 view of ``values``; raises ``ValueError`` naming ``name`` otherwise."""
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: expected numbers, got {type(values).__name__} ({exc})") from exc
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array of numbers, got shape {arr.shape}")
    return arr


def compute_edges(
    values: NDArray[np.float64],
    bins: str,
    num_bins: int,
    edges: ArrayLike | None = None,
) -> NDArray[np.float64]:
    """Boundaries of the interior bins for a baseline.

    Duplicate quantile edges (discrete data) are merged, so a discrete baseline may get fewer
    interior bins than ``num_bins``; a constant baseline gets one bin ``[v, v]``.

    >>> compute_edges(np.arange(11.0), "quantile", 5)
    array([ 0.,  2.,  4.,  6.,  8., 10.])
    >>> compute_edges(np.array([1.0, 1.0, 1.0, 2.0]), "quantile", 4)
    array([1.  , 1.25, 2.  ])
    >>> compute_edges(np.array([3.0, 1.0, 3.0]), "categorical", 5)
    array([1., 1., 3.])
    """
    if bins not in BIN_MODES:
        raise ValueError(f"bins: {bins!r} is not one of {', '.join(BIN_MODES)}")
    if bins == "provided":
        if edges is None:
            raise ValueError('edges: bins="provided" needs edges=[e0, e1, ...] (at least two)')
        out = as_float_array(edges, "edges")
        if out.size < 2 or not np.all(np.isfinite(out)):
            raise ValueError(f"edges: need at least two finite numbers, got {out.tolist()}")
        if np.any(np.diff(out) <= 0):
            raise ValueError(f"edges: must be strictly increasing, got {out.tolist()}")
        return out
    if edges is not None:
        raise ValueError(f'edges: only used with bins="provided", not bins={bins!r}')
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        raise ValueError("values: the baseline has no finite value to compute bin edges from")
    if bins == "categorical":
        cats = np.unique(finite)
        return np.concatenate([cats[:1], cats])
    if bins == "quantile":
        raw = np.quantile(finite, np.linspace(0.0, 1.0, num_bins + 1))
    else:
        raw = np.linspace(finite.min(), finite.max(), num_bins + 1)
    out = np.unique(raw)
    if out.size == 1:
        out = np.concatenate([out, out])
    return out.astype(np.float64)


def num_bins_for(edges: NDArray[np.float64], outliers: str) -> int:
    """Number of bins (interior plus outlier bins) for boundaries ``edges``."""
    k = edges.size - 1
    return k + 2 if outliers == "explicit" else k


def bin_index(values: ArrayLike, edges: NDArray[np.float64], outliers: str) -> NDArray[np.intp]:
    """Bin of each value, vectorized (see the module docstring for the bin rules).

    >>> e = np.array([0.0, 1.0, 2.0])
    >>> bin_index([-1, 0, 0.5, 1, 1.5, 2, 3, np.nan], e, "explicit").tolist()
    [0, 1, 1, 1, 2, 2, 3, 0]
    >>> bin_index([-1, 0, 1.5, 3, np.nan], e, "open").tolist()
    [0, 0, 1, 1, 0]
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    idx = np.searchsorted(edges[1:-1], v, side="left")
    if outliers == "explicit":
        idx += 1
        idx[v < edges[0]] = 0
        idx[v > edges[-1]] = edges.size
    idx[np.isnan(v)] = 0
    return idx
