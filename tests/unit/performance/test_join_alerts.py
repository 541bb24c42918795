"""Performance alerts: realized (with min_labeled) and estimated, through the alert lifecycle."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import yaml

from driftline.performance import BinaryEstimator, BinaryLayout
from driftline.spec import PerformanceAlertSpec, spec_from_dict
from driftline.streams._feedback_io import Record, result_predictions
from driftline.streams.feedback import Labels, MemoryJoinState, PerformanceJoin, Predictions

pytestmark = pytest.mark.unit

T0 = 1_699_999_980_000  # a minute boundary
MIN = 60_000
EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "fraud"


def make(state: MemoryJoinState, **alerts: PerformanceAlertSpec) -> PerformanceJoin:
    return PerformanceJoin(
        "fraud",
        "quality",
        "sha256:x",
        BinaryLayout(),
        BinaryEstimator(),
        state,
        width_ms=MIN,
        interval_ms=MIN,
        horizon_ms=10**9,
        partitions=1,
        lateness_ms=0,
        alerts=alerts,
    )


def preds(window: int, scores: list[float], offset: int) -> Predictions:
    n = len(scores)
    return Predictions(
        "r",
        [f"w{window}-{i}" for i in range(n)],
        np.zeros(n, dtype=np.int64),
        np.full(n, T0 + window * MIN + 1000),
        np.array(scores),
        np.zeros(n, dtype=np.int64),
        np.arange(offset, offset + n),
    )


def labels(window: int, ys: list[float], offset: int) -> Labels:
    n = len(ys)
    return Labels(
        "f",
        [f"w{window}-{i}" for i in range(n)],
        np.zeros(n, dtype=np.int64),
        np.array(ys),
        np.full(n, T0 + 10 * MIN),
        np.zeros(n, dtype=np.int64),
        np.arange(offset, offset + n),
    )


def cycle(join: PerformanceJoin, wm: int) -> list[dict[str, Any]]:
    closing = join.close(watermark=wm)
    join.confirm(closing)
    return closing.notifications


def test_realized_alert_waits_for_min_labeled_then_fires_and_resolves() -> None:
    state = MemoryJoinState()
    drop = PerformanceAlertSpec("accuracy_drop", "accuracy", "<", 0.9, 3, ("stdout",))
    join = make(state, accuracy_drop=drop)
    join.apply(preds(0, [0.9, 0.9, 0.9, 0.9], 0), None)
    assert cycle(join, T0 + MIN) == []  # closed with no label: not judged
    join.apply(None, labels(0, [1, 0], 0))
    assert cycle(join, T0 + MIN) == []  # two labels (accuracy 0.5) < min_labeled
    join.apply(None, _third(0, 0.0, 2))
    (n,) = cycle(join, T0 + MIN)
    assert (n["state"], n["alert"], n["kind"], n["condition"]) == (
        "firing",
        "accuracy_drop",
        "performance",
        "accuracy < 0.9",
    )
    assert n["value"] == pytest.approx(1 / 3) and n["window"]["end"] == T0 + MIN
    assert n["notify"] == ["stdout"] and n["pipeline"] == "fraud"
    # a restarted process keeps the state: the same window revised again does not re-fire
    again = make(state, accuracy_drop=drop)
    again.apply(None, _third(0, 1.0, 3, ident=3))
    assert cycle(again, T0 + MIN) == []  # 2 of 4 right: still below, still firing
    # the next window is good once labelled: resolved
    again.apply(preds(1, [0.9, 0.1, 0.9], 4), labels(1, [1, 0, 1], 4))
    (r,) = cycle(again, T0 + 2 * MIN)
    assert (r["state"], r["window"]["end"], r["value"]) == ("resolved", T0 + 2 * MIN, 1.0)
    assert r["id"] != n["id"]


def _third(window: int, y: float, offset: int, ident: int = 2) -> Labels:
    return Labels(
        "f",
        [f"w{window}-{ident}"],
        np.zeros(1, dtype=np.int64),
        np.array([y]),
        np.array([T0 + 10 * MIN]),
        np.zeros(1, dtype=np.int64),
        np.array([offset]),
    )


def test_estimated_alert_fires_at_close_before_any_label() -> None:
    est = PerformanceAlertSpec("est_drop", "accuracy", "<", 0.8, 0, (), "critical", True)
    join = make(MemoryJoinState(), est_drop=est)
    join.apply(preds(0, [0.95] * 5, 0), None)
    join.apply(preds(1, [0.55] * 5, 5), None)
    notes = cycle(join, T0 + 2 * MIN)
    assert [(x["state"], x["window"]["end"], x["severity"]) for x in notes] == [
        ("firing", T0 + 2 * MIN, "critical")
    ]
    assert notes[0]["value"] == pytest.approx(0.55)


def test_join_from_spec_runs_on_result_events() -> None:
    data = yaml.safe_load((EXAMPLE / "pipeline.yaml").read_text())
    data["performance"] = {
        "quality": {
            "task": "binary",
            "prediction": "ccfraud.outputs[0][0]",
            "window": {"width": "1m"},
            "estimate": "cbpe",
            "alerts": {
                "acc": {
                    "when": "accuracy < 0.9",
                    "min_labeled": 1,
                    "notify": ["email:ops@example.com"],
                }
            },
        }
    }
    spec = spec_from_dict(copy.deepcopy(data), EXAMPLE)
    join = PerformanceJoin.from_spec(spec, "quality", MemoryJoinState(), partitions=1)
    assert (join.width_ms, join.horizon_ms, join.lateness_ms) == (MIN, 7 * 86_400_000, 5000)
    records = [
        Record(
            "r",
            0,
            i,
            orjson.dumps(
                {"id": f"r{i}", "row": 0, "time": T0 + i, "outputs": {"ccfraud": [[0.2 + 0.7 * i]]}}
            ),
            0,
        )
        for i in range(2)
    ]
    p, skipped = result_predictions(records, spec.performance["quality"].prediction)
    assert p is not None and skipped == 0
    join.apply(p, None)
    lab = Labels(
        "f",
        ["r0", "r1"],
        np.zeros(2, int),
        np.array([1.0, 1.0]),
        np.full(2, T0),
        np.zeros(2, int),
        np.arange(2),
    )
    join.apply(None, lab)
    closing = join.close(watermark=T0 + MIN)
    (e,) = closing.events
    assert e["spec"] == spec.version and e["metrics"]["accuracy"] == 0.5
    assert [n["state"] for n in closing.notifications] == ["firing"]


def test_gauges_show_the_latest_revision_of_the_newest_window() -> None:
    from prometheus_client import REGISTRY

    def value(name: str, **labels: str) -> float | None:
        return REGISTRY.get_sample_value(name, {"pipeline": "fraud", "name": "gauges", **labels})

    join = PerformanceJoin(
        "fraud",
        "gauges",
        "sha256:x",
        BinaryLayout(),
        BinaryEstimator(),
        MemoryJoinState(),
        width_ms=MIN,
        interval_ms=MIN,
        horizon_ms=10**9,
        partitions=1,
        lateness_ms=0,
    )
    join.apply(preds(0, [0.9, 0.2], 0), None)
    cycle(join, T0 + MIN)
    assert value("driftline_performance_revision") == 0
    assert value("driftline_performance_value", metric="predictions") == 2
    acc = value("driftline_performance_value", metric="accuracy")
    assert acc is not None and acc != acc  # nan: no label yet
    assert value("driftline_performance_estimated", metric="accuracy") == pytest.approx(0.85)
    join.apply(None, labels(0, [1, 1], 0))
    cycle(join, T0 + MIN)
    assert value("driftline_performance_revision") == 1
    assert value("driftline_performance_value", metric="accuracy") == 0.5
    assert value("driftline_feedback_events_total", outcome="joined") == 2
