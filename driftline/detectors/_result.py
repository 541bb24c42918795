"""The frozen result every window detector returns."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

__all__ = ["DriftResult", "Status"]

Status = Literal["ok", "warning", "alert"]


@dataclass(frozen=True)
class DriftResult:
    """Outcome of comparing one window with a baseline.

    ``thresholds`` holds the thresholds actually applied: ``warning``/``alert`` on the score,
    ``alpha``/``warning_alpha`` on the p-value, and for ``auto`` the requested false-alarm
    rate plus the critical value derived for this window (``alert``). ``edges`` and the
    densities are on the baseline's coarse bins. ``details`` holds metric-specific numbers,
    e.g. ``error_bound`` of a binned KS statistic.

    >>> r = DriftResult("psi", 0.02, None, "ok", {"alert": 0.25}, [0.0, 1.0], [0, 1, 0],
    ...                 [0, 1, 0], 10, 100)
    >>> r.to_dict()["status"]
    'ok'
    """

    metric: str
    score: float
    p_value: float | None
    status: Status
    thresholds: dict[str, float]
    edges: list[float]
    baseline_densities: list[float]
    window_densities: list[float]
    window_count: int
    baseline_count: int
    details: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (NaN and infinities become ``None``).

        >>> r = DriftResult("ks", float("nan"), None, "ok", {}, [], [], [], 0, 10)
        >>> r.to_dict()["score"] is None, r.to_dict()["baseline_count"]
        (True, 10)
        """
        d = asdict(self)
        for key in ("score", "p_value"):
            value = d[key]
            if value is not None and not math.isfinite(value):
                d[key] = None
        return d
