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


def test_string_labels_are_refused(tmp_path: Path) -> None:
    from skl2onnx import to_onnx
    from sklearn.ensemble import RandomForestClassifier

    x, y = _data()
    labels = np.where(y == 1, "fraud", "ok")
    clf = RandomForestClassifier(n_estimators=3, random_state=0).fit(x, labels)
    onx = to_onnx(clf, x[:1], target_opset=17, options={id(clf): {"zipmap": False}})
    with pytest.raises(SpecError, match="string tensor") as info:
        spec_from_dict(_spec({"name": "forest", "path": str(_save(onx, tmp_path / "f.onnx"))}))
    assert "'forest'" in str(info.value)


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
