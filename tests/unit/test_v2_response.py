"""Results in V2 response form: the spec option, the worker's writing and the one reader."""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import orjson
import pytest

from driftline.errors import SpecError
from driftline.spec import spec_from_canonical, spec_from_dict
from driftline.streams._decode import build_tensors, decode_results, read_result
from driftline.streams._worker_core import PipelineRuntime, RuntimeModel, process_batch
from driftline.streams.v2_response import ResponseForm, from_response, is_response, to_response

pytestmark = pytest.mark.unit


class _Scale:
    """A stand-in runner: one output, each row times a factor (pure logic, no model file)."""

    def __init__(self, factor: float) -> None:
        self.factor = factor
        self.output_names = ["y"]

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        return [x[:, :1] * self.factor, x > 0]


def _runtime(form: ResponseForm | None, record_inputs: bool = True) -> PipelineRuntime:
    return PipelineRuntime(
        name="p",
        version="sha256:spec",
        models=(
            RuntimeModel("champ", "sha256:c", _Scale(2.0)),
            RuntimeModel("shadow", "sha256:s", _Scale(3.0), shadow=True),
        ),
        validations={"small": lambda t: t[("champ", "outputs")][0][:, 0] < 1.0},
        input_width=2,
        record_inputs=record_inputs,
        response_form=form,
    )


FORM = ResponseForm("champ", ("y", "positive"), ("FP32", "BOOL"), ((1,), (2,)))


def _serve(runtime: PipelineRuntime) -> list[bytes]:
    out = process_batch(
        runtime,
        [b'{"id": "a", "time": 7, "tensor": [[0.25, -1.0], [0.75, 2.0]]}'],
        default_ids=["k"],
        default_times=[1],
    )
    assert not out.rejected
    return [v for _, v in out.results]


def test_the_worker_writes_each_row_as_a_v2_response_that_reads_back_as_its_event() -> None:
    plain = _serve(_runtime(None))
    v2 = _serve(_runtime(FORM))
    assert len(v2) == 2
    for k, (p, r) in enumerate(zip(plain, v2, strict=True)):
        doc = orjson.loads(r)
        assert list(doc) == ["model_name", "model_version", "id", "parameters", "outputs"]
        assert (doc["model_name"], doc["model_version"], doc["id"]) == ("champ", "sha256:c", "a")
        assert doc["outputs"][0] == {
            "name": "y",
            "shape": [1, 1],
            "datatype": "FP32",
            "data": [[0.5], [1.5]][k],
        }
        assert doc["outputs"][1]["datatype"] == "BOOL"
        assert doc["outputs"][1]["data"] == [[True, False], [True, True]][k]
        params = doc["parameters"]
        assert (params["row"], params["time"], params["pipeline"]) == (k, 7, "p")
        assert orjson.loads(params["check_failures"]) == [[], ["small"]][k]
        assert orjson.loads(params["shadows"])["shadow"][0] == [[0.75], [2.25]][k]
        # Apart from the time it took, the event read back is the one the worker would write.
        mine, theirs = read_result(r), orjson.loads(p)
        mine.pop("elapsed_ns"), theirs.pop("elapsed_ns")
        assert mine == theirs


def test_without_recorded_inputs_the_response_has_none() -> None:
    (first, _) = _serve(_runtime(FORM, record_inputs=False))
    assert "inputs" not in orjson.loads(first)["parameters"]
    assert "inputs" not in read_result(first)


def test_the_monitor_decodes_v2_responses_and_driftline_events_alike() -> None:
    v2 = _serve(_runtime(FORM))
    plain = _serve(_runtime(None))
    for values in (v2, [v2[0], plain[1]], [plain[0], v2[1]], [*v2, b"{}"]):
        docs, ok, reasons = decode_results(values, with_inputs=True, with_ids=True)
        good = [d for d in docs if d is not None]
        assert ok.tolist()[:2] == [True, True]
        tensors = build_tensors(good[:2], [("champ", "outputs"), ("champ", "inputs")])
        assert tensors[("champ", "outputs")][0].tolist() == [[0.5], [1.5]]
        assert tensors[("champ", "inputs")][0].tolist() == [[0.25, -1.0], [0.75, 2.0]]
        assert [d.row for d in good[:2]] == [0, 1]  # type: ignore[union-attr]
        if len(values) == 3:
            assert ok.tolist()[2] is False and reasons[2] == "malformed-result"


def test_a_v2_response_without_driftline_fields_is_malformed_not_a_crash() -> None:
    foreign = {
        "model_name": "m",
        "id": "x",
        "parameters": {},
        "outputs": [{"name": "y", "shape": [1], "datatype": "FP32", "data": [1.0]}],
    }
    assert is_response(foreign)
    with pytest.raises(ValueError, match="lacks 'row'"):
        from_response(foreign)
    docs, ok, reasons = decode_results([orjson.dumps(foreign)])
    assert docs == [None] and not ok[0] and reasons == ["malformed-result"]


def test_outputs_the_form_does_not_name_get_a_name_and_a_type_from_their_values() -> None:
    ev = orjson.dumps(
        {
            "id": "r",
            "row": 0,
            "time": 1,
            "pipeline": "p",
            "spec": "s",
            "outputs": {"m": [[1, 2], ["a"], [0.5, None]]},
            "models": {"m": "sha256:m"},
            "check_failures": [],
            "elapsed_ns": 0,
        }
    )
    doc = orjson.loads(to_response(ev, ResponseForm("m", (), (), ())))
    assert [(o["name"], o["datatype"], o["shape"]) for o in doc["outputs"]] == [
        ("output_0", "INT64", [1, 2]),
        ("output_1", "BYTES", [1, 1]),
        ("output_2", "FP64", [1, 2]),
    ]
    assert from_response(doc)["outputs"] == {"m": [[1, 2], ["a"], [0.5, None]]}


def _spec(options: dict[str, Any]) -> dict[str, Any]:
    from pathlib import Path

    model = Path(__file__).resolve().parents[2] / "examples" / "fraud" / "models" / "ccfraud.onnx"
    return {"name": "p", "models": [{"name": "m", "path": str(model)}], "options": options}


def test_result_format_option_is_checked_and_survives_the_canonical_form() -> None:
    default = spec_from_dict(_spec({}))
    v2 = spec_from_dict(_spec({"result_format": "v2"}))
    assert default.options.result_format == "driftline"
    assert "result_format" not in default.to_canonical()["options"]  # old versions unchanged
    canonical = v2.to_canonical()
    assert canonical["options"]["result_format"] == "v2"
    assert v2.version != default.version
    back = spec_from_canonical(canonical, resolve_model=lambda sha: v2.models[0].path)  # type: ignore[arg-type,return-value]
    assert back.options.result_format == "v2"
    with pytest.raises(SpecError, match=r"options.result_format.*'kserve' is not one of"):
        spec_from_dict(_spec({"result_format": "kserve"}))


def test_the_performance_join_reads_predictions_from_v2_responses() -> None:
    from driftline.expressions import parse
    from driftline.streams._feedback_io import Record, result_predictions

    def records(values: list[bytes]) -> list[Record]:
        return [Record("t", 0, i, v, 7) for i, v in enumerate(values)]

    prediction = [parse("champ.outputs[0][0]")]
    plain, _ = result_predictions(records(_serve(_runtime(None))), prediction)
    v2, skipped = result_predictions(records(_serve(_runtime(FORM))), prediction)
    assert plain is not None and v2 is not None and skipped == 0
    assert v2.values.tolist() == plain.values.tolist() == [0.5, 1.5]
    assert list(v2.ids) == ["a", "a"] and v2.rows.tolist() == [0, 1]
    assert v2.times.tolist() == [7, 7]


@pytest.mark.parametrize(
    "hostile",
    [
        {"outputs": [{"name": "y", "shape": [1]}]},
        {"outputs": ["not a tensor"]},
        {"model_name": ["unhashable"]},
        {"model_name": 7},
        {"parameters": {"row": 0, "time": True, "pipeline": "p", "spec": "s"}},
        {"parameters": {"row": 0, "time": 1, "pipeline": "p", "spec": "s", "shadows": "[1]"}},
        {"parameters": {"row": 0, "time": 1, "pipeline": "p", "spec": "s", "inputs": "{"}},
        {"parameters": {"row": 0, "pipeline": "p", "spec": "s"}},
    ],
)
def test_hostile_v2_responses_are_malformed_results_never_a_crash(hostile: dict[str, Any]) -> None:
    doc: dict[str, Any] = {
        "model_name": "m",
        "id": "x",
        "parameters": {"row": 0, "time": 1, "pipeline": "p", "spec": "s"},
        "outputs": [{"name": "y", "shape": [1], "datatype": "FP32", "data": [1.0]}],
    }
    good = orjson.dumps(doc)
    bad = orjson.dumps({**doc, **hostile})
    docs, ok, reasons = decode_results([bad, good, bad], with_inputs=False)
    assert ok.tolist() == [False, True, False]
    assert reasons == ["malformed-result", "", "malformed-result"]
    assert docs[1] is not None and docs[1].outputs == {"m": [[1.0]]}
    # The loose reader (listings, the performance join) either refuses with a ValueError or
    # returns an object its caller checks field by field; it raises nothing else.
    with contextlib.suppress(ValueError):
        assert isinstance(read_result(bad), dict)


def test_deeply_nested_v2_data_does_not_recurse() -> None:
    deep: Any = [1.0]
    for _ in range(1000):
        deep = [deep]
    doc = {
        "model_name": "m",
        "id": "x",
        "parameters": {"row": 0, "time": 1, "pipeline": "p", "spec": "s"},
        "outputs": [{"name": "y", "shape": [1], "datatype": "FP32", "data": deep}],
    }
    assert from_response(doc)["outputs"] == {"m": [[1.0]]}
