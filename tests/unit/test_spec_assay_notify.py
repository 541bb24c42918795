"""Assays notify like alerts: ``notify``, ``for``, ``repeat`` and ``severity`` in YAML and SDK."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from driftline import notify
from driftline.compile import plans_from_spec
from driftline.errors import SpecError
from driftline.models import inspect_model
from driftline.spec import (
    PipelineBuilder,
    load_baseline_values,
    spec_from_canonical,
    spec_from_dict,
)

pytestmark = pytest.mark.unit

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fraud"


def _example() -> dict[str, Any]:
    data = yaml.safe_load((EXAMPLE / "pipeline.yaml").read_text())
    assert isinstance(data, dict)
    return data


def _with(**assay: Any) -> dict[str, Any]:
    data = _example()
    data["assays"]["score_drift"].update(assay)
    return data


def test_assay_notification_settings_reach_the_monitor_plan() -> None:
    data = _with(
        notify=["webhook:pager", "email:ops@example.com", "slack:drift"],
        **{"for": "2m", "repeat": "1h", "severity": "warning"},
    )
    spec = spec_from_dict(data, EXAMPLE)
    y = spec.assays["score_drift"]
    assert y.notify == ("email:ops@example.com", "slack:drift", "webhook:pager")
    assert (y.for_ms, y.repeat_ms, y.severity) == (120_000, 3_600_000, "warning")
    rebuilt = spec_from_canonical(orjson.loads(spec.canonical_json()))
    assert rebuilt.version == spec.version
    r = rebuilt.assays["score_drift"]
    assert (r.notify, r.for_ms, r.repeat_ms, r.severity) == (
        y.notify,
        y.for_ms,
        y.repeat_ms,
        y.severity,
    )
    _, [plan] = plans_from_spec(rebuilt, lambda a: load_baseline_values(a, EXAMPLE))
    assert plan.notify == y.notify
    assert (plan.for_ms, plan.repeat_ms, plan.severity) == (120_000, 3_600_000, "warning")


def test_defaults_keep_the_versions_of_specs_written_before() -> None:
    plain = spec_from_dict(_example(), EXAMPLE)
    y = plain.assays["score_drift"]
    assert (y.notify, y.for_ms, y.repeat_ms, y.severity) == ((), 0, None, "critical")
    canonical = orjson.loads(plain.canonical_json())["assays"]["score_drift"]
    assert not {"notify", "for_ms", "repeat_ms", "severity"} & set(canonical)
    assert spec_from_dict(_with(notify=["email:ops@example.com"]), EXAMPLE).version != (
        plain.version
    )


@pytest.mark.parametrize(
    ("assay", "where", "message"),
    [
        ({"notify": ["pager:ops"]}, "assays.score_drift.notify[0]", "use email:ADDRESS"),
        ({"notify": ["email:not-an-address"]}, "assays.score_drift.notify[0]", "not an email"),
        ({"severity": "fatal"}, "assays.score_drift.severity", "'fatal' is not one of"),
        ({"for": "soon"}, "assays.score_drift.for", "soon"),
        ({"repeat": "0s"}, "assays.score_drift.repeat", "0s"),
    ],
)
def test_bad_notification_settings_name_the_field(
    assay: dict[str, Any], where: str, message: str
) -> None:
    with pytest.raises(SpecError) as info:
        spec_from_dict(_with(**assay), EXAMPLE)
    assert info.value.field == where
    assert message in str(info.value)


def test_assays_may_notify_stdout() -> None:
    """``stdout`` is a bridge channel, and the one target grammar accepts it."""
    spec = spec_from_dict(_with(notify=["stdout", "email:ops@example.com"]), EXAMPLE)
    assert spec.assays["score_drift"].notify == ("email:ops@example.com", "stdout")


def test_builder_and_yaml_compile_assay_notify_the_same() -> None:
    ccfraud = inspect_model(EXAMPLE / "models" / "ccfraud.onnx", "ccfraud")
    built = (
        PipelineBuilder("fraud", base_dir=EXAMPLE)
        .add_model_step(ccfraud)
        .add_assay(
            "score_drift",
            ccfraud.outputs[0][0],
            baseline={"file": "data/baseline.csv", "column": "score"},
            notify=[notify.Email(to="ops@example.com"), notify.Webhook(name="pager")],
            for_="2m",
            repeat="1h",
        )
        .build()
    )
    data = {
        "name": "fraud",
        "models": [{"name": "ccfraud", "path": "models/ccfraud.onnx"}],
        "assays": {
            "score_drift": {
                "iopath": "ccfraud.outputs[0][0]",
                "baseline": {"file": "data/baseline.csv", "column": "score"},
                "window": {"width": "5m", "interval": "1m"},
                "notify": ["webhook:pager", "email:ops@example.com"],
                "for": "2m",
                "repeat": "1h",
            }
        },
    }
    assert built.canonical_json() == spec_from_dict(data, EXAMPLE).canonical_json()
