"""``deploy`` runs every model once and refuses what the worker could not serve.

The models are third-party exports made here at test time (skl2onnx with its defaults, a
``ColumnTransformer`` pipeline, a graph fixed to batch size 1), not models written to pass.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from driftline.errors import SpecError
from driftline.spec import load_spec, spec_from_dict

pytestmark = pytest.mark.unit

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "fraud"


def _save(model: Any, path: Path) -> Path:
    path.write_bytes(model.SerializeToString())
    return path


def _data(n: int = 60, width: int = 4) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, width)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int64)


def _spec(*models: dict[str, Any]) -> dict[str, Any]:
    return {"name": "p", "models": list(models)}


def test_a_default_skl2onnx_classifier_is_accepted_its_zipmap_served_as_columns(
    tmp_path: Path,
) -> None:
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    from driftline.models import LoadedModel

    x, y = _data()
    clf = LogisticRegression().fit(x, y)
    path = _save(to_onnx(clf, x[:1], target_opset=17), tmp_path / "m.onnx")
    spec = spec_from_dict(_spec({"name": "clf", "path": str(path)}))
    label, proba = LoadedModel(path).run(x[:3])
    np.testing.assert_allclose(proba, clf.predict_proba(x[:3]), rtol=1e-5)
    assert spec.champion.name == "clf" and label.ravel().tolist() == clf.predict(x[:3]).tolist()


def _forest(tmp_path: Path, **options: Any) -> tuple[Path, Any, np.ndarray]:
    from skl2onnx import to_onnx
    from sklearn.ensemble import RandomForestClassifier

    x, y = _data()
    labels = np.where(y == 1, "fraud", "ok")
    clf = RandomForestClassifier(n_estimators=3, random_state=0).fit(x, labels)
    onx = to_onnx(clf, x[:1], target_opset=17, options={id(clf): options} if options else None)
    return _save(onx, tmp_path / "f.onnx"), clf, x


def test_string_labels_are_accepted_and_served_as_strings(tmp_path: Path) -> None:
    from driftline.models import LoadedModel

    path, clf, x = _forest(tmp_path, zipmap=False)
    spec = spec_from_dict(_spec({"name": "forest", "path": str(path)}))
    assert spec.champion.name == "forest"
    label, _proba = LoadedModel(path).run(x[:5])
    assert label.ravel().tolist() == clf.predict(x[:5]).tolist()


def test_string_outputs_in_expressions_are_checked_when_the_spec_compiles(
    tmp_path: Path,
) -> None:
    path, _clf, _x = _forest(tmp_path)  # skl2onnx's defaults: label + ZipMap
    doc = _spec({"name": "forest", "path": str(path)})
    doc["validations"] = {"not_fraud": 'forest.outputs["output_label"][0] != "fraud"'}
    doc["alerts"] = {
        "frauds": 'count(forest.outputs[0][0].one_of("fraud"), "1m", "1s") > 3',
    }
    spec = spec_from_dict(doc)
    assert set(spec.validations) == {"not_fraud"} and set(spec.alerts) == {"frauds"}
    for where, text, hint in [
        ("validations.bad", "forest.outputs[0][0] == 1", "compares the string"),
        ("validations.bad", 'forest.outputs[0][0] < "fraud"', "orders strings"),
        ("validations.bad", "forest.outputs[0][0] * 2 > 1", "arithmetic"),
        ("alerts.bad.when", 'count(forest.outputs[0][0], "1m", "1s") > 3', "count()"),
    ]:
        bad = dict(doc)
        kind, name = where.split(".")[:2]
        bad[kind] = {name: text}
        with pytest.raises(SpecError, match=hint) as info:
            spec_from_dict(bad)
        assert info.value.field == where and "forest.outputs[0][0]" in str(info.value)
        assert 'm.outputs["output_label"][0] == "setosa"' in str(info.value)  # the fix
    assay = dict(doc)
    assay["assays"] = {
        "labels": {"iopath": "forest.outputs[0][0]", "baseline": {"values": [0.0, 1.0]},
                   "window": {"width": "1m"}},
    }  # fmt: skip
    with pytest.raises(SpecError, match="needs numbers") as info:
        spec_from_dict(assay)
    assert info.value.field == "assays.labels.iopath"
    assay["assays"]["labels"]["iopath"] = 'forest.outputs[0][0] == "fraud"'
    assert spec_from_dict(assay).assays["labels"]


def test_a_column_transformer_with_named_string_and_numeric_inputs_is_accepted(
    tmp_path: Path,
) -> None:
    import pandas as pd
    from skl2onnx import to_onnx
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    frame = pd.DataFrame({"city": ["a", "b", "c", "a"] * 5, "age": np.arange(20.0)})
    target = np.arange(20.0)
    pipe = make_pipeline(
        ColumnTransformer([("c", OneHotEncoder(), ["city"]), ("n", StandardScaler(), ["age"])]),
        LinearRegression(),
    ).fit(frame, target)
    onx = to_onnx(pipe, frame[:1], target_opset=17)
    path = _save(onx, tmp_path / "c.onnx")
    spec = spec_from_dict(_spec({"name": "price", "path": str(path)}))
    assert [t.name for t in spec.champion.info.inputs] == ["city", "age"]  # type: ignore[union-attr]

    from driftline.models import LoadedModel

    feeds = {"city": frame[["city"]].to_numpy(dtype=object), "age": frame[["age"]].to_numpy()}
    (got,) = LoadedModel(path).run_feeds(feeds)
    np.testing.assert_allclose(got.ravel(), pipe.predict(frame), rtol=1e-4, atol=1e-4)


def test_the_monitor_windows_numeric_named_inputs_and_deploy_refuses_strings(
    tmp_path: Path,
) -> None:
    import pandas as pd
    from skl2onnx import to_onnx
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    frame = pd.DataFrame({"city": ["a", "b", "c", "a"] * 5, "age": np.arange(20.0)})
    pipe = make_pipeline(
        ColumnTransformer([("c", OneHotEncoder(), ["city"]), ("n", StandardScaler(), ["age"])]),
        LinearRegression(),
    ).fit(frame, np.arange(20.0))
    path = _save(to_onnx(pipe, frame[:1], target_opset=17), tmp_path / "c.onnx")
    doc = _spec({"name": "price", "path": str(path)})
    doc["assays"] = {
        "age_drift": {"iopath": "price.inputs[1][0]", "baseline": {"values": [1.0, 2.0, 3.0]},
                      "window": {"width": "1m"}},
    }  # fmt: skip
    # The numeric input, by position or by name, is windowed.
    assert spec_from_dict(doc).assays["age_drift"]
    doc["assays"]["age_drift"]["iopath"] = 'price.inputs["age"][0] * 2'
    assert spec_from_dict(doc).assays["age_drift"]
    # The string input is not, and deploy says which input and why.
    for iopath in ("price.inputs[0][0]", 'price.inputs["city"][0]'):
        doc["assays"]["age_drift"]["iopath"] = iopath
        with pytest.raises(SpecError, match="input 'city' of model 'price', which holds strings"):
            spec_from_dict(doc)
    doc["assays"] = {}
    doc["alerts"] = {"young": {"when": 'count(price.inputs["city"][0] > 1, "1m", "1m") > 3'}}
    with pytest.raises(SpecError, match="holds strings") as info:
        spec_from_dict(doc)
    assert info.value.field == "alerts.young.when"
    doc["alerts"]["young"]["when"] = 'count(price.inputs["age"][0] < 18, "1m", "1m") > 3'
    assert spec_from_dict(doc).alerts["young"]
    # With record_inputs: false there is nothing to window.
    doc["options"] = {"record_inputs": False}
    with pytest.raises(SpecError, match="results would not carry") as info:
        spec_from_dict(doc)
    assert info.value.field == "options.record_inputs"


def test_a_model_fixed_to_batch_size_one_is_accepted_and_run_row_by_row(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "fixed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = _save(model, tmp_path / "one.onnx")
    spec_from_dict(_spec({"name": "one", "path": str(path)}))
    from driftline.models import LoadedModel

    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    (got,) = LoadedModel(path).run_feeds({"x": x})
    assert got.tolist() == x.tolist()


def test_a_float_input_of_another_type_is_refused_naming_the_model(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT)],
        "u16",
        [helper.make_tensor_value_info("x", TensorProto.UINT16, [None, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    with pytest.raises(SpecError, match="input 'x' has type tensor\\(uint16\\)") as info:
        spec_from_dict(_spec({"name": "u16", "path": str(_save(model, tmp_path / "u.onnx"))}))
    assert "'u16'" in str(info.value)


def test_a_model_with_fixed_shapes_that_fails_on_its_own_shapes_is_refused(
    tmp_path: Path,
) -> None:
    from onnx import TensorProto, helper

    # Reshape to 5 values from inputs of 3: it fails on every request, whatever they hold.
    shape = helper.make_tensor("s", TensorProto.INT64, [2], [-1, 5])
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "s"], ["y"])],
        "bad",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 5])],
        initializer=[shape],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    with pytest.raises(SpecError, match="fails on a synthetic batch") as info:
        spec_from_dict(_spec({"name": "bad", "path": str(_save(model, tmp_path / "b.onnx"))}))
    assert "'bad'" in str(info.value)


def test_a_shadow_of_another_width_is_refused(tmp_path: Path) -> None:
    from skl2onnx import to_onnx
    from sklearn.linear_model import LinearRegression

    x4, y = _data(width=4)
    x3 = x4[:, :3].copy()
    a = _save(to_onnx(LinearRegression().fit(x4, y), x4[:1], target_opset=17), tmp_path / "a.onnx")
    b = _save(to_onnx(LinearRegression().fit(x3, y), x3[:1], target_opset=17), tmp_path / "b.onnx")
    with pytest.raises(SpecError, match="champion's rows") as info:
        spec_from_dict(
            _spec({"name": "a", "path": str(a)}, {"name": "b", "path": str(b), "shadow": True})
        )
    assert info.value.field == "models[1]"


def test_the_fraud_example_passes_the_check() -> None:
    spec = load_spec(EXAMPLE / "pipeline.yaml")
    assert [m.name for m in spec.models] == ["ccfraud", "fraud_base"]


def test_class_names_resolve_to_columns_in_the_canonical_spec(tmp_path: Path) -> None:
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    from driftline.expressions import ModelRef, to_text
    from driftline.models import inspect_model
    from driftline.spec import spec_from_canonical

    x, _ = _data(90)
    names = np.array(["setosa", "versicolor", "virginica"], dtype=object)[np.arange(90) % 3]
    x[:, 0] += np.arange(90) % 3
    clf = LogisticRegression(max_iter=500).fit(x, names)
    path = _save(to_onnx(clf, x[:1], target_opset=17), tmp_path / "iris.onnx")
    assert inspect_model(path).classes == {
        "output_probability": ("setosa", "versicolor", "virginica")
    }
    doc = _spec({"name": "iris", "path": str(path)})
    doc["validations"] = {"unsure": 'iris.outputs["output_probability"]["virginica"] < 0.9'}
    spec = spec_from_dict(doc)
    # the canonical spec stores the column index: processes without the file read it alike
    assert to_text(spec.validations["unsure"]) == 'iris.outputs["output_probability"][2] < 0.9'
    canonical = spec.to_canonical()
    assert canonical["validations"]["unsure"]["left"]["index"] == ["output_probability", 2]
    assert spec_from_canonical(canonical).version == spec.version
    # the SDK and an upload's handle build the same expression
    doc["validations"] = {
        "unsure": ModelRef("iris").outputs["output_probability"]["virginica"] < 0.9
    }
    assert spec_from_dict(doc).version == spec.version
    handle = inspect_model(path, "iris")
    doc["validations"] = {"unsure": handle.outputs["output_probability"]["virginica"] < 0.9}
    assert spec_from_dict(doc).version == spec.version
    # and the same as the index written out
    doc["validations"] = {"unsure": "iris.outputs[1][2] < 0.9"}
    assert to_text(spec_from_dict(doc).validations["unsure"]) == "iris.outputs[1][2] < 0.9"

    doc["validations"] = {"bad": 'iris.outputs["output_probability"]["rose"] < 0.9'}
    with pytest.raises(SpecError, match="has no class 'rose'") as info:
        spec_from_dict(doc)
    assert "['setosa', 'versicolor', 'virginica']" in str(info.value)
    assert info.value.field == "validations.bad"
    doc["validations"] = {"bad": 'iris.outputs["output_label"]["setosa"] == "setosa"'}
    with pytest.raises(SpecError, match="not a ZipMap output"):
        spec_from_dict(doc)
    doc["validations"] = {"v": 'iris.outputs[1]["virginica"] > 0.5'}
    doc["alerts"] = {"a": 'count(iris.outputs[1]["setosa"] > 0.5, "1m", "1s") > 3'}
    doc["assays"] = {
        "p": {"iopath": 'iris.outputs["output_probability"]["versicolor"]',
              "baseline": {"values": [0.1, 0.5, 0.9]}, "window": {"width": "1m"}},
    }  # fmt: skip
    resolved = spec_from_dict(doc)
    assert to_text(resolved.validations["v"]) == "iris.outputs[1][2] > 0.5"
    assert to_text(resolved.alerts["a"].when) == 'count(iris.outputs[1][0] > 0.5, "1m", "1s") > 3'
    assert to_text(resolved.assays["p"].iopath) == 'iris.outputs["output_probability"][1]'


def test_a_sequence_of_one_tensor_per_row_is_accepted_and_served_as_rows(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    from driftline.models import LoadedModel

    graph = helper.make_graph(
        [helper.make_node("SplitToSequence", ["x"], ["rows"], axis=0, keepdims=0)],
        "rows",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
        [helper.make_tensor_sequence_value_info("rows", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "rows.onnx"
    onnx.save(model, path)
    doc = _spec({"name": "rows", "path": str(path)})
    doc["validations"] = {"big": "max(rows.outputs[0]) < 2"}
    assert "big" in spec_from_dict(doc).validations
    x = np.arange(12, dtype=np.float32).reshape(4, 3) / 4
    (got,) = LoadedModel(path).run(x)
    np.testing.assert_array_equal(got, x)
