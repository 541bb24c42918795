"""Requests as tensors: nested, flat with a shape, by name, and in the Open Inference Protocol
(V2) form, checked against the model's declared inputs; then served by the worker's core on
real onnxruntime sessions (several inputs, int64 and bool inputs, free dimensions, a model
fixed to batch size 1), with results equal to onnxruntime's on the same arrays."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import orjson
import pytest
from onnx import TensorProto, helper

from driftline.models import LoadedModel
from driftline.streams._worker_core import PipelineRuntime, RuntimeModel, process_batch
from driftline.streams.v2 import InputSpec, decode_feeds

pytestmark = pytest.mark.unit

IMAGE = InputSpec("img", "float32", (None, 3, 4, 4))


def _decode(docs: list[Any], *inputs: InputSpec, **kw: Any) -> Any:
    values = [d if isinstance(d, bytes) else orjson.dumps(d) for d in docs]
    n = len(values)
    return decode_feeds(
        values,
        inputs=inputs,
        default_ids=[f"k{i}" for i in range(n)],
        default_times=list(range(n)),
        **kw,
    )


def test_nested_flat_with_shape_v2_and_base64_give_the_same_array() -> None:
    x = np.random.default_rng(0).normal(size=(2, 3, 4, 4)).astype(np.float32)
    raw = base64.b64encode(x.astype("<f4").tobytes()).decode()
    docs = [
        {"tensor": x.tolist()},
        {"tensor": x.ravel().tolist(), "shape": [2, 3, 4, 4]},
        {"inputs": {"img": {"shape": [2, 3, 4, 4], "data": x.ravel().tolist()}}},
        {
            "inputs": [
                {"name": "img", "shape": [2, 3, 4, 4], "datatype": "FP32", "data": x.tolist()}
            ]
        },
        {"inputs": [{"name": "img", "shape": [2, 3, 4, 4], "datatype": "FP32", "data": raw}]},
        {"tensor": x.reshape(2, -1).tolist()},  # flat rows of a fixed shape, as before
    ]
    batch = _decode(docs, IMAGE)
    assert batch.rejected == []
    assert batch.counts == [2] * len(docs)
    for feeds in batch.feeds:
        assert feeds["img"].dtype == np.float32
        np.testing.assert_array_equal(feeds["img"], x)


@pytest.mark.parametrize(
    ("doc", "reason", "words"),
    [
        ({"tensor": np.zeros((1, 3, 4, 5)).tolist()}, "wrong_width", "dimension 3 must be 4"),
        ({"tensor": [1, 2, 3], "shape": [1, 3, 4, 4]}, "wrong_width", "holds 48 values"),
        ({"tensor": [[["a"]]]}, "non_numeric", "takes float32"),
        ({"tensor": [[[[True]]]]}, "non_numeric", "true/false"),
        ({"inputs": {"image": [1]}}, "missing_tensor", "no input 'image'"),
        (
            {"inputs": [{"name": "img", "shape": [1, 48], "datatype": "BYTES", "data": ["x"]}]},
            "non_numeric",
            "datatype BYTES",
        ),
        (
            {"inputs": [{"name": "img", "shape": [1], "datatype": "FP32", "data": "AAA="}]},
            "wrong_width",
            "not a whole number",
        ),
        (
            {"inputs": [{"name": "img", "shape": [1], "datatype": "FP8", "data": [1]}]},
            "non_numeric",
            "'FP8' is not one of",
        ),
        ({"inputs": [{"name": "img", "data": [1]}]}, "missing_tensor", "has no 'shape'"),
        ({"nothing": 1}, "missing_tensor", "no 'tensor'"),
    ],
)
def test_what_does_not_fit_the_declared_input_is_rejected_naming_it(
    doc: dict[str, Any], reason: str, words: str
) -> None:
    good = {"tensor": np.zeros((1, 3, 4, 4)).tolist()}
    batch = _decode([good, doc, good], IMAGE)
    assert batch.accepted == [0, 2]
    [rejection] = batch.rejected
    assert (rejection.index, rejection.reason) == (1, reason)
    assert words in rejection.detail


def test_named_inputs_take_one_value_per_row_and_check_their_types() -> None:
    city = InputSpec("city", "string", (None, 1))
    n = InputSpec("n", "int64", (None, 1))
    ok = _decode([{"id": "a", "inputs": {"city": ["x", "y"], "n": [1, 2]}}], city, n)
    assert ok.rejected == [] and ok.ids == ["a"] and ok.counts == [2]
    assert ok.feeds[0]["city"].tolist() == [["x"], ["y"]]
    assert ok.feeds[0]["n"].dtype == np.int64 and ok.feeds[0]["n"].tolist() == [[1], [2]]
    bad = _decode(
        [
            {"inputs": {"city": ["x"], "n": [1.5]}},
            {"inputs": {"city": ["x"], "n": [2**63]}},
            {"inputs": {"city": [1], "n": [1]}},
            {"inputs": {"city": ["x"]}},
            {"inputs": {"city": ["x", "y"], "n": [1]}},
            {"tensor": [["x"]]},
        ],
        city,
        n,
    )
    assert [(r.reason, r.detail.split(":")[0]) for r in bad.rejected] == [
        ("non_numeric", "inputs['n']"),
        ("non_numeric", "inputs['n']"),
        ("non_numeric", "inputs['city'] = 1"),
        ("missing_tensor", "'inputs' lacks 'n'; the model expects city, n"),
        ("wrong_width", "inputs have different numbers of rows [1, 2]"),
        ("missing_tensor", "the model has 2 inputs (city, n)"),
    ]


def test_nan_is_rejected_when_the_pipeline_says_so() -> None:
    x = InputSpec("x", "float32", (None, 2, 2))
    batch = _decode([b'{"tensor": [[[1, NaN], [1, 2]]]}', b'{"tensor": [[[1, 1], [1, 2]]]}'], x)
    assert batch.rejected == []
    batch = _decode([b'{"tensor": [[[1, null], [1, 2]]]}'], x, allow_nan=False)
    assert [r.reason for r in batch.rejected] == ["non_finite"]


# -- served by the core on real sessions -------------------------------------------------------


def _save(graph: Any, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def _two_inputs(path: Path) -> Path:
    """score = sum over the free axis of (x * cast(k)) masked by flag: float, int64, bool."""
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["k"], ["kf"], to=TensorProto.FLOAT),
            helper.make_node("Mul", ["x", "kf"], ["xk"]),
            helper.make_node("Cast", ["flag"], ["ff"], to=TensorProto.FLOAT),
            helper.make_node("Mul", ["xk", "ff"], ["masked"]),
            helper.make_node("ReduceSum", ["masked"], ["score"], keepdims=0),
        ],
        "two",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", "t"]),
            helper.make_tensor_value_info("k", TensorProto.INT64, ["n", 1]),
            helper.make_tensor_value_info("flag", TensorProto.BOOL, ["n", 1]),
        ],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, [])],
    )
    # ReduceSum over every axis would give a scalar; reduce the free axis only.
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    graph.initializer.append(axes)
    graph.node[-1].input.append("axes")
    graph.output[0].CopyFrom(helper.make_tensor_value_info("score", TensorProto.FLOAT, ["n"]))
    return _save(graph, path)


def _runtime(model: LoadedModel, **kw: Any) -> PipelineRuntime:
    inputs = tuple(InputSpec(*spec) for spec in model.input_specs)
    return PipelineRuntime(
        name="p",
        version="sha256:v",
        models=(RuntimeModel(model.name, "sha256:m", model),),
        inputs=inputs,
        feeds_only=True,
        **kw,
    )


def _serve(runtime: PipelineRuntime, docs: list[Any]) -> Any:
    values = [orjson.dumps(d) for d in docs]
    return process_batch(
        runtime,
        values,
        default_ids=[f"k{i}" for i in range(len(values))],
        default_times=[1000 + i for i in range(len(values))],
    )


def test_several_inputs_of_three_types_and_a_free_axis_equal_onnxruntime(tmp_path: Path) -> None:
    path = _two_inputs(tmp_path / "two.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    arrays = []
    docs: list[Any] = []
    for i, t in enumerate((3, 5, 3)):  # two lengths of the free axis in one micro-batch
        x = rng.normal(size=(2, t)).astype(np.float32)
        k = np.array([[i + 1], [2]], dtype=np.int64)
        flag = np.array([[True], [i != 1]])
        arrays.append((x, k, flag))
        docs.append(
            {
                "id": f"r{i}",
                "inputs": [
                    {"name": "x", "shape": [2, t], "datatype": "FP32", "data": x.ravel().tolist()},
                    {"name": "k", "shape": [2, 1], "datatype": "INT64", "data": k.tolist()},
                    {"name": "flag", "shape": [2, 1], "datatype": "BOOL", "data": flag.tolist()},
                ],
            }
        )
    out = _serve(_runtime(LoadedModel(path, "m")), docs)
    assert out.rejected == [] and out.rows == 6
    events = [orjson.loads(v) for _, v in out.results]
    assert [(e["id"], e["row"]) for e in events] == [(f"r{i}", r) for i in range(3) for r in (0, 1)]
    for i, (x, k, flag) in enumerate(arrays):
        (want,) = session.run(None, {"x": x, "k": k, "flag": flag})
        got = [e["outputs"]["m"][0][0] for e in events[2 * i : 2 * i + 2]]
        assert got == want.astype(np.float64).tolist()
        assert events[2 * i]["inputs"] == {
            "x": x[0].astype(np.float64).tolist(),
            "k": [float(k[0, 0])],
            "flag": [float(flag[0, 0])],
        }


def test_a_batch_one_model_serves_a_three_row_request_row_by_row(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Softmax", ["x"], ["y"], axis=1)],
        "one",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
    )
    path = _save(graph, tmp_path / "one.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.arange(9, dtype=np.float32).reshape(3, 3) / 4
    out = _serve(_runtime(LoadedModel(path, "one")), [{"tensor": x.tolist()}])
    assert out.rejected == [] and out.rows == 3
    got = [orjson.loads(v)["outputs"]["one"][0] for _, v in out.results]
    want = [
        session.run(None, {"x": x[r : r + 1]})[0][0].astype(np.float64).tolist() for r in range(3)
    ]
    assert got == want
    assert orjson.loads(out.results[0][1])["inputs"] == x[0].astype(np.float64).tolist()


def test_a_request_the_model_refuses_is_dead_lettered_alone_and_inputs_can_be_left_out(
    tmp_path: Path,
) -> None:
    # Reshape to (-1, 2): a request whose free axis is odd fails in the model, others not.
    shape = helper.make_tensor("s", TensorProto.INT64, [2], [-1, 2])
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "s"], ["y"])],
        "pairs",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "t"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["m", 2])],
        initializer=[shape],
    )
    model = LoadedModel(_save(graph, tmp_path / "pairs.onnx"), "pairs")
    runtime = _runtime(model, record_inputs=False)
    out = _serve(runtime, [{"tensor": [[1, 2]]}, {"tensor": [[1, 2, 3]]}, {"tensor": [[5, 6]]}])
    assert [(r.index, r.reason) for r in out.rejected] == [(1, "model_error")]
    assert "'pairs'" in out.rejected[0].detail
    events = [orjson.loads(v) for _, v in out.results]
    assert [e["outputs"]["pairs"] for e in events] == [[[1.0, 2.0]], [[5.0, 6.0]]]
    assert all("inputs" not in e for e in events)


def test_a_plain_rows_pipeline_reads_v2_beside_tensor_rows_with_equal_results(
    tmp_path: Path,
) -> None:
    """Auto-detected per micro-batch: a V2 request among ``{"tensor": ...}`` ones is served
    like them, and the batch's plain rows give the same results either way."""
    w = helper.make_tensor("w", TensorProto.FLOAT, [3, 1], [0.5, -1.0, 2.0])
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "lin",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 1])],
        initializer=[w],
    )
    model = LoadedModel(_save(graph, tmp_path / "lin.onnx"), "lin")
    runtime = _runtime(model)
    plain = PipelineRuntime(
        name="p",
        version="sha256:v",
        models=runtime.models,
        input_width=3,
        inputs=runtime.inputs,
        feeds_only=False,
    )
    x = np.array([[1, 2, 3], [4, 5, 6], [0.25, 0.5, 1]], dtype=np.float32)
    rows = [{"id": "a", "time": 5, "tensor": x[:2].tolist()}]
    v2 = {
        "id": "b",
        "time": 5,
        "inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": x[2].tolist()}],
    }
    alone = _serve(plain, rows)
    mixed = _serve(plain, [*rows, v2])
    assert mixed.rejected == [] and mixed.rows == 3
    strip = [k for k in orjson.loads(alone.results[0][1]) if k != "elapsed_ns"]
    for (_, a), (_, b) in zip(alone.results, mixed.results[:2], strict=True):
        da, db = orjson.loads(a), orjson.loads(b)
        assert {k: da[k] for k in strip} == {k: db[k] for k in strip}
    last = orjson.loads(mixed.results[2][1])
    assert (last["id"], last["inputs"]) == ("b", x[2].astype(np.float64).tolist())
    assert last["outputs"]["lin"] == [[float(np.float32(x[2] @ [0.5, -1.0, 2.0]))]]


# -- no message makes decoding raise -------------------------------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from driftline.streams.codec import REASONS  # noqa: E402

_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=6)
    | st.sampled_from(["img", "x", "FP32", "BYTES", "INT64", "AAAA", "shape", "data"]),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                ["tensor", "shape", "inputs", "name", "datatype", "data", "id", "time"]
            ),
            inner,
            max_size=4,
        )
    ),
    max_leaves=20,
)
_GOOD = b'{"tensor": [[1, 2]]}'


@settings(max_examples=300, deadline=None)
@given(st.lists(_json, min_size=1, max_size=6), st.booleans())
def test_arbitrary_json_never_makes_decode_feeds_raise(docs: list[Any], nan: bool) -> None:
    specs = (InputSpec("x", "float32", (None, 2)), InputSpec("s", "string", (None,)))
    values = [_GOOD, *(json.dumps(d).encode() for d in docs)]  # NaN, huge ints too
    for inputs in (specs[:1], specs):
        batch = _decode(values, *inputs, allow_nan=nan)
        seen = sorted([*batch.accepted, *(r.index for r in batch.rejected)])
        assert seen == list(range(len(values)))
        assert all(r.reason in REASONS and len(r.detail) <= 500 for r in batch.rejected)
        assert all(
            next(iter(f.values())).shape[0] == c
            for f, c in zip(batch.feeds, batch.counts, strict=True)
        )
    assert 0 in _decode(values, specs[0]).accepted


def test_a_shadow_is_fed_the_champions_inputs_by_name_and_validations_see_both(
    tmp_path: Path,
) -> None:
    champion = LoadedModel(_two_inputs(tmp_path / "a.onnx"), "champ")
    shadow = LoadedModel(_two_inputs(tmp_path / "b.onnx"), "shade")
    runtime = PipelineRuntime(
        name="p",
        version="sha256:v",
        models=(
            RuntimeModel("champ", "sha256:a", champion),
            RuntimeModel("shade", "sha256:b", shadow, shadow=True),
        ),
        validations={
            "same": lambda t: t[("champ", "outputs")][0][:, 0] == t[("shade", "outputs")][0][:, 0],
            "k_small": lambda t: t[("shade", "inputs")][1][:, 0] < 2,
        },
        inputs=tuple(InputSpec(*s) for s in champion.input_specs),
        feeds_only=True,
    )
    doc = {"inputs": {"x": [[1.0, 2.0], [3.0, 4.0]], "k": [1, 2], "flag": [True, True]}}
    out = _serve(runtime, [doc])
    events = [orjson.loads(v) for _, v in out.results]
    assert [e["outputs"]["champ"] for e in events] == [e["outputs"]["shade"] for e in events]
    assert [e["outputs"]["champ"][0][0] for e in events] == [3.0, 14.0]
    assert [e["check_failures"] for e in events] == [[], ["k_small"]]
    assert out.check_failures == {"same": 0, "k_small": 1}


def test_the_deploy_check_refuses_a_shadow_the_worker_could_not_feed(tmp_path: Path) -> None:
    from driftline.errors import SpecError
    from driftline.spec import spec_from_dict

    two = _two_inputs(tmp_path / "two.onnx")
    graph = helper.make_graph(
        [helper.make_node("Identity", ["q"], ["y"])],
        "other",
        [helper.make_tensor_value_info("q", TensorProto.FLOAT, ["n", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])],
    )
    other = _save(graph, tmp_path / "other.onnx")
    same = _two_inputs(tmp_path / "same.onnx")

    def spec(shadow: Path) -> Any:
        return spec_from_dict(
            {
                "name": "p",
                "models": [
                    {"name": "champ", "path": str(two)},
                    {"name": "shade", "path": str(shadow), "shadow": True},
                ],
            }
        )

    assert [m.name for m in spec(same).models] == ["champ", "shade"]
    with pytest.raises(SpecError, match="its input 'q' is not an input of the champion") as info:
        spec(other)
    assert info.value.field == "models[1]" and "'shade'" in str(info.value)
