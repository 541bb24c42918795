"""The baseline a window is compared with: coarse and fine bins, counts and a sorted sample.

Two grids are kept. The **coarse** grid holds the bins the user asked for (Wallaroo's 5
quantile bins plus outlier bins by default); PSI, MaxDiff, SumDiff, Jensen-Shannon, Hellinger
and chi-squared use it. The **fine** grid refines it (its edges include every coarse edge, so
coarse counts are sums of fine counts, see :meth:`Baseline.coarsen`); windows are stored as
counts on the fine grid, and binned KS and Wasserstein use it.

The ``mean`` metric (a two-sample z-test on the mean) also works on the fine grid: each fine
bin stands for its **centroid**, the mean of the baseline's kept sample values in it (the bin's
midpoint when the sample has none there; the outermost edge for an outlier bin, so values
beyond the baseline's range count as its minimum or maximum, and NaN, counted in the leftmost
bin, as that bin's value). With
``g`` the centroid map, the baseline mean and standard deviation of ``g`` come from the
baseline's fine counts (``m`` values), and a window of ``n`` values with mean ``T`` of ``g``
scores ``d = |T - mean| / std`` (the shift in baseline standard deviations) with
``z = (T - mean) / (std * sqrt(1/n + 1/m))`` and the two-sided normal p-value of ``z``. Under
no drift ``z`` is approximately standard normal, the baseline's own sampling error included
(``g`` is a fixed function of the value, so the central limit theorem applies to it exactly
as to the raw values). With the default 200 fine quantile bins ``g`` correlates above 0.999
with the raw values of a normal baseline, so it keeps nearly all of the z-test's power; the
clipping at the baseline's range makes it robust to a few extreme values, and blind to how far
beyond the range values go (on a constant baseline it sees nothing; PSI and chi-squared see
the outlier bins). Raw values and the fine histogram of the same values give identical results.

Chi-squared (a homogeneity test on the coarse bins) pools bins the baseline never filled,
such as the outlier bins, into their neighbour; use the plain :func:`chi2` on counts for the
unpooled test.

Comparing raw window values or the fine histogram of the same values gives identical results
for every coarse-grid metric. KS and Wasserstein differ: with raw values they are computed
exactly against the baseline's kept sample; from a histogram they are binned, and the binned
KS statistic ``D_b`` satisfies ``D_b <= D <= D_b + error_bound`` where ``error_bound`` (in
``DriftResult.details``) is ``max_i min(b_i, w_i)`` over fine bins (proportions): inside a bin
both CDFs are monotone, so the gap can exceed its value at the bin's ends by at most the
smaller of the two masses. With the default 200 fine quantile bins the bound is at most
about 0.005. The binned p-value is never smaller than the exact one (conservative).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from driftline.detectors import _distances as dist
from driftline.detectors._bins import (
    BIN_MODES,
    OUTLIER_MODES,
    as_float_array,
    bin_index,
    compute_edges,
    num_bins_for,
)
from driftline.detectors._histogram import Histogram
from driftline.detectors._mmd import mmd as _mmd
from driftline.detectors._result import DriftResult
from driftline.detectors._tests import chi2_counts as _chi2_counts
from driftline.detectors._thresholds import (
    DEFAULT_THRESHOLDS,
    P_VALUE_METRICS,
    psi_critical_value,
    status_for,
    validate_thresholds,
)

__all__ = ["Baseline"]

_COARSE_METRICS = ("psi", "maxdiff", "sumdiff", "jensenshannon", "hellinger")
_CACHE_SIZE = 512
_FORMAT = 1


def _calibration_size(n: int) -> int:
    """Window size used for resampling: ``n`` itself up to 50, else the largest point of a 2 %
    geometric grid not above ``n`` (a smaller window has a larger critical value, so this is
    conservative and keeps the cache small when window sizes vary)."""
    if n <= 50:
        return n
    k = math.floor(math.log(n) / math.log(1.02))
    g = math.floor(1.02**k)
    return g if g <= n else math.floor(1.02 ** (k - 1))


class Baseline:
    """A baseline distribution on fixed bins, built with :meth:`from_values`.

    >>> rng = np.random.default_rng(0)
    >>> base = Baseline.from_values(rng.normal(size=10_000))
    >>> base.num_bins, base.count
    (7, 10000)
    >>> same = base.compare(rng.normal(size=1000), metric="psi")
    >>> same.status
    'ok'
    >>> shifted = base.compare(rng.normal(0.5, 1, size=1000), metric="psi")
    >>> shifted.status, shifted.score > 0.1
    ('alert', True)
    """

    def __init__(
        self,
        *,
        bins: str,
        outliers: str,
        edges: ArrayLike,
        fine_edges: ArrayLike,
        fine_counts: ArrayLike,
        sample: ArrayLike,
        seed: int = 0,
    ) -> None:
        if bins not in BIN_MODES:
            raise ValueError(f"bins: {bins!r} is not one of {', '.join(BIN_MODES)}")
        if outliers not in OUTLIER_MODES:
            raise ValueError(f"outliers: {outliers!r} is not one of {', '.join(OUTLIER_MODES)}")
        self._bins = bins
        self._outliers = outliers
        self._edges = np.array(edges, dtype=np.float64)
        self._fine = Histogram(fine_edges, fine_counts, outliers)
        self._sample = np.sort(np.array(sample, dtype=np.float64))
        self._seed = int(seed)
        for arr in (self._edges, self._sample):
            arr.flags.writeable = False
        self._build_derived()

    def _build_derived(self) -> None:
        fe = self._fine.edges
        e = self._edges
        if not np.all(np.isin(e, fe)):
            raise ValueError("fine_edges: must contain every coarse edge")
        # coarse bin of each fine interior bin: the one holding its right edge
        interior = np.searchsorted(e[1:-1], fe[1:], side="left")
        if self._outliers == "explicit":
            coarse_of_fine = np.concatenate([[0], interior + 1, [e.size]])
        else:
            coarse_of_fine = interior
        starts = np.flatnonzero(np.diff(coarse_of_fine, prepend=-1))
        if starts.size != num_bins_for(e, self._outliers):
            raise ValueError("fine_edges: every coarse bin must contain at least one fine bin")
        self._starts = starts
        self._coarse_counts = self.coarsen(self._fine.counts)
        self._coarse_counts.flags.writeable = False
        count = self._fine.total
        if count == 0:
            raise ValueError("values: the baseline is empty")
        self._densities = self._coarse_counts / count
        self._chi2_groups = np.maximum(np.cumsum(self._coarse_counts > 0) - 1, 0)
        self._fine_cdf = np.cumsum(self._fine.counts) / count
        self._fine_density = self._fine.counts / count
        self._centroids = self._compute_centroids()
        self._centroids.flags.writeable = False
        mean = float(self._fine_density @ self._centroids)
        self._g_mean = mean
        self._g_std = float(np.sqrt(self._fine_density @ (self._centroids - mean) ** 2))
        self._valid: set[tuple[Any, ...]] = set()
        self._critical: OrderedDict[tuple[str, int, float], float] = OrderedDict()

    def _compute_centroids(self) -> NDArray[np.float64]:
        fe = self._fine.edges
        size = self._fine.counts.size
        # stand-in for a bin without sample values: the midpoint of its finite boundaries
        if self._outliers == "explicit":
            fallback = np.concatenate([fe[:1], 0.5 * (fe[:-1] + fe[1:]), fe[-1:]])
        else:
            fallback = 0.5 * (fe[:-1] + fe[1:])
        idx = self.fine_index(self._sample)
        hits = np.bincount(idx, minlength=size)
        sums = np.bincount(idx, weights=self._sample, minlength=size)
        with np.errstate(invalid="ignore", divide="ignore"):
            centroids = np.where(hits > 0, sums / np.maximum(hits, 1), fallback)
        # mean of values in a bin stays inside the bin; rounding must not push it out
        return np.asarray(np.clip(centroids, fe[0], fe[-1]), dtype=np.float64)

    # -- construction --------------------------------------------------------------------------

    @classmethod
    def from_values(
        cls,
        values: ArrayLike,
        bins: str = "quantile",
        num_bins: int = 5,
        edges: ArrayLike | None = None,
        outliers: str = "explicit",
        fine_bins: int = 200,
        sample_size: int | None = 10_000,
        seed: int = 0,
    ) -> Baseline:
        """Build a baseline from its values.

        Parameters
        ----------
        values:
            1-D baseline values. NaN values are counted in the leftmost bin.
        bins:
            ``quantile`` (edges at baseline quantiles, duplicate edges of discrete data merged
            so fewer bins may result), ``equal`` (equal width over the baseline range),
            ``provided`` (``edges`` given: ``e_0 < ... < e_k``) or ``categorical`` (one bin per
            distinct baseline value; a value between categories counts in the next larger one).
        num_bins:
            Interior bins for ``quantile``/``equal`` (Wallaroo's default 5).
        outliers:
            ``explicit``: extra bins for values below the first / above the last edge (for
            quantile and equal bins: below the baseline min / above its max). ``open``: the
            first and last bins extend to infinity.
        fine_bins:
            Quantile bins of the fine grid (merged with the coarse edges), used for binned KS
            and Wasserstein; the binned KS error is at most about ``1 / fine_bins``.
        sample_size:
            Values kept (sorted) for exact KS, Wasserstein and MMD on raw windows; a seeded
            subsample when the baseline is larger, all values when ``None``.
        seed:
            Seed for subsampling, MMD permutations and threshold calibration.

        >>> b = Baseline.from_values([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], num_bins=2)
        >>> b.edges.tolist(), b.num_bins
        ([1.0, 5.5, 10.0], 4)
        """
        arr = as_float_array(values)
        if arr.size == 0:
            raise ValueError("values: the baseline is empty")
        if isinstance(num_bins, bool) or not isinstance(num_bins, int) or num_bins < 1:
            raise ValueError(f"num_bins: expected an integer >= 1, got {num_bins!r}")
        if isinstance(fine_bins, bool) or not isinstance(fine_bins, int) or fine_bins < 1:
            raise ValueError(f"fine_bins: expected an integer >= 1, got {fine_bins!r}")
        if sample_size is not None and (
            isinstance(sample_size, bool) or not isinstance(sample_size, int) or sample_size < 1
        ):
            raise ValueError(f"sample_size: expected an integer >= 1 or None, got {sample_size!r}")
        if outliers not in OUTLIER_MODES:
            raise ValueError(f"outliers: {outliers!r} is not one of {', '.join(OUTLIER_MODES)}")
        coarse = compute_edges(arr, bins, num_bins, edges)
        if bins == "categorical":
            fine = coarse
        else:
            finite = arr[np.isfinite(arr)]
            extra = (
                np.quantile(finite, np.linspace(0.0, 1.0, fine_bins + 1))
                if finite.size
                else np.empty(0)
            )
            if outliers == "explicit":
                extra = extra[(extra >= coarse[0]) & (extra <= coarse[-1])]
            fine = np.unique(np.concatenate([coarse, extra]))
            if fine.size == 1:  # constant baseline: one bin [v, v], as on the coarse grid
                fine = coarse
        fine_counts = np.bincount(
            bin_index(arr, fine, outliers), minlength=num_bins_for(fine, outliers)
        )
        rng = np.random.default_rng(seed)
        kept = arr[~np.isnan(arr)]
        if sample_size is not None and kept.size > sample_size:
            kept = rng.choice(kept, size=sample_size, replace=False)
        return cls(
            bins=bins,
            outliers=outliers,
            edges=coarse,
            fine_edges=fine,
            fine_counts=fine_counts,
            sample=kept,
            seed=seed,
        )

    # -- properties ----------------------------------------------------------------------------

    @property
    def bins(self) -> str:
        """Binning mode of the coarse grid (``quantile``, ``equal``, ``provided``, ...).

        >>> Baseline.from_values([1.0, 2.0, 3.0], bins="equal").bins
        'equal'
        """
        return self._bins

    @property
    def outliers(self) -> str:
        """Outlier mode of both grids: ``explicit`` or ``open``.

        >>> Baseline.from_values([1.0, 2.0, 3.0], outliers="open").outliers
        'open'
        """
        return self._outliers

    @property
    def edges(self) -> NDArray[np.float64]:
        """Boundaries ``e_0..e_k`` of the coarse interior bins.

        >>> Baseline.from_values([1.0, 2.0, 3.0, 4.0], num_bins=2).edges.tolist()
        [1.0, 2.5, 4.0]
        """
        return self._edges

    @property
    def num_bins(self) -> int:
        """Coarse bins, outlier bins included.

        >>> Baseline.from_values([1.0, 2.0, 3.0, 4.0], num_bins=2).num_bins
        4
        >>> Baseline.from_values([1.0, 2.0, 3.0, 4.0], num_bins=2, outliers="open").num_bins
        2
        """
        return int(self._coarse_counts.size)

    @property
    def fine_edges(self) -> NDArray[np.float64]:
        """Boundaries of the fine interior bins (every coarse edge among them).

        >>> Baseline.from_values([1.0, 2.0, 3.0, 4.0], num_bins=2, fine_bins=4).fine_edges.tolist()
        [1.0, 1.75, 2.5, 3.25, 4.0]
        """
        return self._fine.edges

    @property
    def num_fine_bins(self) -> int:
        """Fine bins, outlier bins included (the length of a fine count vector).

        >>> Baseline.from_values([1.0, 2.0, 3.0, 4.0], num_bins=2, fine_bins=4).num_fine_bins
        6
        """
        return int(self._fine.counts.size)

    @property
    def count(self) -> int:
        """Number of baseline values.

        >>> Baseline.from_values([1.0, 2.0, np.nan]).count
        3
        """
        return self._fine.total

    @property
    def counts(self) -> NDArray[np.int64]:
        """Baseline counts on the coarse bins.

        >>> Baseline.from_values([1.0, 2.0, 3.0, 4.0], num_bins=2).counts.tolist()
        [0, 2, 2, 0]
        """
        return self._coarse_counts

    @property
    def densities(self) -> NDArray[np.float64]:
        """Baseline proportions on the coarse bins.

        >>> Baseline.from_values([1.0, 2.0, 3.0, 4.0], num_bins=2).densities.tolist()
        [0.0, 0.5, 0.5, 0.0]
        """
        return self._densities

    @property
    def fine_histogram(self) -> Histogram:
        """The baseline's own counts on the fine grid.

        >>> Baseline.from_values([1.0, 2.0, 3.0, 4.0], num_bins=2, fine_bins=4).fine_histogram
        Histogram(total=4, bins=6, outliers='explicit')
        """
        return self._fine

    @property
    def fine_centroids(self) -> NDArray[np.float64]:
        """Value each fine bin stands for in the ``mean`` metric (see the module docstring).

        >>> b = Baseline.from_values([1.0, 2.0, 3.0, 4.0], num_bins=2, fine_bins=2)
        >>> b.fine_centroids.tolist()
        [1.0, 1.5, 3.5, 4.0]
        """
        return self._centroids

    @property
    def sample(self) -> NDArray[np.float64]:
        """Sorted kept baseline values (NaN excluded).

        >>> Baseline.from_values([3.0, np.nan, 1.0, 2.0]).sample.tolist()
        [1.0, 2.0, 3.0]
        >>> Baseline.from_values(np.arange(100.0), sample_size=5, seed=1).sample.size
        5
        """
        return self._sample

    @property
    def seed(self) -> int:
        """Seed for subsampling, MMD permutations and threshold calibration.

        >>> Baseline.from_values([1.0, 2.0, 3.0], seed=5).seed
        5
        """
        return self._seed

    # -- binning -------------------------------------------------------------------------------

    def fine_index(self, values: ArrayLike) -> NDArray[np.intp]:
        """Fine bin of each value (vectorized; NaN in the leftmost bin).

        >>> b = Baseline.from_values(np.arange(100.0))
        >>> idx = b.fine_index([-5.0, 50.0, np.nan, 500.0])
        >>> idx.tolist()[0], idx.tolist()[2], idx.tolist()[3] == b.num_fine_bins - 1
        (0, 0, True)
        """
        return bin_index(values, self._fine.edges, self._outliers)

    def coarse_index(self, values: ArrayLike) -> NDArray[np.intp]:
        """Coarse bin of each value (0 = left outlier bin with explicit outliers).

        >>> Baseline.from_values(np.arange(11.0), num_bins=2).coarse_index([-1, 0, 7, 11]).tolist()
        [0, 1, 2, 3]
        """
        return bin_index(values, self._edges, self._outliers)

    def histogram(self, values: ArrayLike) -> Histogram:
        """Fine-grid histogram of ``values``: what a window keeps per time bucket.

        >>> b = Baseline.from_values(np.arange(100.0))
        >>> h = b.histogram([1.0, 2.0]) + b.histogram([3.0])
        >>> h.total
        3
        """
        idx = self.fine_index(values)
        counts = np.bincount(idx, minlength=self.num_fine_bins).astype(np.int64, copy=False)
        return Histogram._trusted(self._fine.edges, counts, self._outliers)

    def histogram_from_counts(self, fine_counts: ArrayLike) -> Histogram:
        """Wrap a fine count vector (e.g. read back from storage) as a histogram.

        >>> b = Baseline.from_values(np.arange(100.0))
        >>> h = b.histogram([3.0, 70.0])
        >>> b.histogram_from_counts(h.counts.tolist()) == h
        True
        """
        return Histogram(self._fine.edges, fine_counts, self._outliers)

    def coarsen(self, fine_counts: ArrayLike) -> NDArray[np.int64]:
        """Coarse counts from fine counts (exact sums; works on a stack along the last axis).

        >>> b = Baseline.from_values(np.arange(100.0))
        >>> v = np.array([-1.0, 3.0, 42.0, 99.0, 1e9])
        >>> np.array_equal(b.coarsen(b.histogram(v).counts),
        ...                np.bincount(b.coarse_index(v), minlength=b.num_bins))
        True
        """
        c = np.asarray(fine_counts)
        if c.shape[-1] != self._fine.counts.size:
            raise ValueError(
                f"fine_counts: {c.shape[-1]} bins given, the fine grid has {self._fine.counts.size}"
            )
        return np.add.reduceat(c, self._starts, axis=-1)

    # -- comparison ----------------------------------------------------------------------------

    def compare(
        self,
        window: ArrayLike | Histogram,
        metric: str = "psi",
        thresholds: dict[str, float] | None = None,
        *,
        n_permutations: int | None = None,
    ) -> DriftResult:
        """Compare a window (raw values or its fine-grid :class:`Histogram`) with the baseline.

        ``metric`` is one of ``driftline.detectors.METRICS``; ``mmd`` needs raw values.
        ``thresholds`` default to ``{"auto": 0.001}`` (see ``validate_thresholds``).
        An empty window raises ``ValueError``.

        >>> b = Baseline.from_values(np.linspace(0, 1, 1001))
        >>> r = b.compare(np.linspace(0, 1, 101), metric="ks")
        >>> r.status, r.p_value > 0.5
        ('ok', True)
        >>> m = b.compare(np.linspace(0.3, 1, 101), metric="mean")
        >>> m.status, round(m.details["difference"], 3)
        ('alert', 0.15)
        """
        thr = dict(DEFAULT_THRESHOLDS if thresholds is None else thresholds)
        key = (metric, *sorted(thr.items()))
        if key not in self._valid:
            validate_thresholds(metric, thr)
            if len(self._valid) < _CACHE_SIZE:
                self._valid.add(key)
        raw, fine_counts = self._window_counts(window)
        n = int(fine_counts.sum())
        m = self.count
        coarse_w = self.coarsen(fine_counts)
        wd = coarse_w / n
        bd = self._densities
        p_value: float | None = None
        details: dict[str, float] = {}
        if metric in _COARSE_METRICS:
            score = _coarse_metric(metric, bd, wd)
        elif metric == "chi2":
            # bins the baseline never filled (the outlier bins) are pooled into their
            # neighbour: a single stray value in a cell with no baseline count would
            # dominate the statistic and break its chi-square approximation
            groups = self._chi2_groups
            score, p_value, dof = _chi2_counts(
                np.bincount(groups, weights=self._coarse_counts),
                np.bincount(groups, weights=coarse_w),
            )
            details["dof"] = float(dof)
        elif metric == "mean":
            score, z, p_value = self._mean_test(n, float(fine_counts @ self._centroids))
            details.update(z=z, difference=float(fine_counts @ self._centroids) / n - self._g_mean)
        elif metric == "ks":
            if raw is not None and not np.isnan(raw).any():
                score = dist.ks_statistic_sorted(self._sample, raw)
                p_value = dist.ks_pvalue(score, raw.size, self._sample.size)
                details["exact"] = 1.0
            else:
                score, bound = self._ks_binned(fine_counts)
                p_value = dist.ks_pvalue(score, n, m)
                details.update(exact=0.0, error_bound=bound)
        elif metric == "wasserstein":
            if raw is not None and not np.isnan(raw).any():
                score = dist.wasserstein(self._sample, raw)
                details["exact"] = 1.0
            else:
                score = float(self._wasserstein_binned(fine_counts))
                details["exact"] = 0.0
        else:  # mmd
            if raw is None:
                raise ValueError("window: metric 'mmd' needs raw values, not a histogram")
            res = _mmd(
                self._sample, raw, n_permutations=n_permutations, seed=self._seed, thresholds=thr
            )
            score, p_value = res.score, res.p_value
            details.update(res.details)
        applied = self._applied_thresholds(metric, thr, n)
        use_p = metric in P_VALUE_METRICS and ("alpha" in applied)
        status = status_for(score, p_value, applied, use_p)
        return DriftResult(
            metric=metric,
            score=float(score),
            p_value=p_value,
            status=status,
            thresholds=applied,
            edges=self._edges.tolist(),
            baseline_densities=bd.tolist(),
            window_densities=wd.tolist(),
            window_count=n,
            baseline_count=m,
            details=details,
        )

    def _window_counts(
        self, window: ArrayLike | Histogram
    ) -> tuple[NDArray[np.float64] | None, NDArray[np.int64]]:
        """Raw values (``None`` for a histogram) and fine counts of a non-empty window."""
        raw: NDArray[np.float64] | None
        if isinstance(window, Histogram):
            same_grid = window.edges is self._fine.edges and window.outliers == self._outliers
            if not same_grid and (
                window.outliers != self._outliers
                or not np.array_equal(window.edges, self._fine.edges)
            ):
                raise ValueError(
                    "window: the histogram is not on this baseline's fine grid; build it with "
                    "baseline.histogram(values) or baseline.histogram_from_counts(counts)"
                )
            raw = None
            fine_counts = window.counts
        else:
            raw = as_float_array(window, "window")
            fine_counts = np.bincount(self.fine_index(raw), minlength=self.num_fine_bins)
        if not fine_counts.any():
            raise ValueError("window: no values to compare (empty window)")
        return raw, fine_counts

    def _mean_test(self, n: int, total: float) -> tuple[float, float, float]:
        """``(d, z, p)`` of the ``mean`` metric for ``n`` values whose centroids sum to ``total``.

        ``d`` is the absolute shift in baseline standard deviations, ``z`` the signed two-sample
        z statistic, ``p`` its two-sided p-value (see the module docstring).
        """
        diff = total / n - self._g_mean
        std = self._g_std
        if std == 0.0:  # constant baseline: every value maps to it, nothing to test
            return 0.0, 0.0, 1.0
        z = diff / (std * math.sqrt(1.0 / n + 1.0 / self.count))
        return abs(diff) / std, z, math.erfc(abs(z) / math.sqrt(2.0))

    def _ks_binned(self, fine_counts: NDArray[np.int64]) -> tuple[float, float]:
        n = fine_counts.sum()
        cw = np.cumsum(fine_counts) / n
        score = float(np.max(np.abs(self._fine_cdf - cw)))
        bound = float(np.max(np.minimum(self._fine_density, fine_counts / n)))
        return score, bound

    def _cdfs_at_edges(self, fine_counts: NDArray[np.int64]) -> NDArray[np.float64]:
        """CDF at each fine boundary (last axis), mass below e_0 included at e_0."""
        c = np.asarray(fine_counts, dtype=np.float64)
        total = c.sum(axis=-1, keepdims=True)
        cum = np.cumsum(c, axis=-1) / total
        if self._outliers == "explicit":
            # cum[0] is the left outlier bin, i.e. the CDF just before e_0; cum[j] for j >= 1
            # is the CDF at the right edge of interior bin j - 1
            return cum[..., : self._fine.edges.size]
        zeros = np.zeros((*cum.shape[:-1], 1))
        return np.concatenate([zeros, cum[..., :-1], np.ones_like(zeros)], axis=-1)

    def _wasserstein_binned(self, fine_counts: NDArray[np.int64]) -> NDArray[np.float64] | float:
        cw = self._cdfs_at_edges(fine_counts)
        cb = self._cdfs_at_edges(self._fine.counts)
        return dist.wasserstein_binned(self._fine.edges, cb, cw)

    # -- thresholds ----------------------------------------------------------------------------

    def _applied_thresholds(self, metric: str, thr: dict[str, float], n: int) -> dict[str, float]:
        if "auto" not in thr:
            return {k: float(v) for k, v in thr.items()}
        alpha = float(thr["auto"])
        if metric in P_VALUE_METRICS:
            return {"auto": alpha, "alpha": alpha}
        return {"auto": alpha, "alert": self.critical_value(metric, n, alpha)}

    def critical_value(self, metric: str, n: int, alpha: float) -> float:
        """Score a window of ``n`` values exceeds with probability ~``alpha`` under no drift.

        PSI uses its chi-square approximation; the other distances are calibrated by
        resampling windows and baselines from the baseline's fine histogram (seeded, cached).

        >>> b = Baseline.from_values(np.random.default_rng(1).normal(size=5000))
        >>> b.critical_value("psi", 1000, 0.01) < b.critical_value("psi", 100, 0.01)
        True
        """
        if metric in P_VALUE_METRICS:
            raise ValueError(f"metric: {metric!r} uses its p-value; give thresholds as alpha")
        if n < 1:
            raise ValueError(f"n: window size must be >= 1, got {n}")
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"alpha: must be between 0 and 1, got {alpha}")
        key = (metric, n if metric == "psi" else _calibration_size(n), alpha)
        hit = self._critical.get(key)
        if hit is not None:
            self._critical.move_to_end(key)
            return hit
        if metric == "psi":
            value = psi_critical_value(self._densities, n, self.count, alpha)
        else:
            value = self._calibrate(metric, key[1], alpha)
        self._critical[key] = value
        if len(self._critical) > _CACHE_SIZE:
            self._critical.popitem(last=False)
        return value

    def _calibrate(self, metric: str, n: int, alpha: float) -> float:
        reps = int(min(20_000, max(2_000, math.ceil(50 / alpha))))
        seq = [self._seed, n, round(alpha * 1e9), *metric.encode()]
        rng = np.random.default_rng(seq)
        p = self._fine.counts / self.count
        # a new value falls outside the range of m baseline values with probability 1/(m+1)
        # per side; windows must land in the (baseline-empty) outlier bins that often, or
        # metrics sensitive to them (Jensen-Shannon) get too low a critical value
        p_window = p.copy()
        if self._outliers == "explicit":
            for side in (0, -1):
                if p_window[side] == 0:
                    p_window[side] = 1.0 / (self.count + 1)
            p_window /= p_window.sum()
        windows = rng.multinomial(n, p_window, size=reps)
        bases = rng.multinomial(self.count, p, size=reps)
        if metric == "wasserstein":
            cw = self._cdfs_at_edges(windows)
            cb = self._cdfs_at_edges(bases)
            scores = np.asarray(dist.wasserstein_binned(self._fine.edges, cb, cw))
        else:
            wd = self.coarsen(windows) / n
            bd = self.coarsen(bases) / self.count
            scores = np.asarray(_COARSE_FUNCS[metric](bd, wd))
        return float(np.quantile(scores, 1.0 - alpha, method="higher"))

    # -- persistence ---------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """JSON-friendly dict; :meth:`from_json` rebuilds an equal baseline.

        >>> sorted(Baseline.from_values([1.0, 2.0]).to_json())
        ['bins', 'edges', 'fine_counts', 'fine_edges', 'format', 'outliers', 'sample', 'seed']
        """
        return {
            "format": _FORMAT,
            "bins": self._bins,
            "outliers": self._outliers,
            "edges": self._edges.tolist(),
            "fine_edges": self._fine.edges.tolist(),
            "fine_counts": self._fine.counts.tolist(),
            "sample": self._sample.tolist(),
            "seed": self._seed,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Baseline:
        """Inverse of :meth:`to_json`.

        >>> b = Baseline.from_values([1.0, 2.0, 3.0, 4.0])
        >>> Baseline.from_json(b.to_json()) == b
        True
        """
        if data.get("format") != _FORMAT:
            raise ValueError(f"data.format: unsupported baseline format {data.get('format')!r}")
        return cls(
            bins=data["bins"],
            outliers=data["outliers"],
            edges=data["edges"],
            fine_edges=data["fine_edges"],
            fine_counts=data["fine_counts"],
            sample=data["sample"],
            seed=int(data.get("seed", 0)),
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Baseline):
            return NotImplemented
        return (
            self._bins == other._bins
            and self._outliers == other._outliers
            and self._seed == other._seed
            and np.array_equal(self._edges, other._edges)
            and self._fine == other._fine
            and np.array_equal(self._sample, other._sample)
        )

    __hash__ = None  # type: ignore[assignment]

    def __getstate__(self) -> dict[str, Any]:
        return self.to_json()

    def __setstate__(self, state: dict[str, Any]) -> None:
        other = Baseline.from_json(state)
        self.__dict__.update(other.__dict__)

    def __repr__(self) -> str:
        return (
            f"Baseline(count={self.count}, bins={self._bins!r}, num_bins={self.num_bins}, "
            f"outliers={self._outliers!r}, fine_bins={self.num_fine_bins})"
        )


_COARSE_FUNCS = {
    "psi": dist._psi_array,
    "maxdiff": lambda b, w: np.max(np.abs(w - b), axis=-1),
    "sumdiff": lambda b, w: 0.5 * np.sum(np.abs(w - b), axis=-1),
    "jensenshannon": dist._js_array,
    "hellinger": dist._hellinger_array,
}


def _coarse_metric(metric: str, bd: NDArray[np.float64], wd: NDArray[np.float64]) -> float:
    return float(_COARSE_FUNCS[metric](bd, wd))
