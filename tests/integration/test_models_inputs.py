"""Models with several inputs, string inputs, nested and shaped tensors and V2 requests, served
by a real worker that follows the control topic, on the real broker: every request in its
natural form gets the results onnxruntime gives on the same arrays."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from driftline.config import KafkaSettings

from ._models_serve import T0, Served, deploy

pytestmark = pytest.mark.integration


@pytest.fixture
def served(topic_prefix: str, unique: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    kafka = KafkaSettings(topic_prefix=topic_prefix)
    env: dict[str, Any] = {"kafka": kafka, "store": tmp_path / "store", "unique": unique}
    yield env
    if "worker" in env:
        env["worker"].stop()


def _start(env: dict[str, Any]) -> Served:
    env["worker"] = Served(env["kafka"], env["store"], env["unique"])
    return env["worker"]  # type: ignore[no-any-return]


def _price_model(path: Path) -> tuple[Path, Any]:
    import pandas as pd
    from skl2onnx import to_onnx
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {"city": rng.choice(["paris", "lyon", "nice"], 40), "age": rng.uniform(18, 80, 40)}
    )
    target = frame["age"] * 2 + (frame["city"] == "nice") * 10
    pipe = make_pipeline(
        ColumnTransformer(
            [
                ("c", OneHotEncoder(handle_unknown="ignore"), ["city"]),
                ("n", StandardScaler(), ["age"]),
            ]
        ),
        LinearRegression(),
    ).fit(frame, target)
    path.write_bytes(to_onnx(pipe, frame[:1], target_opset=17).SerializeToString())
    return path, pipe


def _conv_model(path: Path) -> Path:
    """A 3-channel conv net with free height and width: mean of a 3x3 convolution."""
    w = np.random.default_rng(2).normal(size=(2, 3, 3, 3)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["img", "w"], ["c"], pads=[1, 1, 1, 1]),
            helper.make_node("GlobalAveragePool", ["c"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["score"]),
        ],
        "conv",
        [helper.make_tensor_value_info("img", TensorProto.FLOAT, ["n", 3, "h", "w"])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["n", 2])],
        initializer=[helper.make_tensor("w", TensorProto.FLOAT, w.shape, w.ravel().tolist())],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_named_string_and_numeric_inputs_and_shaped_images_equal_onnxruntime(
    served: dict[str, Any], tmp_path: Path
) -> None:
    price, pipe = _price_model(tmp_path / "price.onnx")
    conv = _conv_model(tmp_path / "conv.onnx")
    kafka, store = served["kafka"], served["store"]
    deploy(
        kafka,
        store,
        {
            "name": "homes",
            "models": [{"name": "price", "path": str(price)}],
            "validations": {"adult": "price.inputs[1][0] >= 21"},
        },
    )
    deploy(kafka, store, {"name": "vision", "models": [{"name": "conv", "path": str(conv)}]})
    worker = _start(served)

    cities, ages = ["nice", "paris", "lyon", "rome"], [20.0, 33.5, 61.0, 40.0]
    homes = [
        {"id": "r0", "time": T0, "inputs": {"city": cities[:2], "age": ages[:2]}},
        {
            "id": "r1",
            "time": T0,
            "parameters": {"content_type": "np"},
            "inputs": [
                {"name": "city", "shape": [2, 1], "datatype": "BYTES", "data": cities[2:]},
                {"name": "age", "shape": [2, 1], "datatype": "FP64", "data": ages[2:]},
            ],
        },
        {"id": "r2", "time": T0, "inputs": {"city": ["nice"]}},  # lacks age
    ]
    events, dead = worker.ask("homes", homes, results=4, dead=1)
    session = ort.InferenceSession(str(price), providers=["CPUExecutionProvider"])
    (want,) = session.run(
        None,
        {
            "city": np.array(cities, dtype=object).reshape(-1, 1),
            "age": np.array(ages).reshape(-1, 1),
        },
    )
    assert [e["outputs"]["price"][0][0] for e in events] == want.ravel().tolist()
    import pandas as pd

    np.testing.assert_allclose(
        want.ravel(), pipe.predict(pd.DataFrame({"city": cities, "age": ages})), rtol=1e-6
    )
    assert [e["inputs"] for e in events][1] == {"city": ["paris"], "age": [33.5]}
    assert [e["check_failures"] for e in events] == [["adult"], [], [], []]
    assert [(m.key(), dict(m.headers())["driftline-error"]) for m in dead] == [
        (b"2", b"missing_tensor")
    ]

    rng = np.random.default_rng(5)
    small = rng.normal(size=(2, 3, 8, 8)).astype(np.float32)
    tall = rng.normal(size=(1, 3, 16, 12)).astype(np.float32)
    vision = [
        {"id": "v0", "time": T0, "tensor": small.tolist()},  # nested
        {"id": "v1", "time": T0, "tensor": tall.ravel().tolist(), "shape": [1, 3, 16, 12]},
        {
            "id": "v2",
            "time": T0,
            "inputs": [
                {
                    "name": "img",
                    "shape": [1, 3, 16, 12],
                    "datatype": "FP32",
                    "data": base64.b64encode(tall.astype("<f4").tobytes()).decode(),
                }
            ],
        },
    ]
    events, _ = worker.ask("vision", vision, results=4)
    session = ort.InferenceSession(str(conv), providers=["CPUExecutionProvider"])
    (a,) = session.run(None, {"img": small})
    (b,) = session.run(None, {"img": tall})
    want_rows = [*a.astype(np.float64).tolist(), *b.astype(np.float64).tolist() * 2]
    assert [e["outputs"]["conv"][0] for e in events] == want_rows
    assert [(e["id"], e["row"]) for e in events] == [("v0", 0), ("v0", 1), ("v1", 0), ("v2", 0)]
    assert events[0]["inputs"] == small[0].astype(np.float64).ravel().tolist()
