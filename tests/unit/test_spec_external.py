"""Pipelines without models (``models: []``): the source and schema checks of ``deploy``."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from driftline.compile import worker_plan
from driftline.errors import SpecError
from driftline.spec import spec_from_canonical, spec_from_dict

pytestmark = pytest.mark.unit

SPEC: dict[str, Any] = {
    "name": "external-fraud",
    "models": [],
    "source": {
        "topic": "mlserver-responses",
        "format": "v2-pairs",
        "requests": "mlserver-requests",
        "model": "ccfraud",
    },
    "inputs": [{"name": "tensor", "shape": [29], "dtype": "float32"}],
    "outputs": [{"name": "probability", "shape": [1], "dtype": "float32"}],
    "validations": {"no_high_fraud": "ccfraud.outputs[0][0] < 0.95"},
    "alerts": {
        "high_fraud": {
            "when": 'count(ccfraud.outputs["probability"][0] > 0.95, "1m", "1s") > 10',
            "notify": ["stdout"],
        }
    },
    "assays": {
        "v3_drift": {
            "iopath": "ccfraud.inputs[0][3]",
            "baseline": {"values": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]},
            "window": {"width": "1m", "interval": "1m"},
        }
    },
}


def _with(**changes: Any) -> dict[str, Any]:
    doc = copy.deepcopy(SPEC)
    for key, value in changes.items():
        if value is None:
            doc.pop(key, None)
        else:
            doc[key] = value
    return doc


def _source(**changes: Any) -> dict[str, Any]:
    source = {**SPEC["source"], **changes}
    return _with(source={k: v for k, v in source.items() if v is not None})


def test_external_spec_round_trips_through_its_canonical_form() -> None:
    spec = spec_from_dict(SPEC)
    canonical = spec.to_canonical()
    assert canonical["models"] == {}
    assert canonical["source"]["format"] == "v2-pairs"
    assert canonical["source"]["inputs"] == [{"name": "tensor", "shape": [29], "dtype": "float32"}]
    again = spec_from_canonical(canonical)
    assert again.version == spec.version
    assert again.source == spec.source
    assert again.champion.name == "ccfraud"
    assert again.tensor_names()[("ccfraud", "outputs")] == ["probability"]


def test_worker_plan_of_an_external_pipeline_has_its_source_and_no_model() -> None:
    canonical = spec_from_dict(SPEC).to_canonical()
    plan = worker_plan(canonical, lambda sha: pytest.fail(f"no model to resolve: {sha}"))
    assert plan.models == ()
    assert plan.source is not None and plan.source.requests == "mlserver-requests"
    assert [t.name for t in plan.champion.outputs] == ["probability"]
    assert set(plan.validations) == {"no_high_fraud"}


def test_source_changes_the_version() -> None:
    a = spec_from_dict(SPEC).version
    b = spec_from_dict(_source(topic="other-responses")).version
    assert a != b


def test_a_driftline_source_needs_no_requests_topic() -> None:
    spec = spec_from_dict(_source(format="driftline", requests=None))
    assert spec.source is not None and spec.source.requests is None


@pytest.mark.parametrize(
    ("doc", "field", "words"),
    [
        (_with(outputs=None), "outputs", "models: []"),
        (_with(inputs=None), "inputs", "models: []"),
        (_with(source=None), "source", "models: []"),
        (_source(format="kserve"), "source.format", "v2-pairs"),
        (_source(requests=None), "source.requests", "pairs them"),
        (_source(format="driftline"), "source.requests", "only v2-pairs"),
        (_source(topic="bad topic"), "source.topic", "Kafka topic name"),
        (_source(model="not-a-name"), "source.model", "identifier"),
        (_source(pair_timeout="0s"), "source.pair_timeout", "longer than zero"),
        (_source(extra=1), "source.extra", "unknown field"),
        (_with(inputs=[{"name": "x", "shape": [0]}]), "inputs[0].shape", "positive"),
        (_with(inputs=[{"name": "x", "shape": 3}]), "inputs[0].shape", "per-row shape"),
        (_with(outputs=[{"name": "p", "shape": [1], "dtype": "str"}]), "outputs[0].dtype", "str"),
        (_with(outputs=[]), "outputs", "non-empty list"),
        (
            _with(inputs=[{"name": "a", "shape": [1]}, {"name": "b", "shape": [1]}]),
            "inputs",
            "one numeric input",
        ),
        (
            _with(outputs=[{"name": "p", "shape": [1]}, {"name": "p", "shape": [2]}]),
            "outputs[1].name",
            "duplicate",
        ),
        (
            _with(validations={"v": "ccfraud.outputs[0][1] < 1"}),
            "validations.v",
            "column 1 out of range",
        ),
        (
            _with(validations={"v": 'ccfraud.outputs["score"][0] < 1'}),
            "validations.v",
            "no output named 'score'",
        ),
        (_with(validations={"v": "other.outputs[0][0] < 1"}), "validations.v", "unknown model"),
        (
            _with(models=[{"name": "m", "path": "m.onnx"}]),
            "source",
            "only a pipeline without models",
        ),
        (_with(models=None), "models", "models: []"),
    ],
)
def test_deploy_refuses_an_external_spec_naming_the_field(
    doc: dict[str, Any], field: str, words: str
) -> None:
    with pytest.raises(SpecError) as info:
        spec_from_dict(doc)
    assert info.value.field == field
    assert words in str(info.value)


def test_models_empty_without_source_names_the_way_out() -> None:
    with pytest.raises(SpecError) as info:
        spec_from_dict({"name": "p", "models": []})
    assert info.value.field == "source"
    assert "source" in str(info.value) and "inputs" in str(info.value)


def test_performance_of_an_external_model_compiles_and_round_trips() -> None:
    doc = _with(
        performance={
            "quality": {
                "task": "binary",
                "prediction": "ccfraud.outputs[0][0]",
                "window": {"width": "1h", "interval": "5m"},
            }
        }
    )
    spec = spec_from_dict(doc)
    again = spec_from_canonical(spec.to_canonical())
    assert again.performance == spec.performance and again.version == spec.version
    with pytest.raises(SpecError) as info:
        spec_from_dict(
            _with(
                performance={
                    "quality": {
                        "task": "binary",
                        "prediction": "ccfraud.outputs[0][2]",
                        "window": {"width": "1h"},
                    }
                }
            )
        )
    assert "out of range" in str(info.value)


def test_the_sdk_builds_the_same_external_spec_as_the_yaml() -> None:
    from driftline.spec import PipelineBuilder

    b = PipelineBuilder("external-fraud").set_source(
        "mlserver-responses",
        "ccfraud",
        SPEC["inputs"],
        SPEC["outputs"],
        requests="mlserver-requests",
    )
    b.add_validation("no_high_fraud", "ccfraud.outputs[0][0] < 0.95")
    b.add_alert(
        "high_fraud",
        'count(ccfraud.outputs["probability"][0] > 0.95, "1m", "1s") > 10',
        ["stdout"],
    )
    b.add_assay(
        "v3_drift",
        "ccfraud.inputs[0][3]",
        baseline={"values": SPEC["assays"]["v3_drift"]["baseline"]["values"]},
        window={"width": "1m", "interval": "1m"},
    )
    assert b.build().version == spec_from_dict(SPEC).version


def test_one_topic_may_carry_requests_and_responses_told_apart_by_cloudevents_type() -> None:
    """KServe's payload logger writes both halves to one sink (a Knative Kafka sink, one
    topic); the worker tells them apart by each message's ``ce_type`` header."""
    spec = spec_from_dict(_source(topic="kserve-log", requests="kserve-log"))
    assert spec.source is not None
    assert spec.source.topic == spec.source.requests == "kserve-log"
