"""Build the fraud example's ONNX models, baseline and sample requests, reproducibly.

    python examples/fraud/build_models.py
    python examples/fraud/build_models.py --reference-only   # data/reference.csv from the models

Trains, on the synthetic data of ``generate.py`` (fixed seeds, nothing downloaded):

- ``models/ccfraud.onnx``: the champion, a small multi-layer perceptron;
- ``models/fraud_base.onnx``: the challenger, a logistic regression.

Both take one float32 input ``tensor`` of shape (n, 29) and give one output ``probability`` of
shape (n, 1): the probability of fraud, so ``ccfraud.outputs[0][0]`` means what it means in the
original notebooks. It also writes ``data/baseline.csv`` (champion scores on legitimate
traffic, column ``score``), ``data/reference.csv`` (champion scores and ground-truth labels on
the generator's labelled reference set, columns ``score`` and ``label``: what the spec's CBPE
estimate is calibrated on) and the request files ``data/smoke_test.json``,
``data/high_fraud.json`` and ``data/drifted.json``.

Requires scikit-learn and skl2onnx (the ``dev`` extra).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
OPSET = {"": 17, "ai.onnx.ml": 3}
IR_VERSION = 8  # what opset 17 calls for; onnxruntime 1.31 reads IR ≤ 13


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fraud_generate", HERE / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def to_onnx(estimator: Any, n_features: int, doc: str) -> Any:
    """Convert a fitted classifier to ONNX with a single (n, 1) fraud-probability output."""
    import onnx
    from onnx import TensorProto, helper
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    converted = convert_sklearn(
        estimator,
        initial_types=[("tensor", FloatTensorType([None, n_features]))],
        options={id(estimator): {"zipmap": False}},
        target_opset=OPSET,
    )
    graph = converted.graph
    probabilities = next(o.name for o in graph.output if "prob" in o.name)
    # the converter gives [p_legit, p_fraud]; keep column 1 as an (n, 1) tensor
    constants = [
        helper.make_tensor("slice_start", TensorProto.INT64, [1], [1]),
        helper.make_tensor("slice_end", TensorProto.INT64, [1], [2]),
        helper.make_tensor("slice_axis", TensorProto.INT64, [1], [1]),
    ]
    slicer = helper.make_node(
        "Slice",
        [probabilities, "slice_start", "slice_end", "slice_axis"],
        ["probability"],
        name="fraud_probability",
    )
    output = helper.make_tensor_value_info("probability", TensorProto.FLOAT, [None, 1])
    new_graph = helper.make_graph(
        [*graph.node, slicer],
        "fraud",
        list(graph.input),
        [output],
        initializer=[*graph.initializer, *constants],
    )
    model = helper.make_model(
        new_graph,
        opset_imports=[helper.make_opsetid(domain, version) for domain, version in OPSET.items()],
        producer_name="driftline-example",
        doc_string=doc,
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def write_reference(session: Any, gen: ModuleType) -> Path:
    """``data/reference.csv``: the champion's scores on the labelled reference set."""
    rows, labels = gen.reference_set()
    scores = np.asarray(session.run(None, {"tensor": rows})[0][:, 0], dtype=np.float64)
    path = HERE / "data" / "reference.csv"
    with path.open("w", encoding="utf-8") as handle:
        handle.write("score,label\n")
        handle.writelines(f"{s:.9g},{y}\n" for s, y in zip(scores, labels.tolist(), strict=True))
    accuracy = float(np.mean((scores >= 0.5) == (labels == 1)))
    print(
        f"data/reference.csv: {len(labels)} rows, {int(labels.sum())} frauds, "
        f"accuracy {accuracy:.4f}"
    )
    return path


def main() -> None:
    import onnx
    import onnxruntime as ort
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier

    gen = load_generator()
    x, y = gen.training_set()
    champion = MLPClassifier((16, 8), alpha=1e-3, max_iter=400, random_state=0).fit(x, y)
    challenger = LogisticRegression(max_iter=1000).fit(x, y)

    (HERE / "models").mkdir(exist_ok=True)
    (HERE / "data").mkdir(exist_ok=True)
    sessions = {}
    for name, estimator, doc in (
        ("ccfraud", champion, "Champion fraud model (MLP 16-8) on synthetic card data"),
        ("fraud_base", challenger, "Challenger fraud model (logistic regression)"),
    ):
        path = HERE / "models" / f"{name}.onnx"
        model = to_onnx(estimator, gen.N_FEATURES, doc)
        onnx.save(model, path)
        sessions[name] = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        check = gen.normal_rows(256, seed=99)
        onnx_scores = sessions[name].run(None, {"tensor": check})[0][:, 0]
        np.testing.assert_allclose(onnx_scores, estimator.predict_proba(check)[:, 1], atol=1e-5)
        print(f"{path.relative_to(HERE)}: {path.stat().st_size} bytes")

    def score(name: str, rows: np.ndarray) -> np.ndarray:
        return np.asarray(sessions[name].run(None, {"tensor": rows})[0][:, 0], dtype=np.float64)

    baseline_rows = gen.normal_rows(2000, seed=11)
    baseline = score("ccfraud", baseline_rows)
    with (HERE / "data" / "baseline.csv").open("w", encoding="utf-8") as handle:
        handle.write("score\n")
        handle.writelines(f"{v:.9g}\n" for v in baseline)

    def pick(rows: np.ndarray, keep: Any) -> list[float]:
        champ, chall = score("ccfraud", rows), score("fraud_base", rows)
        index = int(np.flatnonzero(keep(champ, chall))[0])
        return [float(v) for v in rows[index]]

    requests = {
        "smoke_test": pick(
            gen.normal_rows(100, seed=21), lambda c, b: (c < 0.01) & (np.abs(c - b) < 0.01)
        ),
        "high_fraud": pick(gen.fraud_rows(100, seed=22), lambda c, b: c > 0.95),
        "drifted": pick(
            gen.drifted_rows(2000, shift=2.0, seed=23),
            lambda c, b: (c < 0.95) & (np.abs(c - b) > 0.05),
        ),
    }
    for name, row in requests.items():
        path = HERE / "data" / f"{name}.json"
        path.write_text(json.dumps({"tensor": [row]}) + "\n", encoding="utf-8")
        tensor = np.asarray([row], dtype=np.float32)
        print(
            f"{path.relative_to(HERE)}: ccfraud={score('ccfraud', tensor)[0]:.6f} "
            f"fraud_base={score('fraud_base', tensor)[0]:.6f}"
        )
    print(f"data/baseline.csv: {len(baseline)} scores, median {np.median(baseline):.6f}")
    write_reference(sessions["ccfraud"], gen)


def reference_only() -> None:
    """Rewrite ``data/reference.csv`` from the models as they are (no retraining)."""
    import onnxruntime as ort

    session = ort.InferenceSession(
        str(HERE / "models" / "ccfraud.onnx"), providers=["CPUExecutionProvider"]
    )
    write_reference(session, load_generator())


if __name__ == "__main__":
    reference_only() if "--reference-only" in sys.argv[1:] else main()
