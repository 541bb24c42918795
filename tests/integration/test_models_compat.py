"""Model compatibility: models nobody here wrote, built or found at test time from packages,
each deployed and served by one real worker on the real broker in a request of its natural
form (rows, nested tensor, named inputs, V2), with results equal to onnxruntime's on the same
arrays, or refused at deploy with a message naming the model and the reason.

- scikit-learn models exported by skl2onnx with its defaults: a logistic regression (label
  tensor + ZipMap probabilities), a gradient boosting regressor, a ``ColumnTransformer`` with a
  string and a numeric column, a linear model on int64 inputs, and a random forest with string
  labels (its label output carried as strings, its ZipMap as one column per class);
- the ``onnx`` wheel's backend-test CNNs (``onnx/backend/test/data/light``: SqueezeNet,
  ShuffleNet, ResNet-50, Inception v1, all fixed to batch size 1 on a 3x224x224 image) and two
  PyTorch-converted graphs (an int64 ``Embedding``, a ``Conv2d`` fixed to batch size 2).
"""

from __future__ import annotations

import base64
import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from driftline.config import KafkaSettings
from driftline.errors import SpecError
from driftline.spec import spec_from_dict

from ._models_serve import T0, Served, deploy

pytestmark = pytest.mark.integration

ONNX_DATA = Path(onnx.__file__).parent / "backend" / "test" / "data"
CNNS = ("squeezenet", "shufflenet", "resnet50", "inception_v1")


@dataclass
class Case:
    """A model, the request that serves it, and onnxruntime's feeds for the same rows."""

    name: str
    path: Path
    request: dict[str, Any]
    feeds: dict[str, np.ndarray]
    rows: int
    options: dict[str, Any] | None = None


def _skl(tmp: Path) -> tuple[list[Case], Path, Any]:
    import pandas as pd
    from skl2onnx import to_onnx
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import GradientBoostingRegressor, RandomForestClassifier
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    rng = np.random.default_rng(11)
    x = rng.normal(size=(80, 4)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)

    def save(model: Any, sample: Any, name: str) -> Path:
        path = tmp / f"{name}.onnx"
        path.write_bytes(to_onnx(model, sample, target_opset=17).SerializeToString())
        return path

    cases = []
    q = x[:3]
    logreg = save(LogisticRegression().fit(x, y), x[:1], "logreg")
    cases.append(Case("logreg", logreg, {"tensor": q.tolist()}, {"X": q}, 3))
    gbr = save(
        GradientBoostingRegressor(n_estimators=20, random_state=0).fit(x, x[:, 2]), x[:1], "gbr"
    )
    v2 = {
        "inputs": [
            {"name": "X", "shape": [2, 4], "datatype": "FP32", "data": q[:2].ravel().tolist()}
        ],
        "parameters": {},
    }
    cases.append(Case("gbr", gbr, v2, {"X": q[:2]}, 2))
    frame = pd.DataFrame({"city": rng.choice(["a", "b", "c"], 80), "age": rng.uniform(18, 80, 80)})
    pipe = make_pipeline(
        ColumnTransformer(
            [
                ("c", OneHotEncoder(handle_unknown="ignore"), ["city"]),
                ("n", StandardScaler(), ["age"]),
            ]
        ),
        LinearRegression(),
    ).fit(frame, frame["age"] + (frame["city"] == "b") * 5)
    ct = save(pipe, frame[:1], "columns")
    cities, ages = ["a", "b", "zzz"], [20.0, 40.0, 60.0]
    cases.append(
        Case(
            "columns",
            ct,
            {"inputs": {"city": cities, "age": ages}},
            {
                "city": np.array(cities, dtype=object).reshape(-1, 1),
                "age": np.array(ages).reshape(-1, 1),
            },
            3,
        )
    )
    xi = rng.integers(0, 10, size=(50, 3)).astype(np.int64)
    ints = save(LinearRegression().fit(xi, xi @ [1.0, 2.0, 3.0]), xi[:1], "ints")
    cases.append(Case("ints", ints, {"tensor": xi[:2].tolist()}, {"X": xi[:2]}, 2))
    labels = np.where(y == 1, "fraud", "ok")
    forest = save(
        RandomForestClassifier(n_estimators=3, random_state=0).fit(x, labels), x[:1], "forest"
    )
    cases.append(Case("forest", forest, {"tensor": x[:6].tolist()}, {"X": x[:6]}, 6))
    return cases, forest, pipe


def _cnns(tmp: Path) -> list[Case]:
    cases = []
    image = np.random.default_rng(3).uniform(size=(2, 3, 224, 224)).astype(np.float32)
    for name in CNNS:
        path = ONNX_DATA / "light" / f"light_{name}.onnx"
        if not path.is_file():
            continue
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        input_name = session.get_inputs()[0].name
        raw = base64.b64encode(image.astype("<f4").tobytes()).decode()
        v2 = {
            "inputs": [
                {"name": input_name, "shape": [2, 3, 224, 224], "datatype": "FP32", "data": raw}
            ]
        }
        cases.append(
            Case(
                name,
                path,
                v2,
                {input_name: image},
                2,
                {"max_message_bytes": 4_000_000, "record_inputs": False},
            )
        )
    emb = ONNX_DATA / "pytorch-converted" / "test_Embedding" / "model.onnx"
    if emb.is_file():
        ids = np.array([[0, 2, 1, 3]], dtype=np.int64)
        cases.append(Case("embedding", emb, {"tensor": ids.tolist()}, {"0": ids}, 1))
    conv = ONNX_DATA / "pytorch-converted" / "test_Conv2d" / "model.onnx"
    if conv.is_file():
        img = np.random.default_rng(4).normal(size=(2, 3, 7, 5)).astype(np.float32)
        cases.append(Case("conv2d", conv, {"tensor": img.tolist()}, {"0": img}, 2))
    return cases


def _expected(case: Case) -> list[list[list[float]]]:
    """onnxruntime's outputs for the case's rows as a result carries them: per row, every
    output flattened (ZipMap maps as one column per class); batch-1 models row by row."""
    session = ort.InferenceSession(str(case.path), providers=["CPUExecutionProvider"])
    first = session.get_inputs()[0].shape[0]
    chunks = (
        [case.feeds]
        if first != 1
        else [{k: v[r : r + 1] for k, v in case.feeds.items()} for r in range(case.rows)]
    )
    rows: list[list[list[float]]] = []
    for feeds in chunks:
        outs = session.run(None, feeds)
        n = next(iter(feeds.values())).shape[0]
        cols = []
        for o in outs:
            if isinstance(o, list):  # ZipMap: a list of {class: probability}
                arr = np.array([[m[c] for c in sorted(m)] for m in o], dtype=np.float32)
            else:
                arr = np.asarray(o).reshape(n, -1)
            cols.append(arr.astype(np.float64) if arr.dtype.kind == "f" else arr)
        rows.extend([[c[r].tolist() for c in cols] for r in range(n)])
    return rows


@pytest.fixture(scope="module")
def compat(kafka_admin: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    unique = f"compat{time.monotonic_ns()}"
    tmp = tmp_path_factory.mktemp("compat")
    kafka = KafkaSettings(topic_prefix=f"t{unique}")
    store = tmp / "store"
    skl, forest, _ = _skl(tmp)
    cases = {c.name: c for c in [*skl, *_cnns(tmp)]}
    for c in cases.values():
        doc: dict[str, Any] = {"name": c.name, "models": [{"name": c.name, "path": str(c.path)}]}
        if c.options:
            doc["options"] = c.options
        deploy(kafka, store, doc)
    worker = Served(kafka, store, unique)
    requests = {name: {"id": f"{name}-1", "time": T0, **c.request} for name, c in cases.items()}
    try:
        yield {
            "kafka": kafka,
            "cases": cases,
            "worker": worker,
            "requests": requests,
            "forest": forest,
        }
    finally:
        worker.stop()
        topics = [
            t
            for t in kafka_admin.list_topics(timeout=10).topics
            if t.startswith(kafka.topic_prefix + ".")
        ]
        if topics:
            for fut in kafka_admin.delete_topics(topics, operation_timeout=15).values():
                with contextlib.suppress(Exception):
                    fut.result(30)


NAMES = ["logreg", "gbr", "columns", "ints", "forest", *CNNS, "embedding", "conv2d"]


@pytest.mark.parametrize("name", NAMES)
def test_each_model_serves_its_natural_request_as_onnxruntime_does(
    compat: dict[str, Any], name: str
) -> None:
    case = compat["cases"].get(name)
    if case is None:
        pytest.skip(f"the installed onnx wheel does not ship {name}")
    events, _ = compat["worker"].ask(name, [compat["requests"][name]], results=case.rows)
    assert [(e["id"], e["row"]) for e in events] == [(f"{name}-1", r) for r in range(case.rows)]
    assert [e["outputs"][name] for e in events] == _expected(case)
    if name == "forest":  # string labels travel as JSON strings, as onnxruntime gives them
        assert {type(e["outputs"][name][0][0]) for e in events} == {str}


def test_the_deploy_check_names_what_a_model_lacks(tmp_path: Path) -> None:
    """A graph whose output is a sequence that is no ZipMap is refused at deploy, even with
    free input dimensions (where a failed synthetic run alone proves nothing)."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("SequenceConstruct", ["x"], ["seq"])],
        "seq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", "k"])],
        [helper.make_tensor_sequence_value_info("seq", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "seq.onnx"
    onnx.save(model, path)
    with pytest.raises(
        SpecError, match=r"model 'seqs': output 'seq' is an ONNX seq\(tensor\(float\)\) of 1 "
    ):
        spec_from_dict({"name": "s", "models": [{"name": "seqs", "path": str(path)}]})
