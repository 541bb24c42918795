"""Integer count histograms on fixed edges that add, subtract and merge exactly."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from driftline.detectors._bins import OUTLIER_MODES, bin_index, num_bins_for

__all__ = ["Histogram"]


class Histogram:
    """Counts of values in the bins defined by ``edges`` (see :func:`bin_index` for the rules).

    Histograms are immutable; ``add``, ``subtract`` and ``merge`` return new histograms and
    are exact (int64 counts), so a sliding window is the sum of its bucket histograms and a
    bucket leaving the window is subtracted.

    >>> e = np.array([0.0, 1.0, 2.0])
    >>> a = Histogram.from_values([0.5, 1.5, 7.0], e)
    >>> a.counts.tolist()
    [0, 1, 1, 1]
    >>> b = Histogram.from_values([0.2], e)
    >>> a.add(b).counts.tolist(), a.add(b).subtract(b) == a
    ([0, 2, 1, 1], True)
    """

    __slots__ = ("_counts", "_edges", "_outliers")

    def __init__(self, edges: ArrayLike, counts: ArrayLike, outliers: str = "explicit") -> None:
        if outliers not in OUTLIER_MODES:
            raise ValueError(f"outliers: {outliers!r} is not one of {', '.join(OUTLIER_MODES)}")
        e = np.array(edges, dtype=np.float64)
        if e.ndim != 1 or e.size < 2:
            raise ValueError(f"edges: need a 1-D array of at least two boundaries, got {e!r}")
        raw = np.asarray(counts)
        c = np.array(counts, dtype=np.int64)
        if c.ndim != 1 or not np.array_equal(raw, c):
            raise ValueError("counts: expected a 1-D array of integers")
        expected = num_bins_for(e, outliers)
        if c.size != expected:
            raise ValueError(
                f"counts: {c.size} bins given but edges with outliers={outliers!r} "
                f"define {expected}"
            )
        if np.any(c < 0):
            raise ValueError(f"counts: must be non-negative, got {c.tolist()}")
        e.flags.writeable = False
        c.flags.writeable = False
        self._edges = e
        self._counts = c
        self._outliers = outliers

    @classmethod
    def _trusted(
        cls, edges: NDArray[np.float64], counts: NDArray[np.int64], outliers: str
    ) -> Histogram:
        # for arrays this package built and already checked: skips validation and copies,
        # and shares the (read-only) edges array so compatibility checks are identity checks
        h = cls.__new__(cls)
        counts.flags.writeable = False
        h._edges, h._counts, h._outliers = edges, counts, outliers
        return h

    @classmethod
    def from_values(
        cls, values: ArrayLike, edges: ArrayLike, outliers: str = "explicit"
    ) -> Histogram:
        """Histogram of ``values`` on ``edges`` (vectorized).

        >>> Histogram.from_values([0.5, 1.5, 1.7, -3.0, np.nan], [0.0, 1.0, 2.0]).counts.tolist()
        [2, 1, 2, 0]
        >>> Histogram.from_values([0.5, 1.5, 1.7], [0.0, 1.0, 2.0], "open").counts.tolist()
        [1, 2]
        """
        e = np.asarray(edges, dtype=np.float64)
        idx = bin_index(values, e, outliers)
        return cls(e, np.bincount(idx, minlength=num_bins_for(e, outliers)), outliers)

    @classmethod
    def empty(cls, edges: ArrayLike, outliers: str = "explicit") -> Histogram:
        """A histogram with all counts zero.

        >>> Histogram.empty([0.0, 1.0, 2.0])
        Histogram(total=0, bins=4, outliers='explicit')
        """
        e = np.asarray(edges, dtype=np.float64)
        return cls(e, np.zeros(num_bins_for(e, outliers), dtype=np.int64), outliers)

    @property
    def edges(self) -> NDArray[np.float64]:
        """Bin boundaries (read-only).

        >>> Histogram.empty([0, 1, 2]).edges.tolist()
        [0.0, 1.0, 2.0]
        """
        return self._edges

    @property
    def counts(self) -> NDArray[np.int64]:
        """Count per bin, outlier bins included (read-only int64).

        >>> Histogram.from_values([0.5, 0.7, 9.0], [0.0, 1.0]).counts.tolist()
        [0, 2, 1]
        """
        return self._counts

    @property
    def outliers(self) -> str:
        """Outlier mode: ``explicit`` or ``open``.

        >>> Histogram.empty([0.0, 1.0], outliers="open").outliers
        'open'
        """
        return self._outliers

    @property
    def total(self) -> int:
        """Number of values counted.

        >>> Histogram.from_values([0.5, 0.7, 9.0], [0.0, 1.0]).total
        3
        """
        return int(self._counts.sum())

    def densities(self) -> NDArray[np.float64]:
        """Proportion of the values in each bin (all zeros for an empty histogram).

        >>> Histogram.from_values([0.5, 0.7, 1.5, 9.0], [0.0, 1.0, 2.0]).densities().tolist()
        [0.0, 0.5, 0.25, 0.25]
        >>> Histogram.empty([0.0, 1.0]).densities().tolist()
        [0.0, 0.0, 0.0]
        """
        total = self.total
        if total == 0:
            return np.zeros(self._counts.size)
        return self._counts / total

    def _check_compatible(self, other: Histogram) -> None:
        if not isinstance(other, Histogram):
            raise TypeError(f"expected a Histogram, got {type(other).__name__}")
        if other._edges is self._edges and other._outliers == self._outliers:
            return
        if other._outliers != self._outliers or not np.array_equal(other._edges, self._edges):
            raise ValueError(
                "other: histograms have different edges or outlier modes; only histograms "
                "built on the same baseline grid can be combined"
            )

    def add(self, other: Histogram) -> Histogram:
        """Bin-wise sum of two histograms on the same edges.

        >>> e = [0.0, 1.0, 2.0]
        >>> a, b = Histogram.from_values([0.5, 1.5], e), Histogram.from_values([1.2], e)
        >>> a.add(b).counts.tolist()
        [0, 1, 2, 0]
        """
        self._check_compatible(other)
        return Histogram._trusted(self._edges, self._counts + other._counts, self._outliers)

    def subtract(self, other: Histogram) -> Histogram:
        """Bin-wise difference; raises ``ValueError`` if a count would become negative.

        >>> e = [0.0, 1.0, 2.0]
        >>> a, b = Histogram.from_values([0.5, 1.5, 1.2], e), Histogram.from_values([1.2], e)
        >>> a.subtract(b).counts.tolist()
        [0, 1, 1, 0]
        >>> b.subtract(a)
        Traceback (most recent call last):
        ...
        ValueError: other: subtracting would make bin 1 negative (0 - 1); ...
        """
        self._check_compatible(other)
        diff = self._counts - other._counts
        if np.any(diff < 0):
            bad = int(np.argmax(diff < 0))
            raise ValueError(
                f"other: subtracting would make bin {bad} negative "
                f"({int(self._counts[bad])} - {int(other._counts[bad])}); "
                "only subtract a histogram that was added before"
            )
        return Histogram._trusted(self._edges, diff, self._outliers)

    @classmethod
    def merge(cls, histograms: Iterable[Histogram]) -> Histogram:
        """Sum of any number (at least one) of histograms on the same edges.

        >>> e = [0.0, 1.0]
        >>> Histogram.merge([Histogram.from_values([0.5], e), Histogram.from_values([2.0], e)])
        Histogram(total=2, bins=3, outliers='explicit')
        """
        items = list(histograms)
        if not items:
            raise ValueError("histograms: need at least one histogram to merge")
        first = items[0]
        total = first._counts.copy()
        for h in items[1:]:
            first._check_compatible(h)
            total += h._counts
        return cls._trusted(first._edges, total, first._outliers)

    __add__ = add
    __sub__ = subtract

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Histogram):
            return NotImplemented
        return (
            self._outliers == other._outliers
            and np.array_equal(self._edges, other._edges)
            and np.array_equal(self._counts, other._counts)
        )

    def __hash__(self) -> int:
        return hash((self._outliers, self._edges.tobytes(), self._counts.tobytes()))

    def __repr__(self) -> str:
        return (
            f"Histogram(total={self.total}, bins={self._counts.size}, outliers={self._outliers!r})"
        )

    def __getstate__(self) -> dict[str, Any]:
        return {"edges": self._edges, "counts": self._counts, "outliers": self._outliers}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["edges"], state["counts"], state["outliers"])  # type: ignore[misc]

    def to_json(self) -> dict[str, Any]:
        """JSON-friendly dict; ``Histogram.from_json`` inverts it.

        >>> Histogram.from_values([0.5], [0.0, 1.0]).to_json()
        {'edges': [0.0, 1.0], 'counts': [0, 1, 0], 'outliers': 'explicit'}
        """
        return {
            "edges": self._edges.tolist(),
            "counts": self._counts.tolist(),
            "outliers": self._outliers,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Histogram:
        """Inverse of :meth:`to_json`.

        >>> h = Histogram.from_values([0.5, 1.5, 7.0], [0.0, 1.0, 2.0])
        >>> Histogram.from_json(h.to_json()) == h
        True
        """
        return cls(data["edges"], data["counts"], data.get("outliers", "explicit"))
