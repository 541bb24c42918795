"""The spec's ``performance:`` section: validation, canonical form, SDK builder."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import yaml

from driftline.errors import SpecError
from driftline.expressions import ModelRef
from driftline.performance import Calibrator
from driftline.spec import PipelineBuilder, spec_from_canonical, spec_from_dict

pytestmark = pytest.mark.unit

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "fraud"

QUALITY: dict[str, Any] = {
    "task": "binary",
    "prediction": "ccfraud.outputs[0][0]",
    "threshold": 0.5,
    "window": {"width": "1h", "interval": "5m"},
    "horizon": "7d",
    "estimate": "cbpe",
    "alerts": {
        "accuracy_drop": {
            "when": "accuracy < 0.9",
            "min_labeled": 200,
            "notify": ["email:ops@example.com"],
        }
    },
}


def doc(**perf: Any) -> dict[str, Any]:
    data = yaml.safe_load((EXAMPLE / "pipeline.yaml").read_text())
    data["performance"] = perf or {"quality": copy.deepcopy(QUALITY)}
    return data


def test_issue_example_compiles() -> None:
    spec = spec_from_dict(doc(), EXAMPLE)
    p = spec.performance["quality"]
    assert (p.task, p.threshold, p.window_width_ms, p.window_interval_ms) == (
        "binary",
        0.5,
        3_600_000,
        300_000,
    )
    assert p.horizon_ms == 7 * 86_400_000 and p.estimate == "cbpe" and p.calibrators == ()
    a = p.alerts["accuracy_drop"]
    assert (a.metric, a.op, a.value, a.min_labeled, a.notify) == (
        "accuracy",
        "<",
        0.9,
        200,
        ("email:ops@example.com",),
    )
    assert str(p.prediction[0]) == "ccfraud.outputs[0][0]"


def test_horizon_defaults_to_seven_days() -> None:
    q = copy.deepcopy(QUALITY)
    del q["horizon"]
    assert spec_from_dict(doc(quality=q), EXAMPLE).performance["quality"].horizon_ms == 604_800_000


def test_canonical_round_trip_and_versions_of_specs_without_it() -> None:
    plain = yaml.safe_load((EXAMPLE / "pipeline.yaml").read_text())
    plain.pop("performance", None)  # the example declares one; this is about specs without
    without = spec_from_dict(plain, EXAMPLE)
    assert "performance" not in without.to_canonical()
    spec = spec_from_dict(doc(), EXAMPLE)
    canon = spec.to_canonical()
    assert canon["performance"]["quality"]["alerts"]["accuracy_drop"]["when"] == "accuracy < 0.9"
    again = spec_from_canonical(orjson.loads(spec.canonical_json()))
    assert again.performance == spec.performance
    assert again.version == spec.version != without.version


def test_reference_file_fits_a_calibrator_kept_in_the_canonical_form(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    s = rng.uniform(size=500)
    y = (rng.uniform(size=500) < s**2).astype(int)
    (tmp_path / "ref.csv").write_text(
        "score,label\n" + "\n".join(f"{a},{b}" for a, b in zip(s, y, strict=True))
    )
    q = copy.deepcopy(QUALITY)
    q["reference"] = {"file": str(tmp_path / "ref.csv"), "score": "score", "label": "label"}
    spec = spec_from_dict(doc(quality=q), EXAMPLE)
    (cal,) = spec.performance["quality"].calibrators
    assert Calibrator.from_dict(cal) == Calibrator.fit(s, y.astype(float))
    again = spec_from_canonical(orjson.loads(spec.canonical_json()))
    assert again.performance["quality"].calibrators == (cal,)
    assert again.version == spec.version


def test_multiclass_and_regression() -> None:
    multi = {
        "task": "multiclass",
        "prediction": ["ccfraud.outputs[0][0]", "1 - ccfraud.outputs[0][0]"],
        "classes": ["ok", "fraud"],
        "window": {"width": "10m"},
        "estimate": "cbpe",
        "alerts": {"macro": "macro_f1 < 0.5", "est": "estimated.accuracy < 0.8"},
    }
    reg = {"task": "regression", "prediction": "ccfraud.outputs[0][0]", "window": {"width": "1h"}}
    spec = spec_from_dict(doc(multi=multi, reg=reg), EXAMPLE)
    m = spec.performance["multi"]
    assert m.classes == ("ok", "fraud") and len(m.prediction) == 2
    assert m.window_interval_ms == m.window_width_ms == 600_000
    assert m.alerts["est"].estimated and m.alerts["est"].metric == "accuracy"
    assert spec.performance["reg"].task == "regression"


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"task": "ranking"}, "performance.quality.task", "not one of"),
        ({"prediction": "nope.outputs[0][0]"}, "performance.quality.prediction", "unknown model"),
        ({"prediction": ["ccfraud.outputs[0][0]"] * 2}, "performance.quality.prediction", "one"),
        ({"threshold": "high"}, "performance.quality.threshold", "expected a number"),
        ({"window": {"width": "1h", "interval": "7m"}}, "performance.quality.window", "multiple"),
        ({"horizon": "5m"}, "performance.quality.horizon", "shorter than the window"),
        ({"estimate": "dle"}, "performance.quality.estimate", "use cbpe"),
        ({"bins": 0}, "performance.quality.bins", "from 1 to 10000"),
        ({"label_index": -1}, "performance.quality.label_index", "integer >= 0"),
        ({"label_index": "first"}, "performance.quality.label_index", "which element"),
        ({"label_index": True}, "performance.quality.label_index", "integer >= 0"),
        ({"classes": 3}, "performance.quality.classes", "only multiclass"),
        ({"colour": 1}, "performance.quality.colour", "unknown field"),
        (
            {"alerts": {"a": {"when": "accuracy <"}}},
            "performance.quality.alerts.a.when",
            "<metric> <op> <number>",
        ),
        (
            {"alerts": {"a": {"when": "mae > 1"}}},
            "performance.quality.alerts.a.when",
            "unknown metric 'mae'",
        ),
        (
            {"alerts": {"a": {"when": "f1 < 0.5", "min_labeled": -1}}},
            "performance.quality.alerts.a.min_labeled",
            "≥ 0",
        ),
        (
            {"alerts": {"a": {"when": "f1 < 0.5", "notify": ["pager:x"]}}},
            "performance.quality.alerts.a.notify[0]",
            "",
        ),
        (
            {"alerts": {"high_fraud_5m": "f1 < 0.5"}},
            "performance.quality.alerts.high_fraud_5m",
            "duplicate name",
        ),
        ({"reference": {"file": "x.csv", "score": "s"}, "estimate": None}, "", "only used"),
    ],
)
def test_errors_name_the_field(change: dict[str, Any], field: str, words: str) -> None:
    q = copy.deepcopy(QUALITY)
    q.update(change)
    q = {k: v for k, v in q.items() if v is not None}
    with pytest.raises(SpecError) as err:
        spec_from_dict(doc(quality=q), EXAMPLE)
    if field:
        assert err.value.field == field, str(err.value)
    assert words in str(err.value)


def test_estimated_alert_needs_cbpe_and_regression_has_no_cbpe() -> None:
    q = copy.deepcopy(QUALITY)
    del q["estimate"]
    q["alerts"] = {"e": "estimated.accuracy < 0.9"}
    with pytest.raises(SpecError, match="need estimate: cbpe"):
        spec_from_dict(doc(quality=q), EXAMPLE)
    reg = {
        "task": "regression",
        "prediction": "ccfraud.outputs[0][0]",
        "window": {"width": "1h"},
        "estimate": "cbpe",
    }
    with pytest.raises(SpecError, match="classifiers"):
        spec_from_dict(doc(reg=reg), EXAMPLE)


def test_builder_add_performance_compiles_like_yaml() -> None:
    m = ModelRef("ccfraud")
    b = PipelineBuilder("fraud", base_dir=EXAMPLE)
    b.add_model_step(type("M", (), {"name": "ccfraud", "path": EXAMPLE / "models/ccfraud.onnx"}))
    b.add_performance(
        "quality",
        "binary",
        m.outputs[0][0],
        window={"width": "1h", "interval": "5m"},
        threshold=0.5,
        estimate="cbpe",
        alerts={
            "accuracy_drop": {
                "when": "accuracy < 0.9",
                "min_labeled": 200,
                "notify": ["email:ops@example.com"],
            }
        },
    )
    built = b.build().performance["quality"]
    yaml_doc = {
        "name": "fraud",
        "models": [{"name": "ccfraud", "path": "models/ccfraud.onnx"}],
        "performance": {"quality": QUALITY},
    }
    assert built == spec_from_dict(yaml_doc, EXAMPLE).performance["quality"]
    with pytest.raises(SpecError, match="duplicate name"):
        b.add_performance("quality", "binary", m.outputs[0][0])


def test_label_index_is_kept_and_leaves_specs_without_it_unchanged() -> None:
    plain = spec_from_dict(doc(), EXAMPLE)
    assert "label_index" not in plain.to_canonical()["performance"]["quality"]
    assert plain.performance["quality"].label_index is None
    q = copy.deepcopy(QUALITY)
    q["label_index"] = 2
    spec = spec_from_dict(doc(quality=q), EXAMPLE)
    assert spec.performance["quality"].label_index == 2
    assert spec.to_canonical()["performance"]["quality"]["label_index"] == 2
    again = spec_from_canonical(orjson.loads(spec.canonical_json()))
    assert again.performance == spec.performance and again.version == spec.version
    assert spec.version != plain.version
    m = ModelRef("ccfraud")
    b = PipelineBuilder("fraud", base_dir=EXAMPLE)
    b.add_model_step(type("M", (), {"name": "ccfraud", "path": EXAMPLE / "models/ccfraud.onnx"}))
    b.add_performance("quality", "binary", m.outputs[0][0], label_index=2)
    assert b.build().performance["quality"].label_index == 2
