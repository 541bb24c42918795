"""Drift detectors: PSI, KS, distances, MMD, sequential and outlier detectors, thresholds.

Window detectors compare a window with a :class:`Baseline` and return a frozen
:class:`DriftResult`; :class:`WindowScan` tests the merged recent windows at each closed
window, for shifts too small for one window; sequential detectors consume a stream of values;
outlier scorers rate single rows. All are pure numpy/scipy (river for its adapters), seeded and
picklable.

>>> import numpy as np
>>> from driftline.detectors import Baseline
>>> rng = np.random.default_rng(0)
>>> base = Baseline.from_values(rng.normal(size=5000))
>>> base.compare(rng.normal(1.0, 1.0, size=500), metric="ks").status
'alert'
"""

from __future__ import annotations

from driftline.detectors._baseline import Baseline
from driftline.detectors._distances import (
    PSI_FLOOR,
    hellinger,
    jensenshannon,
    maxdiff,
    psi,
    sumdiff,
    wasserstein,
)
from driftline.detectors._histogram import Histogram
from driftline.detectors._mmd import KernelMMD, mmd
from driftline.detectors._outliers import HalfSpaceTrees, Mahalanobis, OutlierResult
from driftline.detectors._registry import (
    FINE_HISTOGRAM,
    RAW_SAMPLE,
    REGISTRY,
    VECTOR,
    MetricInfo,
    check_live,
    live_metrics,
    needs,
)
from driftline.detectors._result import DriftResult, Status
from driftline.detectors._scan import SCAN_TESTS, ScanResult, WindowScan, validate_scan
from driftline.detectors._sequential import (
    ADWIN,
    CUSUM,
    KSWIN,
    PageHinkley,
    SequentialDetector,
    SequentialResult,
)
from driftline.detectors._tests import chi2, ks
from driftline.detectors._thresholds import (
    DEFAULT_THRESHOLDS,
    METRICS,
    P_VALUE_METRICS,
    psi_critical_value,
    validate_thresholds,
)

__all__ = [
    "ADWIN",
    "CUSUM",
    "DEFAULT_THRESHOLDS",
    "FINE_HISTOGRAM",
    "KSWIN",
    "METRICS",
    "PSI_FLOOR",
    "P_VALUE_METRICS",
    "RAW_SAMPLE",
    "REGISTRY",
    "SCAN_TESTS",
    "VECTOR",
    "Baseline",
    "DriftResult",
    "HalfSpaceTrees",
    "Histogram",
    "KernelMMD",
    "Mahalanobis",
    "MetricInfo",
    "OutlierResult",
    "PageHinkley",
    "ScanResult",
    "SequentialDetector",
    "SequentialResult",
    "Status",
    "WindowScan",
    "check_live",
    "chi2",
    "hellinger",
    "jensenshannon",
    "ks",
    "live_metrics",
    "maxdiff",
    "mmd",
    "needs",
    "psi",
    "psi_critical_value",
    "sumdiff",
    "validate_scan",
    "validate_thresholds",
    "wasserstein",
]
