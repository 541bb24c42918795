"""What each window metric needs from a window: the one contract the monitor and spec share.

A metric is computed from one of three window forms:

* ``fine histogram``: counts on the baseline's fine grid. The monitor folds them per bucket
  in Redis; buckets add up to any window, so memory does not grow with traffic.
* ``raw sample``: a bounded sample of the window's values. The monitor keeps, per bucket,
  the values with the smallest hash of ``(id, row)`` (a bottom-k sample), so a window's
  sample is the same whichever batches and processes fed it, and replay reproduces it.
* ``vector``: whole feature vectors per row (multivariate tests); not kept by the monitor
  yet, so a spec cannot ask for one.

The spec validator asks :func:`check_live` whether an assay's metric can run in the monitor,
so ``deploy`` accepts only what the monitor computes.

>>> needs("psi"), needs("mmd")
('fine histogram', 'raw sample')
>>> sorted(live_metrics()) == sorted(METRICS)
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from driftline.detectors._thresholds import METRICS, P_VALUE_METRICS

__all__ = [
    "FINE_HISTOGRAM",
    "MONITOR_FORMS",
    "RAW_SAMPLE",
    "REGISTRY",
    "VECTOR",
    "MetricInfo",
    "check_live",
    "live_metrics",
    "needs",
]

WindowForm = Literal["fine histogram", "raw sample", "vector"]
FINE_HISTOGRAM: WindowForm = "fine histogram"
RAW_SAMPLE: WindowForm = "raw sample"
VECTOR: WindowForm = "vector"

#: The window forms ``driftline monitor`` keeps (and ``driftline replay`` recomputes).
MONITOR_FORMS: frozenset[str] = frozenset({FINE_HISTOGRAM, RAW_SAMPLE})


@dataclass(frozen=True)
class MetricInfo:
    """One window metric: its name, the window form it needs, and whether it has a p-value."""

    name: str
    needs: WindowForm
    p_value: bool

    @property
    def threshold_kinds(self) -> tuple[str, ...]:
        """The kinds of thresholds it takes: ``score`` (warning/alert), ``alpha``, ``auto``."""
        return ("score", "alpha", "auto") if self.p_value else ("score", "auto")


def _registry() -> dict[str, MetricInfo]:
    out: dict[str, MetricInfo] = {}
    for name in METRICS:
        form: WindowForm = RAW_SAMPLE if name == "mmd" else FINE_HISTOGRAM
        out[name] = MetricInfo(name, form, name in P_VALUE_METRICS)
    return out


#: Every window metric ``Baseline.compare`` knows, with what it needs.
REGISTRY: dict[str, MetricInfo] = _registry()


def needs(metric: str) -> WindowForm:
    """The window form ``metric`` is computed from; ``ValueError`` for an unknown metric."""
    info = REGISTRY.get(metric)
    if info is None:
        raise ValueError(f"metric: {metric!r} is not one of {', '.join(REGISTRY)}")
    return info.needs


def live_metrics() -> tuple[str, ...]:
    """The metrics the monitor can compute (their window form is one it keeps)."""
    return tuple(m for m, info in REGISTRY.items() if info.needs in MONITOR_FORMS)


def check_live(metric: str) -> None:
    """Raise ``ValueError`` naming the metric and the fix if the monitor cannot compute it.

    >>> check_live("ks")
    >>> check_live("energy")
    Traceback (most recent call last):
    ...
    ValueError: unknown metric 'energy'; use one of psi, maxdiff, sumdiff, ks, wasserstein, jensenshannon, hellinger, chi2, mmd, mean
    """  # noqa: E501
    info = REGISTRY.get(metric)
    if info is None:
        raise ValueError(f"unknown metric {metric!r}; use one of {', '.join(live_metrics())}")
    if info.needs not in MONITOR_FORMS:
        raise ValueError(
            f"metric {metric!r} needs a {info.needs} per window, which the monitor does not "
            f"keep; use one of {', '.join(live_metrics())}"
        )
