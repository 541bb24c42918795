"""The worker's pure core: model outputs, validations and result events of a micro-batch."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from driftline.events import ResultEvent
from driftline.streams._worker_core import PipelineRuntime, RuntimeModel, process_batch

pytestmark = pytest.mark.unit

WIDTH = 4


def _linear_model(path: Path, weights: list[float], bias: float) -> Path:
    """y = sigmoid(x @ w + b), shape (n, 1); also z = x * 2 as a second output (n, WIDTH)."""
    w = helper.make_tensor("w", TensorProto.FLOAT, [WIDTH, 1], weights)
    b = helper.make_tensor("b", TensorProto.FLOAT, [1], [bias])
    two = helper.make_tensor("two", TensorProto.FLOAT, [1], [2.0])
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["xw"]),
            helper.make_node("Add", ["xw", "b"], ["logit"]),
            helper.make_node("Sigmoid", ["logit"], ["y"]),
            helper.make_node("Mul", ["x", "two"], ["z"]),
        ],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", WIDTH])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 1]),
            helper.make_tensor_value_info("z", TensorProto.FLOAT, ["n", WIDTH]),
        ],
        initializer=[w, b, two],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


class _Ort:
    def __init__(self, path: Path) -> None:
        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.calls = 0

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        self.calls += 1
        return list(self.session.run(None, {"x": x}))


class _Failing:
    """Fails on any batch holding a row whose first value is 666 (a model runtime error)."""

    def __init__(self, inner: _Ort) -> None:
        self.inner = inner

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        if (x[:, 0] == 666).any():
            raise RuntimeError("bad value 666")
        return self.inner.run(x)


@pytest.fixture(scope="module")
def model_paths(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("models")
    return (
        _linear_model(d / "champ.onnx", [0.5, -0.25, 1.0, 0.1], -0.2),
        _linear_model(d / "shadow.onnx", [0.4, -0.2, 1.1, 0.0], -0.1),
    )


@pytest.fixture
def models(tmp_path: Path) -> tuple[_Ort, _Ort]:
    champ = _Ort(_linear_model(tmp_path / "champ.onnx", [0.5, -0.25, 1.0, 0.1], -0.2))
    shadow = _Ort(_linear_model(tmp_path / "shadow.onnx", [0.4, -0.2, 1.1, 0.0], -0.1))
    return champ, shadow


def _runtime(champ: object, shadow: object, **kw: object) -> PipelineRuntime:
    return PipelineRuntime(
        name="fraud",
        version="sha256:spec1",
        models=(
            RuntimeModel("champ", "sha256:c1", champ),  # type: ignore[arg-type]
            RuntimeModel("shadow", "sha256:s1", shadow, shadow=True),  # type: ignore[arg-type]
        ),
        validations={
            "not_high": lambda t: t[("champ", "outputs")][0][:, 0] < 0.7,
            "agree": lambda t: (
                np.abs(t[("champ", "outputs")][0][:, 0] - t[("shadow", "outputs")][0][:, 0]) <= 0.05
            ),
            "small_input": lambda t: t[("champ", "inputs")][0][:, 2] < 1.5,
        },
        input_width=WIDTH,
        **kw,  # type: ignore[arg-type]
    )


def _requests(rng: np.random.Generator, sizes: list[int]) -> tuple[list[bytes], np.ndarray]:
    values, rows = [], []
    for i, n in enumerate(sizes):
        x = rng.normal(size=(n, WIDTH)).round(6)
        rows.append(x)
        values.append(orjson.dumps({"id": f"r{i}", "time": 100 + i, "tensor": x.tolist()}))
    return values, np.concatenate(rows)


def _process(rt: PipelineRuntime, values: Sequence[bytes | None]):  # type: ignore[no-untyped-def]
    n = len(values)
    return process_batch(rt, values, default_ids=[f"k{i}" for i in range(n)], default_times=[7] * n)


def test_outputs_checks_and_events_match_a_direct_computation(models: tuple[_Ort, _Ort]) -> None:
    champ, shadow = models
    rng = np.random.default_rng(1)
    sizes = [1, 3, 2, 5, 1, 4]
    values, rows = _requests(rng, sizes)
    out = _process(_runtime(champ, shadow), values)
    assert champ.calls == 1 and shadow.calls == 1  # once per micro-batch, not per request
    assert out.rejected == []
    assert out.rows == sum(sizes) == len(out.results)

    x32 = rows.astype(np.float32)
    y_c, z_c = champ.session.run(None, {"x": x32})
    y_s, _ = shadow.session.run(None, {"x": x32})
    expected_fail = {
        "not_high": ~(y_c[:, 0] < 0.7),
        "agree": ~(np.abs(y_c[:, 0] - y_s[:, 0]) <= 0.05),
        "small_input": ~(rows[:, 2] < 1.5),
    }
    assert out.check_failures == {k: int(v.sum()) for k, v in expected_fail.items()}
    assert sum(out.check_failures.values()) > 0  # the data exercises the checks

    events = [ResultEvent.from_dict(orjson.loads(v)) for _, v in out.results]
    msg_index = [m for m, _ in out.results]
    assert msg_index == [i for i, n in enumerate(sizes) for _ in range(n)]
    for r, ev in enumerate(events):
        k = msg_index[r]
        assert ev.id == f"r{k}" and ev.time == 100 + k and ev.pipeline == "fraud"
        assert ev.row == r - sum(sizes[:k])
        assert ev.spec == "sha256:spec1"
        assert ev.models == {"champ": "sha256:c1", "shadow": "sha256:s1"}
        assert ev.inputs == rows[r].tolist()
        assert ev.outputs["champ"][0] == y_c[r].tolist()
        assert ev.outputs["champ"][1] == z_c[r].tolist()
        assert ev.outputs["shadow"][0] == y_s[r].tolist()
        assert ev.check_failures == [k for k, v in expected_fail.items() if v[r]]
        assert ev.elapsed_ns > 0
    assert out.ids == {i: f"r{i}" for i in range(len(sizes))}


def test_bad_messages_are_rejected_and_the_rest_served(models: tuple[_Ort, _Ort]) -> None:
    champ, shadow = models
    good = orjson.dumps({"tensor": [[0.1, 0.2, 0.3, 0.4]]})
    values: list[bytes | None] = [
        good,
        b"nope",
        orjson.dumps({"tensor": [[1, 2]]}),
        b'{"tensor": [[NaN, 1, 1, 1]]}',
        orjson.dumps({"tensor": [[666, 0, 0, 0]]}),
        good,
    ]
    rt = _runtime(_Failing(champ), shadow, allow_nan=False)
    out = _process(rt, values)
    assert [(r.index, r.reason) for r in out.rejected] == [
        (1, "malformed_json"),
        (2, "wrong_width"),
        (3, "non_finite"),
        (4, "model_error"),
    ]
    assert "666" in out.rejected[-1].detail
    assert [m for m, _ in out.results] == [0, 5]
    assert {orjson.loads(v)["id"] for _, v in out.results} == {"k0", "k5"}


def test_failing_validation_dead_letters_instead_of_passing(models: tuple[_Ort, _Ort]) -> None:
    champ, _shadow = models
    rt = PipelineRuntime(
        name="p",
        version="sha256:v",
        models=(RuntimeModel("champ", "sha256:c", champ),),
        validations={"broken": lambda t: t[("champ", "outputs")][5][:, 0] > 0},
        input_width=WIDTH,
    )
    out = _process(rt, [orjson.dumps({"tensor": [[1, 2, 3, 4]]})])
    assert out.results == []
    assert [(r.index, r.reason) for r in out.rejected] == [(0, "model_error")]
    assert "broken" in out.rejected[0].detail


def test_spec_size_limit_overrides_the_worker_default(models: tuple[_Ort, _Ort]) -> None:
    champ, shadow = models
    value = orjson.dumps({"tensor": [[1, 2, 3, 4]] * 10})
    rt = _runtime(champ, shadow, max_message_bytes=50)
    out = process_batch(rt, [value], default_ids=["a"], default_times=[0], max_message_bytes=10**6)
    assert [r.reason for r in out.rejected] == ["too_large"]
    rt = _runtime(champ, shadow)
    out = process_batch(rt, [value], default_ids=["a"], default_times=[0], max_message_bytes=50)
    assert [r.reason for r in out.rejected] == ["too_large"]


def test_runtime_needs_a_model() -> None:
    with pytest.raises(ValueError, match="models"):
        PipelineRuntime(name="p", version="v", models=())


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(1, 3), st.one_of(st.none(), st.integers(0, 9), st.just(""))),
        min_size=1,
        max_size=8,
    )
)
def test_a_batch_serves_each_request_as_it_would_alone(
    model_paths: tuple[Path, Path], requests: list[tuple[int, int | str | None]]
) -> None:
    rt = _runtime(_Ort(model_paths[0]), _Ort(model_paths[1]))
    rng = np.random.default_rng(len(requests))
    values = []
    for n, rid in requests:
        doc: dict[str, object] = {"tensor": (rng.normal(size=(n, WIDTH)) * 2).tolist()}
        if rid is not None:
            doc["id"] = rid
        values.append(orjson.dumps(doc))
    whole = _process(rt, values)
    alone: list[tuple[int, bytes]] = []
    for i, v in enumerate(values):
        one = process_batch(rt, [v], default_ids=[f"k{i}"], default_times=[7])
        alone.extend((i, e) for _, e in one.results)

    def strip(results: list[tuple[int, bytes]]) -> list[tuple[int, dict[str, object]]]:
        out = []
        for i, e in results:
            d = orjson.loads(e)
            assert d.pop("elapsed_ns") > 0
            out.append((i, d))
        return out

    assert strip(whole.results) == strip(alone)
    assert len(whole.results) == sum(n for n, _ in requests)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 6),
    st.integers(0, 4),
    st.sampled_from([np.float32, np.float64]),
    st.data(),
)
def test_row_texts_are_each_rows_own_json(
    n: int, width: int, dtype: type[np.floating], data: st.DataObject
) -> None:
    from driftline.streams._worker_core import _rows_with_comma, _split_rows

    values = data.draw(
        st.lists(st.floats(width=32, allow_infinity=False), min_size=n * width, max_size=n * width)
    )
    matrix = np.array(values, dtype=dtype).reshape(n, width)
    expected = [
        orjson.dumps(r, option=orjson.OPT_SERIALIZE_NUMPY)[1:-1] for r in matrix.astype(np.float64)
    ]
    assert _split_rows(matrix) == expected
    assert _rows_with_comma(matrix) == [e + b"]," for e in expected]


class _ZipMap:
    """A default skl2onnx classifier as onnxruntime returns it: int labels and, per row, a
    dict of class probabilities (the ZipMap ``seq(map)`` output)."""

    def __init__(self) -> None:
        self.output_names = ["output_label", "output_probability"]

    def run(self, x: np.ndarray) -> list[object]:
        n = x.shape[0]
        return [np.zeros(n, dtype=np.int64), [{0: 0.25, 1: 0.75} for _ in range(n)]]


@pytest.mark.parametrize("shadow", [False, True])
def test_an_output_a_result_cannot_carry_dead_letters_the_batch(
    models: tuple[_Ort, _Ort], shadow: bool
) -> None:
    champ, _ = models
    zipmap = RuntimeModel("clf", "sha256:a", _ZipMap(), shadow=shadow)  # type: ignore[arg-type]
    healthy = RuntimeModel("champ", "sha256:b", champ, shadow=not shadow)  # type: ignore[arg-type]
    rt = PipelineRuntime(
        name="iris",
        version="sha256:v",
        models=(healthy, zipmap) if shadow else (zipmap, healthy),
        input_width=WIDTH,
    )
    values, _ = _requests(np.random.default_rng(1), [1, 3, 2])
    out = _process(rt, [*values, b"oops"])
    assert out.results == [] and out.rows == 0
    assert [(r.index, r.reason) for r in out.rejected] == [
        (0, "unserializable_output"),
        (1, "unserializable_output"),
        (2, "unserializable_output"),
        (3, "malformed_json"),
    ]
    detail = out.rejected[0].detail
    assert "'clf'" in detail and "'output_probability'" in detail and "zipmap" in detail
    assert "sha256" not in detail


def _served(runner: object, validations: dict[str, str], sizes: list[int]):  # type: ignore[no-untyped-def]
    from driftline.expressions import evaluate, parse

    names = {("labels", "outputs"): ["output_label", "scores", "ok"]}
    rt = PipelineRuntime(
        name="iris",
        version="sha256:v",
        models=(RuntimeModel("labels", "sha256:a", runner),),  # type: ignore[arg-type]
        input_width=WIDTH,
        validations={
            k: (lambda t, e=parse(v): evaluate(e, t, names)) for k, v in validations.items()
        },
    )
    values, rows = _requests(np.random.default_rng(2), sizes)
    return _process(rt, values), rows


class _Labels:
    """String labels (by the sign of the first feature), scores of varying length per row
    (one per positive feature) and a boolean: every common kind of output but maps."""

    def __init__(self) -> None:
        self.output_names = ["output_label", "scores", "ok"]

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        from driftline.models.runtime import merge_rows

        labels = np.where(x[:, :1] > 0, "setosa", "virginica").astype(object)
        scores = merge_rows([r[r > 0].reshape(1, -1) for r in x])
        return [labels, scores, x[:, 1:2] > 0]


def test_string_bool_and_variable_length_outputs_are_carried_and_validated() -> None:
    out, rows = _served(
        _Labels(),
        {
            "not_setosa": 'labels.outputs["output_label"][0] != "setosa"',
            "confident": "mean(labels.outputs[1]) > 0.5",
            "some": "len(labels.outputs[1]) >= 1",
            "ok": "labels.outputs[2][0]",
        },
        [3, 1, 4, 2],
    )
    assert out.rejected == [] and out.rows == len(rows)
    for (_k, raw), x in zip(out.results, rows, strict=True):
        event = orjson.loads(raw)
        label, scores, ok = event["outputs"]["labels"]
        positive = x[x > 0].astype(np.float32).astype(np.float64).tolist()
        assert label == ["setosa" if x[0] > 0 else "virginica"]
        assert scores == positive and ok == [bool(x[1] > 0)]
        failed = set(event["check_failures"])
        assert ("not_setosa" in failed) == (x[0] > 0)
        mean = np.mean(positive) if positive else np.nan
        assert ("confident" in failed) == (not mean > 0.5)
        assert ("some" in failed) == (not positive)
        assert ("ok" in failed) == (not x[1] > 0)


def test_a_string_label_compared_with_a_number_dead_letters_the_batch() -> None:
    """Deploy refuses it when the model file is at hand; when it is not, the rows are not
    silently counted as healthy."""
    out, _ = _served(_Labels(), {"bad": "labels.outputs[0][0] == 1"}, [2])
    assert [(r.index, r.reason) for r in out.rejected] == [(0, "model_error")]
    assert "strings only compare with strings" in out.rejected[0].detail


def test_reject_messages_moves_every_row_of_a_message_to_the_dead_letters(
    models: tuple[_Ort, _Ort],
) -> None:
    rt = _runtime(*models)
    values, _ = _requests(np.random.default_rng(3), [2, 1, 3])
    out = _process(rt, [*values, b"oops"])
    assert out.rows == 6
    out.reject_messages({0: "too big", 2: "too big", 3: "already rejected"}, "result_too_large")
    assert [k for k, _ in out.results] == [1] and out.rows == 1
    assert set(out.ids) == {1} and set(out.times) == {1}
    assert [(r.index, r.reason) for r in out.rejected] == [
        (0, "result_too_large"),
        (2, "result_too_large"),
        (3, "malformed_json"),
    ]
    out.reject_messages({0: "again"}, "result_too_large")  # idempotent
    assert len(out.rejected) == 3


def _sk_classifier(tmp_path: Path, labels: list[object], zipmap: bool) -> tuple[Path, np.ndarray]:
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(8)
    x = rng.normal(size=(60, WIDTH)).astype(np.float32)
    x[:, 0] += np.arange(60) % len(labels)
    y = np.array([labels[i % len(labels)] for i in range(60)])
    onx = to_onnx(
        LogisticRegression(max_iter=500).fit(x, y),
        x[:1],
        options=None if zipmap else {"zipmap": False},
    )
    path = tmp_path / f"clf-{zipmap}.onnx"
    path.write_bytes(onx.SerializeToString())
    return path, x


def test_a_default_skl2onnx_classifier_with_int_labels_is_served(tmp_path: Path) -> None:
    from driftline.models import LoadedModel

    path, x = _sk_classifier(tmp_path, [0, 1, 2], zipmap=True)
    plain, _ = _sk_classifier(tmp_path, [0, 1, 2], zipmap=False)
    rt = PipelineRuntime(
        name="iris",
        version="sha256:v",
        models=(RuntimeModel("clf", "sha256:c", LoadedModel(path, "clf")),),
        validations={"not_class_2": lambda t: t[("clf", "outputs")][1][:, 2] < 0.5},
        input_width=WIDTH,
    )
    values = [orjson.dumps({"id": f"r{i}", "tensor": [row]}) for i, row in enumerate(x.tolist())]
    out = _process(rt, values)
    assert out.rejected == [] and out.rows == 60
    label, proba = LoadedModel(plain, "plain").run(x)
    events = [orjson.loads(v) for _, v in out.results]
    for i, ev in enumerate(events):
        assert ev["outputs"]["clf"] == [[int(label[i, 0])], proba[i].astype(np.float64).tolist()]
        assert ev["check_failures"] == (["not_class_2"] if proba[i, 2] >= 0.5 else [])
    assert out.check_failures["not_class_2"] == int((proba[:, 2] >= 0.5).sum()) > 0


def test_a_classifier_with_string_labels_is_served_labels_as_strings(tmp_path: Path) -> None:
    from driftline.expressions import evaluate, parse
    from driftline.models import LoadedModel

    path, x = _sk_classifier(tmp_path, ["setosa", "versicolor"], zipmap=True)
    model = LoadedModel(path, "clf")
    names = {("clf", "outputs"): model.output_names}
    check = parse('clf.outputs["output_label"][0] != "setosa"')
    rt = PipelineRuntime(
        name="iris",
        version="sha256:v",
        models=(RuntimeModel("clf", "sha256:c", model),),
        validations={"not_setosa": lambda t: evaluate(check, t, names)},
        input_width=WIDTH,
    )
    out = _process(rt, [orjson.dumps({"tensor": x[:6].tolist()})])
    assert out.rejected == [] and out.rows == 6
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    labels, maps = session.run(None, {"X": x[:6]})
    for r, (_k, raw) in enumerate(out.results):
        event = orjson.loads(raw)
        label, proba = event["outputs"]["clf"]
        assert label == [str(labels[r])]
        assert proba == [float(np.float32(maps[r][c])) for c in ("setosa", "versicolor")]
        assert event["check_failures"] == ([] if labels[r] != "setosa" else ["not_setosa"])
    assert 0 < out.check_failures["not_setosa"] < 6
