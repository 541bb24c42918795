"""Model performance: realized metrics from joined labels and label-free estimates (CBPE).

Pure code (numpy only): the join in :mod:`driftline.streams.feedback` keeps the mergeable
statistics defined here per window bucket and reads metrics off their sums.
"""

from driftline.performance.cbpe import BinaryEstimator, Calibrator, MulticlassEstimator
from driftline.performance.metrics import (
    DELAY_EDGES_MS,
    ESTIMATED_NAMES,
    METRIC_NAMES,
    BinaryLayout,
    Layout,
    MulticlassLayout,
    RegressionLayout,
    auc_bound,
    fold,
    layout_for,
)

__all__ = [
    "DELAY_EDGES_MS",
    "ESTIMATED_NAMES",
    "METRIC_NAMES",
    "BinaryEstimator",
    "BinaryLayout",
    "Calibrator",
    "Layout",
    "MulticlassEstimator",
    "MulticlassLayout",
    "RegressionLayout",
    "auc_bound",
    "fold",
    "layout_for",
]
