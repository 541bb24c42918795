"""The detector registry: what each metric needs, and the spec accepting only what runs live."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from driftline.detectors import (
    FINE_HISTOGRAM,
    METRICS,
    RAW_SAMPLE,
    REGISTRY,
    VECTOR,
    Baseline,
    MetricInfo,
    check_live,
    live_metrics,
    needs,
)
from driftline.errors import SpecError
from driftline.spec import spec_from_dict

pytestmark = pytest.mark.unit

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "fraud"


def _with_metric(metric: str) -> dict[str, Any]:
    data = yaml.safe_load((EXAMPLE / "pipeline.yaml").read_text())
    data["assays"]["score_drift"].update(metric=metric, thresholds={"auto": 0.01})
    return data  # type: ignore[no-any-return]


def test_every_metric_declares_what_it_needs() -> None:
    assert set(REGISTRY) == set(METRICS)
    assert needs("mmd") == RAW_SAMPLE
    assert {m for m in METRICS if needs(m) == FINE_HISTOGRAM} == set(METRICS) - {"mmd"}
    with pytest.raises(ValueError, match="'energy' is not one of"):
        needs("energy")


def test_the_declared_form_is_what_the_detector_computes_from() -> None:
    base = Baseline.from_values(np.linspace(0, 1, 500))
    hist = base.histogram(np.linspace(0, 1, 50))
    for metric in METRICS:
        if needs(metric) == FINE_HISTOGRAM:
            base.compare(hist, metric=metric, thresholds={"auto": 0.01})
        else:  # a histogram is not enough: that is why the monitor keeps a sample
            with pytest.raises(ValueError, match="raw values"):
                base.compare(hist, metric=metric, thresholds={"auto": 0.01})
            base.compare(np.linspace(0, 1, 50), metric=metric, thresholds={"auto": 0.01})


def test_the_spec_accepts_every_live_metric() -> None:
    for metric in live_metrics():
        assert spec_from_dict(_with_metric(metric), EXAMPLE).assays["score_drift"].metric == metric


def test_the_spec_refuses_a_metric_the_monitor_cannot_compute(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setitem(REGISTRY, "mmd", MetricInfo("mmd", VECTOR, True))
    assert "mmd" not in live_metrics()
    with pytest.raises(ValueError, match="needs a vector per window"):
        check_live("mmd")
    with pytest.raises(SpecError) as info:
        spec_from_dict(_with_metric("mmd"), EXAMPLE)
    assert info.value.field == "assays.score_drift.metric"
    assert "which the monitor does not keep" in str(info.value)
    with pytest.raises(SpecError, match="unknown metric 'psy'"):
        spec_from_dict(_with_metric("psy"), EXAMPLE)
