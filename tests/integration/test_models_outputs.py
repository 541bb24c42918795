"""Every common kind of model output, served by a real worker on the real broker and read
back by the monitor engine on real Redis: string labels (a skl2onnx random forest on string
classes, with its defaults, its ZipMap columns addressed by class name), variable-length
outputs (a detector-like graph fixed to batch size 1 whose scores have a free length), and
booleans; with validations, a count alert and an assay over them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import orjson
import pytest
from onnx import TensorProto, helper

from driftline.compile import plans_from_spec
from driftline.config import KafkaSettings, RedisSettings, Settings
from driftline.spec import spec_from_dict
from driftline.streams._build import history_baseline
from driftline.streams._engine import Batch, PipelineEngine
from driftline.streams.state import RedisState

from ._models_serve import T0, Served, deploy
from .test_worker import _read

pytestmark = pytest.mark.integration

WIDTH = 6
#: The detector keeps the values above this threshold: its "boxes" for one image.
KEEP = 0.5


def _detector(path: Path) -> Path:
    """x [1, 6] → scores = the values of x above KEEP (a free length, possibly 0), and
    high = x > 0.9 (booleans): an object detector's confidences in miniature."""
    keep = helper.make_tensor("keep", TensorProto.FLOAT, [], [KEEP])
    high = helper.make_tensor("high_t", TensorProto.FLOAT, [], [0.9])
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["x"], ["flat"], axis=0),
            helper.make_node("Greater", ["x", "keep"], ["mask2"]),
            helper.make_node("Flatten", ["mask2"], ["mask_flat"], axis=0),
            helper.make_node("Squeeze", ["flat"], ["flat1"]),
            helper.make_node("Squeeze", ["mask_flat"], ["mask1"]),
            helper.make_node("Compress", ["flat1", "mask1"], ["scores"]),
            helper.make_node("Greater", ["x", "high_t"], ["high"]),
        ],
        "detector",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, WIDTH])],
        [
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["boxes"]),
            helper.make_tensor_value_info("high", TensorProto.BOOL, [1, WIDTH]),
        ],
        initializer=[keep, high],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def _forest(path: Path) -> tuple[Path, np.ndarray]:
    from skl2onnx import to_onnx
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(5)
    x = rng.normal(size=(120, 4)).astype(np.float32)
    labels = np.where(x[:, 0] + x[:, 1] > 0, "setosa", "virginica").astype(object)
    labels[x[:, 2] > 1.0] = "versicolor"
    clf = RandomForestClassifier(n_estimators=5, random_state=0).fit(x, labels)
    path.write_bytes(to_onnx(clf, x[:1], target_opset=17).SerializeToString())
    return path, rng.normal(size=(24, 4)).astype(np.float32)


def _engine(spec: Any, redis_client: Any, prefix: str) -> PipelineEngine:
    alerts, assays = plans_from_spec(spec, lambda y: np.asarray(y.baseline["values"]))
    state = RedisState(redis_client, prefix, spec.name)
    return PipelineEngine(
        spec.name,
        spec.version,
        [m.name for m in spec.models],
        alerts,
        assays,
        state,
        1,
        0,
        tensor_names=spec.tensor_names(),
    )


def _results(kafka: KafkaSettings, pipeline: str, n: int) -> tuple[list[dict[str, Any]], Batch]:
    got = _read(kafka, kafka.topic(pipeline, "results"), n)
    assert len(got) == n
    batch = Batch.of("res", [(0, i, m.value()) for i, m in enumerate(got)])
    return [orjson.loads(m.value()) for m in got], batch


def test_string_labels_serve_validate_and_count_in_an_alert(
    tmp_path: Path, topic_prefix: str, unique: str, redis_client: Any, redis_prefix: str
) -> None:
    path, x = _forest(tmp_path / "forest.onnx")
    kafka = KafkaSettings(topic_prefix=topic_prefix)
    spec = deploy(
        kafka,
        tmp_path / "store",
        {
            "name": "iris",
            "models": [{"name": "forest", "path": str(path)}],
            "validations": {
                "not_virginica": 'forest.outputs["output_label"][0] != "virginica"',
                "usual": 'forest.outputs[0][0].one_of("setosa", "virginica")',
                "unsure": 'forest.outputs["output_probability"]["virginica"] < 0.5',
            },
            "alerts": {
                "virginicas": {
                    "when": 'count(forest.outputs["output_label"][0] == "virginica", "1s", "1s")'
                    " >= 1",
                    "notify": ["stdout"],
                }
            },
        },
    )
    worker = Served(kafka, tmp_path / "store", unique)
    try:
        requests = [
            {"id": "a", "time": T0, "tensor": x[:20].tolist()},
            {"id": "b", "time": T0 + 5000, "tensor": x[20:].tolist()},
        ]
        worker.ask("iris", requests, results=0)
        events, batch = _results(kafka, "iris", len(x))
    finally:
        worker.stop()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    labels, maps = session.run(None, {"X": x})
    labels = labels.tolist()
    by_row = {(e["id"], e["row"]): e for e in events}
    served = [by_row[("a", r)] for r in range(20)] + [by_row[("b", r)] for r in range(4)]
    assert [e["outputs"]["forest"][0] for e in served] == [[v] for v in labels]
    assert [e["outputs"]["forest"][1] for e in served] == [
        [float(np.float32(m[c])) for c in ("setosa", "versicolor", "virginica")] for m in maps
    ]
    for e, label, probs in zip(served, labels, maps, strict=True):
        expected = {"not_virginica"} if label == "virginica" else set()
        if label == "versicolor":
            expected.add("usual")
        if not probs["virginica"] < 0.5:
            expected.add("unsure")
        assert set(e["check_failures"]) == expected
    assert "versicolor" in labels and "virginica" in labels[:20]

    engine = _engine(spec, redis_client, redis_prefix)
    assert engine.ingest(batch).accepted == len(x)
    closed = engine.close(floor=T0 + 6000)
    engine.commit(closed)
    firing = [n for n in closed.notifications if n.state == "firing"]
    assert firing and firing[0].value == labels[:20].count("virginica")


def test_variable_length_and_bool_outputs_serve_validate_and_feed_an_assay(
    tmp_path: Path, topic_prefix: str, unique: str, redis_client: Any, redis_prefix: str
) -> None:
    path = _detector(tmp_path / "det.onnx")
    kafka = KafkaSettings(topic_prefix=topic_prefix)
    baseline = [0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.6, 0.7, 0.8]
    spec = deploy(
        kafka,
        tmp_path / "store",
        {
            "name": "det",
            "models": [{"name": "det", "path": str(path)}],
            "validations": {
                "found": 'len(det.outputs["scores"]) >= 1',
                "confident": 'mean(det.outputs["scores"]) > 0.7',
                "calm": "not det.outputs[1][0]",
                "all_calm": 'max(det.outputs["high"]) == 0',
            },
            "alerts": {
                "blind": {
                    "when": 'count(len(det.outputs["scores"]) == 0, "1s", "1s") >= 1',
                    "notify": ["stdout"],
                }
            },
            "assays": {
                "confidence": {
                    "iopath": 'mean(det.outputs["scores"])',
                    "baseline": {"values": baseline},
                    "window": {"width": "1s"},
                    "bins": {"count": 3},
                }
            },
        },
    )
    rng = np.random.default_rng(9)
    x = rng.uniform(size=(16, WIDTH)).astype(np.float32)
    x[3] = 0.1  # no score above the threshold: an empty list
    worker = Served(kafka, tmp_path / "store", unique)
    try:
        requests = [
            {"id": f"r{i}", "time": T0, "tensor": [row]} for i, row in enumerate(x.tolist())
        ]
        worker.ask("det", requests, results=0)
        events, batch = _results(kafka, "det", len(x))
    finally:
        worker.stop()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    by_id = {e["id"]: e for e in events}
    means = []
    for i, row in enumerate(x):
        scores, high = session.run(None, {"x": row.reshape(1, WIDTH)})
        event = by_id[f"r{i}"]
        assert event["outputs"]["det"] == [
            scores.astype(np.float64).tolist(),
            high.ravel().tolist(),
        ]
        assert all(isinstance(v, bool) for v in event["outputs"]["det"][1])  # JSON true/false
        mean = float(np.mean(scores.astype(np.float64))) if scores.size else float("nan")
        means.append(mean)
        expected = set()
        if not scores.size:
            expected.add("found")
        if not mean > 0.7:
            expected.add("confident")
        if high.ravel()[0]:
            expected.add("calm")
        if high.any():
            expected.add("all_calm")
        assert set(event["check_failures"]) == expected
    assert by_id["r3"]["outputs"]["det"][0] == []
    assert len({len(e["outputs"]["det"][0]) for e in events}) > 1  # the lengths vary

    engine = _engine(spec, redis_client, redis_prefix)
    assert engine.ingest(batch).accepted == len(x)
    closed = engine.close(floor=T0 + 2000)
    engine.commit(closed)
    (result,) = [r for r in closed.assays if r.window_start <= T0 < r.window_end]
    (plan,) = plans_from_spec(spec, lambda y: np.asarray(y.baseline["values"]))[1]
    offline = plan.baseline.baseline.compare(
        np.asarray(means), metric="psi", thresholds={"warning": 0.1, "alert": 0.25}
    )
    assert result.count == len(x)
    assert result.score == pytest.approx(offline.score, rel=1e-12)
    (blind,) = [n for n in closed.notifications if n.kind == "alert" and n.state == "firing"]
    assert blind.value == sum(1 for m in means if np.isnan(m))  # the rows with no score

    # the same iopath over a baseline taken from the pipeline's own results topic
    doc = {
        "name": "det",
        "models": [{"name": "det", "path": str(path)}],
        "assays": {
            "history": {
                "iopath": 'mean(det.outputs["scores"])',
                "baseline": {"from": T0 - 1000, "to": T0 + 1000},
                "window": {"width": "1s"},
            }
        },
    }
    past = spec_from_dict(doc)
    settings = Settings(kafka=kafka, redis=RedisSettings(key_prefix=redis_prefix))
    state = RedisState(redis_client, redis_prefix, "det")
    values = history_baseline(settings, past, past.assays["history"], state, "sha256:h")
    np.testing.assert_array_equal(np.sort(values), np.sort(np.asarray(means)))
