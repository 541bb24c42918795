"""The one compile step: a canonical spec becomes what the monitor and the worker run.

``deploy`` validates a spec (:mod:`driftline.spec`); this module decides what a deployed,
canonical spec means at run time, so the live monitor, ``driftline replay`` and the worker
cannot read one spec differently:

* **monitor plans** (:func:`plans_from_spec`): per alert an :class:`AlertPlan`, per assay an
  :class:`AssayPlan` whose :class:`DetectorBaseline` binds the baseline, the metric (with
  what it needs from a window, see :mod:`driftline.detectors._registry`) and thresholds;
* **worker plan** (:func:`worker_plan`): the models to load (champion first, by hash), the
  validations, the champion's tensors and the options; the worker binds loaded models to it
  (``streams._worker_source.runtime_from_canonical``). A pipeline without models has no
  model to load: its plan carries the ``source`` the worker reads predictions from instead
  (``streams._worker_external``);
* the spec **version** (:func:`spec_version`) every event carries.

It sits below ``streams/`` and imports nothing from it.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import orjson

from driftline.expressions import AlertCondition, to_json

__all__ = [
    "AlertPlan",
    "AssayBaseline",
    "AssayPlan",
    "DetectorBaseline",
    "ScanPlan",
    "WorkerModel",
    "WorkerPlan",
    "plans_from_spec",
    "spec_version",
    "worker_plan",
]


def _digest(*parts: Any) -> str:
    return hashlib.sha256(orjson.dumps(parts, option=orjson.OPT_SERIALIZE_NUMPY)).hexdigest()[:8]


# ---------------------------------------------------------------------------- monitor plans


class AssayBaseline(Protocol):
    """What an assay needs from a baseline: a fine grid to count on, and a comparison."""

    @property
    def num_fine_bins(self) -> int: ...

    def fine_index(self, values: np.ndarray) -> np.ndarray: ...

    def compare_counts(self, fine_counts: np.ndarray) -> Any: ...

    def p_value(self, fine_counts: np.ndarray, test: str) -> float: ...


@dataclass(frozen=True)
class DetectorBaseline:
    """A :class:`driftline.detectors.Baseline` with the assay's metric and thresholds."""

    baseline: Any
    metric: str = "psi"
    thresholds: Mapping[str, float] | None = None

    @property
    def num_fine_bins(self) -> int:
        return int(self.baseline.num_fine_bins)

    def fine_index(self, values: np.ndarray) -> np.ndarray:
        return np.asarray(self.baseline.fine_index(values))

    def compare_counts(self, fine_counts: np.ndarray) -> Any:
        hist = self.baseline.histogram_from_counts(fine_counts)
        thr = None if self.thresholds is None else dict(self.thresholds)
        return self.baseline.compare(hist, metric=self.metric, thresholds=thr)

    @property
    def needs(self) -> str:
        """The window form the metric needs (see :mod:`driftline.detectors._registry`)."""
        from driftline.detectors import needs

        return needs(self.metric)

    def compare_sample(self, values: np.ndarray) -> Any:
        """Compare a window's raw-value sample with the baseline (metrics needing raw values)."""
        thr = None if self.thresholds is None else dict(self.thresholds)
        return self.baseline.compare(values, metric=self.metric, thresholds=thr)

    def p_value(self, fine_counts: np.ndarray, test: str) -> float:
        """p-value of ``test`` (a p-value metric) for these fine counts against the baseline."""
        hist = self.baseline.histogram_from_counts(fine_counts)
        p = self.baseline.compare(hist, metric=test, thresholds={"alpha": 0.5}).p_value
        return 1.0 if p is None else float(p)


@dataclass(frozen=True)
class AlertPlan:
    name: str
    condition: AlertCondition
    for_ms: int = 0
    repeat_ms: int = 0
    severity: str = "warning"
    notify: tuple[str, ...] = ()

    @property
    def width_ms(self) -> int:
        return self.condition.width_ms

    @functools.cached_property
    def counter(self) -> str:
        """Counter name in bucket hashes: changes when what is counted changes."""
        c = self.condition
        return f"{self.name}@{_digest(c.aggregate, to_json(c.inner), c.interval_ms)}"

    @property
    def interval_ms(self) -> int:
        return self.condition.interval_ms


@dataclass(frozen=True)
class AssayPlan:
    name: str
    iopath: Any
    baseline: AssayBaseline
    width_ms: int
    interval_ms: int
    metric: str
    notify: tuple[str, ...] = ()
    scan: ScanPlan | None = None
    for_ms: int = 0
    repeat_ms: int = 0
    #: Severity of the ``alert`` level; the ``warning`` level is always ``warning``.
    severity: str = "critical"

    @property
    def span_ms(self) -> int:
        """How far back a window end reaches: the width, times the largest scan scale."""
        return self.width_ms * (max(self.scan.scales) if self.scan else 1)


@dataclass(frozen=True)
class ScanPlan:
    """An assay's scan: at each window, the merged last ``s`` windows for ``s`` in ``scales``.

    Unlike :class:`driftline.detectors.WindowScan`, which forgets its windows after an alarm,
    the monitor's scan is a pure function of the last ``max(scales)`` windows, so replay
    computes the same results from the topic alone. Each window still alarms with probability
    at most ``alpha`` without drift (the union bound does not need the forgetting); while drift
    lasts, the merged windows keep it in view, so an assay resolves up to ``max(scales)``
    windows after the drift ends.
    """

    test: str = "mean"
    alpha: float = 0.003
    scales: tuple[int, ...] = (1, 2, 4, 8)


def _baseline_for(assay: Any, values: np.ndarray) -> DetectorBaseline:
    from driftline.detectors import Baseline

    bins = dict(getattr(assay, "bins", None) or {})
    base = Baseline.from_values(
        values,
        bins=str(bins.get("mode", "quantile")),
        num_bins=int(bins.get("count", 5)),
        edges=bins.get("edges"),
        outliers=str(bins.get("outliers", "explicit")),
    )
    thresholds = dict(getattr(assay, "thresholds", None) or {}) or None
    return DetectorBaseline(base, str(assay.metric), thresholds)


def _scan_plan(scan: Mapping[str, Any] | None) -> ScanPlan | None:
    if not scan:
        return None
    return ScanPlan(str(scan["test"]), float(scan["alpha"]), tuple(int(k) for k in scan["scales"]))


def plans_from_spec(
    spec: Any, baseline_values: Callable[[Any], np.ndarray]
) -> tuple[list[AlertPlan], list[AssayPlan]]:
    """Alert and assay plans of a :class:`~driftline.spec.PipelineSpec`.

    ``baseline_values(assay_spec)`` returns the baseline values of one assay (from its file,
    inline values, or the pipeline's history).
    """
    alerts = [
        AlertPlan(
            name=name,
            condition=a.condition,
            for_ms=int(getattr(a, "for_ms", 0) or 0),
            repeat_ms=int(getattr(a, "repeat_ms", 0) or 0),
            severity=str(getattr(a, "severity", "warning") or "warning"),
            notify=tuple(getattr(a, "notify", ()) or ()),
        )
        for name, a in sorted(spec.alerts.items())
    ]
    assays = [
        AssayPlan(
            name=name,
            iopath=y.iopath,
            baseline=_baseline_for(y, np.asarray(baseline_values(y), dtype=np.float64)),
            width_ms=int(y.window_width_ms),
            interval_ms=int(y.window_interval_ms),
            metric=str(y.metric),
            notify=tuple(getattr(y, "notify", ()) or ()),
            scan=_scan_plan(getattr(y, "scan", None)),
            for_ms=int(getattr(y, "for_ms", 0) or 0),
            repeat_ms=int(getattr(y, "repeat_ms", 0) or 0),
            severity=str(getattr(y, "severity", "critical") or "critical"),
        )
        for name, y in sorted(spec.assays.items())
    ]
    return alerts, assays


# ---------------------------------------------------------------------------- worker runtime


def spec_version(canonical: Mapping[str, Any]) -> str:
    """The version of a canonical spec: ``sha256:`` of its sorted-key JSON.

    >>> spec_version({"name": "fraud"})
    'sha256:...'
    """
    raw = orjson.dumps(dict(canonical), option=orjson.OPT_SORT_KEYS)
    return "sha256:" + hashlib.sha256(raw).hexdigest()


@dataclass(frozen=True)
class WorkerModel:
    """One model step as the worker runs it: its stored file, by spec name and hash."""

    name: str
    sha256: str
    path: Path
    shadow: bool


@dataclass(frozen=True)
class WorkerPlan:
    """What the worker runs for one deployed spec version (models not loaded yet).

    ``models`` has the champion first; ``validations`` are the row expressions by name and
    ``tensor_names`` resolves ``m.outputs["name"]`` in them; ``champion`` describes the
    champion's tensors (how requests are fed). ``source`` is set for a pipeline without
    models (:class:`~driftline.spec.SourceSpec`): ``models`` is then empty and ``champion``
    describes the external model's declared tensors.
    """

    name: str
    version: str
    models: tuple[WorkerModel, ...]
    validations: Mapping[str, Any]
    tensor_names: Mapping[tuple[str, str], list[str]]
    champion: Any
    allow_nan: bool
    max_message_bytes: int
    record_inputs: bool
    source: Any = None
    #: The champion's inputs results carry, by name (``None``: all, when ``record_inputs``).
    recorded_inputs: tuple[str, ...] | None = None
    #: ``driftline`` or ``v2`` (results as Open Inference Protocol responses).
    result_format: str = "driftline"


def worker_plan(canonical: Mapping[str, Any], resolve_model: Callable[[str], Path]) -> WorkerPlan:
    """The worker's plan of a canonical spec; ``resolve_model(sha256)`` finds stored models.

    Raises :class:`~driftline.errors.SpecError` for a malformed spec and
    :class:`~driftline.errors.ModelError` for a model missing from the store.
    """
    from driftline.errors import ModelError
    from driftline.spec import spec_from_canonical

    spec = spec_from_canonical(canonical, resolve_model=resolve_model)
    record_inputs, recorded_inputs = spec.recorded_inputs()
    models = []
    for m in () if spec.source is not None else (spec.champion, *spec.shadows):
        if m.path is None or m.sha256 is None:
            raise ModelError(f"model {m.name!r} of pipeline {spec.name!r} has no stored file")
        models.append(WorkerModel(m.name, m.sha256, m.path, m.shadow))
    return WorkerPlan(
        name=spec.name,
        version=spec_version(canonical),
        models=tuple(models),
        validations=dict(spec.validations),
        tensor_names=spec.tensor_names(),
        champion=spec.champion.info,
        allow_nan=spec.options.allow_nan,
        max_message_bytes=spec.options.max_message_bytes,
        record_inputs=record_inputs,
        source=spec.source,
        recorded_inputs=recorded_inputs,
        result_format=spec.options.result_format,
    )
