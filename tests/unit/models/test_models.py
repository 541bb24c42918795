from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from driftline.errors import ModelError
from driftline.expressions import Variable, same
from driftline.models import LoadedModel, ModelStore, inspect_model

pytestmark = pytest.mark.unit

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "fraud"
CCFRAUD = EXAMPLE / "models" / "ccfraud.onnx"


def _external_model(tmp_path: Path, location: str) -> Path:
    weight = helper.make_tensor("w", TensorProto.FLOAT, [1], [2.0])
    weight.data_location = TensorProto.EXTERNAL
    weight.ClearField("float_data")
    entry = weight.external_data.add()
    entry.key, entry.value = "location", location
    node = helper.make_node("Mul", ["x", "w"], ["y"])
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])],
        initializer=[weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "ext.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def test_inspect_example_model() -> None:
    info = inspect_model(CCFRAUD, "ccfraud")
    assert info.name == "ccfraud" and len(info.sha256) == 64
    assert [(t.name, t.dtype, t.width) for t in info.inputs] == [("tensor", "float32", 29)]
    assert [(t.name, t.width) for t in info.outputs] == [("probability", 1)]
    assert info.input_width == 29
    # the info doubles as an SDK handle
    assert same(info.outputs[0][0], Variable("ccfraud", "outputs", (0, 0)))
    assert same(info.outputs["probability"][0], Variable("ccfraud", "outputs", ("probability", 0)))
    assert [t.name for t in info.outputs] == ["probability"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "not an ONNX model"),
        (b"\x00\xffnot a model at all" * 10, "ONNX"),
        (b"name,score\n1,2\n", "ONNX"),
    ],
)
def test_inspect_refuses_non_onnx_files(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    with pytest.raises(ModelError, match=message) as info:
        inspect_model(path)
    assert "bad.onnx" in str(info.value)


def test_inspect_refuses_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        inspect_model(tmp_path / "nope.onnx")


@pytest.mark.parametrize("location", ["../outside.bin", "/etc/passwd", "sub/../../x.bin"])
def test_inspect_refuses_external_data_outside_the_model_directory(
    tmp_path: Path, location: str
) -> None:
    model_dir = tmp_path / "m"
    model_dir.mkdir()
    path = _external_model(model_dir, location)
    with pytest.raises(ModelError, match="outside the model's directory") as info:
        inspect_model(path)
    assert repr(location) in str(info.value)


def test_external_data_inside_the_directory_is_accepted_but_not_stored(tmp_path: Path) -> None:
    path = _external_model(tmp_path, "weights.bin")
    (tmp_path / "weights.bin").write_bytes(np.array([2.0], dtype=np.float32).tobytes())
    info = inspect_model(path)
    assert info.outputs[0].name == "y"
    with pytest.raises(ModelError, match="external data"):
        ModelStore(tmp_path / "store").put("ext", path)


def test_store_is_content_addressed_and_idempotent(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store")
    first = store.put("ccfraud", CCFRAUD)
    copy = tmp_path / "renamed.onnx"
    shutil.copy(CCFRAUD, copy)
    second = store.put("ccfraud", copy)
    assert first.sha256 == second.sha256
    assert (
        first.path
        == store.path(first.sha256)
        == tmp_path / "store" / "sha256" / f"{first.sha256}.onnx"
    )
    assert store.has(first.sha256) and store.has("sha256:" + first.sha256)
    assert store.path(first.sha256).read_bytes() == CCFRAUD.read_bytes()
    assert store.list() == [first.sha256]
    assert not store.has("0" * 64)
    assert store.get(first.sha256, "ccfraud").outputs[0].name == "probability"
    with pytest.raises(ModelError, match="not in the store"):
        store.get("0" * 64)
    with pytest.raises(ModelError, match="not a sha256"):
        store.path("../../etc/passwd")
    with pytest.raises(ModelError, match="identifier"):
        store.put("fraud-base", CCFRAUD)


def test_loaded_model_runs_batches() -> None:
    model = LoadedModel(CCFRAUD, "ccfraud")
    assert model.input_width == 29 and model.output_names == ["probability"]
    rng = np.random.default_rng(0)
    batch = rng.standard_normal((64, 29)).astype(np.float32)
    (scores,) = model.run(batch)
    assert scores.shape == (64, 1)
    assert ((scores >= 0) & (scores <= 1)).all()
    # one row at a time gives the same numbers as the batch
    single = np.vstack([model.run(batch[i : i + 1])[0] for i in range(3)])
    np.testing.assert_allclose(single, scores[:3], rtol=1e-6)
    assert model.run(np.empty((0, 29), np.float32))[0].shape == (0, 1)
    with pytest.raises(ModelError, match="29"):
        model.run(batch[:, :10])
    with pytest.raises(ModelError, match="2-D"):
        model.run(batch[0])
    with pytest.raises(ValueError, match="intra_op_threads"):
        LoadedModel(CCFRAUD, intra_op_threads=0)


def test_unloadable_onnx_is_refused(tmp_path: Path) -> None:
    node = helper.make_node("NoSuchOp", ["x"], ["y"])
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "odd.onnx"
    onnx.save(model, path)
    with pytest.raises(ModelError, match="cannot be loaded by onnxruntime"):
        inspect_model(path)


def _classifier(tmp_path: Path, labels: list[Any], zipmap: bool) -> tuple[Path, np.ndarray]:
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(5)
    x = rng.normal(size=(90, 4)).astype(np.float32)
    y = np.array([labels[i % len(labels)] for i in range(90)])
    x[:, 0] += np.arange(90) % len(labels)  # separable enough to learn
    options = None if zipmap else {"zipmap": False}
    onx = to_onnx(LogisticRegression(max_iter=500).fit(x, y), x[:1], options=options)
    path = tmp_path / f"clf-{zipmap}-{type(labels[0]).__name__}.onnx"
    path.write_bytes(onx.SerializeToString())
    return path, x


@pytest.mark.parametrize("labels", [[0, 1, 2], ["setosa", "versicolor", "virginica"]])
def test_a_zipmap_output_becomes_one_probability_column_per_class(
    tmp_path: Path, labels: list[Any]
) -> None:
    # skl2onnx's default export: a label tensor and a ZipMap seq(map) of class probabilities.
    default, x = _classifier(tmp_path, labels, zipmap=True)
    plain, _ = _classifier(tmp_path, labels, zipmap=False)
    model = LoadedModel(default, "clf")
    assert model.output_classes == {"output_probability": labels}
    got_label, got_proba = model.run(x)
    want_label, want_proba = LoadedModel(plain, "plain").run(x)
    assert got_proba.shape == (90, 3) and got_proba.dtype == np.float32
    np.testing.assert_array_equal(got_proba, want_proba)  # the same numbers, column per class
    assert got_label.tolist() == want_label.tolist()
    assert model.run(x[:0])[1].shape[0] == 0
    assert LoadedModel(plain, "plain").output_classes == {}
