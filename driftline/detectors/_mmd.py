"""Kernel maximum mean discrepancy with a permutation p-value (TorchDrift-style).

Gaussian kernel ``k(x, y) = exp(-|x - y|² / (2 ℓ²))`` with ``ℓ`` the median pairwise distance
of the pooled sample (median heuristic) unless given; the unbiased MMD² estimate; and a
p-value from ``n_permutations`` random relabellings computed together as one matrix product
(cost ~ ``n_permutations · N²`` for ``N`` pooled values, hence the ``max_samples`` cap; at
alpha 0.001 with 500 + 500 values that is 1,999 permutations, a few tenths of a second).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from driftline.detectors._result import DriftResult
from driftline.detectors._thresholds import status_for, validate_thresholds

__all__ = ["MAX_PERMUTATIONS", "KernelMMD", "mmd", "permutations_for"]

MAX_PERMUTATIONS = 10_000


def _as_rows(values: ArrayLike, name: str) -> NDArray[np.float64]:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[0] < 2:
        raise ValueError(f"{name}: expected at least 2 rows (1-D or 2-D array), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: MMD needs finite values; drop or impute NaN/inf first")
    return arr


def permutations_for(thresholds: dict[str, float], n_permutations: int | None) -> int:
    """Permutations to run: enough for the p-value to reach the smallest alpha in use.

    A permutation p-value is never below ``1 / (n_permutations + 1)``, so with too few
    permutations a test could never alert. ``None`` picks ``max(199, ceil(2 / alpha) - 1)``;
    an explicit count that is too small for ``alpha`` raises ``ValueError``.

    >>> permutations_for({"auto": 0.001}, None), permutations_for({"alpha": 0.05}, None)
    (1999, 199)
    """
    alpha = thresholds.get("alpha", thresholds.get("auto"))
    if n_permutations is None:
        if alpha is None:
            return 199
        return min(MAX_PERMUTATIONS, max(199, math.ceil(2.0 / alpha) - 1))
    if alpha is not None and 1.0 / (n_permutations + 1) > alpha:
        need = math.ceil(1.0 / alpha)
        raise ValueError(
            f"n_permutations: {n_permutations} permutations cannot give a p-value at or below "
            f"alpha={alpha:g}; use at least {need} (or None to choose), or a larger alpha"
        )
    return n_permutations


def _check_params(n_permutations: int | None, max_samples: int, bandwidth: float | None) -> None:
    if n_permutations is None:
        pass
    elif isinstance(n_permutations, bool) or not isinstance(n_permutations, int):
        raise ValueError(f"n_permutations: expected an integer, got {n_permutations!r}")
    elif not 1 <= n_permutations <= MAX_PERMUTATIONS:
        raise ValueError(
            f"n_permutations: must be between 1 and {MAX_PERMUTATIONS}, got {n_permutations}"
        )
    if isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 2:
        raise ValueError(f"max_samples: expected an integer >= 2, got {max_samples!r}")
    if bandwidth is not None and not (np.isfinite(bandwidth) and bandwidth > 0):
        raise ValueError(f"bandwidth: expected a positive number or None, got {bandwidth!r}")


def _subsample(arr: NDArray[np.float64], k: int, rng: np.random.Generator) -> NDArray[np.float64]:
    if arr.shape[0] <= k:
        return arr
    return arr[np.sort(rng.choice(arr.shape[0], size=k, replace=False))]


def _mmd_core(
    x: NDArray[np.float64],
    y: NDArray[np.float64],
    bandwidth: float | None,
    n_permutations: int,
    rng: np.random.Generator,
) -> tuple[float, float, float]:
    z = np.vstack([x, y])
    n, total = x.shape[0], z.shape[0]
    m = total - n
    sq = np.sum(z * z, axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (z @ z.T), 0.0)
    if bandwidth is None:
        iu = np.triu_indices(total, k=1)
        med = float(np.median(np.sqrt(d2[iu])))
        bandwidth = med if med > 0 else 1.0
    k0 = np.exp(-d2 / (2.0 * bandwidth**2))
    np.fill_diagonal(k0, 0.0)
    rows = k0.sum(axis=1)
    grand = rows.sum()

    def stat(a: NDArray[np.float64]) -> NDArray[np.float64]:
        q = np.einsum("pi,pi->p", a @ k0, a)
        ar = a @ rows
        sxx = q / (n * (n - 1))
        syy = (grand - 2.0 * ar + q) / (m * (m - 1))
        sxy = (ar - q) / (n * m)
        return sxx + syy - 2.0 * sxy

    observed = np.zeros((1, total))
    observed[0, :n] = 1.0
    obs = float(stat(observed)[0])
    perms = np.argsort(rng.random((n_permutations, total)), axis=1)
    a = (perms < n).astype(np.float64)
    null = stat(a)
    p = (1.0 + float(np.sum(null >= obs))) / (1.0 + n_permutations)
    return obs, p, float(bandwidth)


def mmd(
    x: ArrayLike,
    y: ArrayLike,
    *,
    bandwidth: float | None = None,
    n_permutations: int | None = None,
    max_samples: int = 500,
    seed: int = 0,
    thresholds: dict[str, float] | None = None,
) -> DriftResult:
    """Kernel MMD two-sample test between ``x`` (reference) and ``y`` (window).

    Rows are observations (1-D input = one feature). Each side is subsampled (seeded) to at
    most ``max_samples`` rows. ``score`` is the unbiased MMD², ``p_value`` the permutation
    p-value (never below ``1 / (n_permutations + 1)``; ``None`` runs enough permutations for
    the alpha in use, see :func:`permutations_for`). Thresholds default to
    ``{"auto": 0.001}``, i.e. alert when the p-value is at most 0.001.

    >>> rng = np.random.default_rng(0)
    >>> ref = rng.normal(size=(200, 3))
    >>> mmd(ref, rng.normal(size=(100, 3)), seed=1).status
    'ok'
    >>> r = mmd(ref, rng.normal(1.0, 1, size=(100, 3)), seed=1, thresholds={"alpha": 0.01})
    >>> r.status, r.p_value < 0.01
    ('alert', True)
    """
    _check_params(n_permutations, max_samples, bandwidth)
    thr = {"auto": 0.001} if thresholds is None else dict(thresholds)
    validate_thresholds("mmd", thr)
    n_permutations = permutations_for(thr, n_permutations)
    xa, ya = _as_rows(x, "x"), _as_rows(y, "y")
    if xa.shape[1] != ya.shape[1]:
        raise ValueError(f"y: {ya.shape[1]} features, but x has {xa.shape[1]}")
    rng = np.random.default_rng(seed)
    xs, ys = _subsample(xa, max_samples, rng), _subsample(ya, max_samples, rng)
    score, p, bw = _mmd_core(xs, ys, bandwidth, n_permutations, rng)
    applied = _applied(thr)
    return DriftResult(
        metric="mmd",
        score=score,
        p_value=p,
        status=status_for(score, p, applied, "alpha" in applied),
        thresholds=applied,
        edges=[],
        baseline_densities=[],
        window_densities=[],
        window_count=int(ya.shape[0]),
        baseline_count=int(xa.shape[0]),
        details={"bandwidth": bw, "n_permutations": float(n_permutations)},
    )


def _applied(thr: dict[str, float]) -> dict[str, float]:
    if "auto" in thr:
        return {"auto": float(thr["auto"]), "alpha": float(thr["auto"])}
    return {k: float(v) for k, v in thr.items()}


class KernelMMD:
    """A multivariate drift detector holding its reference sample (like TorchDrift's).

    >>> rng = np.random.default_rng(3)
    >>> det = KernelMMD(rng.normal(size=(300, 2)), seed=7)
    >>> det.score(rng.normal(size=(100, 2))).status
    'ok'
    """

    def __init__(
        self,
        reference: ArrayLike,
        *,
        bandwidth: float | None = None,
        n_permutations: int | None = None,
        max_samples: int = 500,
        seed: int = 0,
        thresholds: dict[str, float] | None = None,
    ) -> None:
        _check_params(n_permutations, max_samples, bandwidth)
        thr = {"auto": 0.001} if thresholds is None else dict(thresholds)
        validate_thresholds("mmd", thr)
        permutations_for(thr, n_permutations)
        self.reference = _as_rows(reference, "reference")
        self.bandwidth = bandwidth
        self.n_permutations = n_permutations
        self.max_samples = max_samples
        self.seed = seed
        self.thresholds = thr

    def get_params(self) -> dict[str, Any]:
        """Constructor arguments (``reference`` as a 2-D array, ``thresholds`` a copy).

        >>> det = KernelMMD([0.0, 1.0, 2.0], thresholds={"alpha": 0.05})
        >>> p = det.get_params()
        >>> p["reference"].shape, p["thresholds"], p["n_permutations"], p["seed"]
        ((3, 1), {'alpha': 0.05}, None, 0)
        """
        return {
            "reference": self.reference,
            "bandwidth": self.bandwidth,
            "n_permutations": self.n_permutations,
            "max_samples": self.max_samples,
            "seed": self.seed,
            "thresholds": dict(self.thresholds),
        }

    def clone(self) -> KernelMMD:
        """A new detector with the same parameters.

        >>> det = KernelMMD([0.0, 1.0, 2.0], seed=7, thresholds={"alpha": 0.05})
        >>> det.clone().get_params()["seed"], det.clone().thresholds
        (7, {'alpha': 0.05})
        """
        return KernelMMD(**self.get_params())

    def score(self, window: ArrayLike) -> DriftResult:
        """Test ``window`` against the reference; the same window always gives the same result.

        >>> rng = np.random.default_rng(3)
        >>> det = KernelMMD(rng.normal(size=(50, 2)), seed=7, thresholds={"alpha": 0.05})
        >>> det.score(rng.normal(size=(40, 2))).p_value
        0.53
        >>> r = det.score(rng.normal(2.0, 1.0, size=(40, 2)))
        >>> r.status, r.p_value
        ('alert', 0.005)
        """
        return mmd(
            self.reference,
            window,
            bandwidth=self.bandwidth,
            n_permutations=self.n_permutations,
            max_samples=self.max_samples,
            seed=self.seed,
            thresholds=self.thresholds,
        )
