"""Real-weights models shipped in PyPI wheels, obtained at test time (``pip download --no-deps``
of a pinned version, the ``.onnx`` taken out of the wheel's zip; nothing installed):

- RapidOCR's text-direction classifier ``ch_ppocr_mobile_v2.0_cls_infer.onnx`` (PaddleOCR's
  mobile v2.0 classifier; input ``x`` [N, 3, 48, W] float32, output [N, 2]: upright, upside
  down) from ``rapidocr-onnxruntime``: deployed, served a nested tensor and a V2 base64
  request of rendered text crops, its results equal onnxruntime's on the same arrays, written
  once as driftline events and once as V2 responses; its weights tell upright from rotated
  text, which a validation on its output reports;
- silero-vad's ``silero_vad.onnx`` from ``silero-vad``: a streaming model whose sample rate is
  a scalar input and whose recurrent state has the batch on its second axis; deploy refuses
  it, naming the model and the input, since the worker feeds stateless batches.

Skipped only when PyPI cannot be reached.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import orjson
import pytest
from confluent_kafka import Producer

from driftline.config import KafkaSettings
from driftline.errors import SpecError
from driftline.spec import spec_from_dict
from driftline.streams._decode import read_result

from ._models_serve import T0, Served, deploy
from ._wheels import member
from .test_worker import _read

pytestmark = pytest.mark.integration

OCR = ("rapidocr-onnxruntime", "1.4.4")
OCR_MODEL = "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx"
VAD = ("silero-vad", "5.1.2")
VAD_MODEL = "silero_vad/data/silero_vad.onnx"


def _crops() -> np.ndarray:
    """Four text crops as the classifier takes them (RapidOCR's preprocessing: 48 pixels
    high, scaled to [-1, 1], channels first): two lines of text, each upright and rotated
    by 180°. Values rounded to 4 decimals, so that JSON carries them exactly as float32."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=40)
    images = []
    for text in ("Driftline 2026", "hello world"):
        img = Image.new("RGB", (384, 48), "white")
        ImageDraw.Draw(img).text((4, 2), text, fill="black", font=font)
        images += [img, img.rotate(180)]
    arrays = [np.asarray(i.resize((192, 48)), dtype=np.float32) / 255.0 for i in images]
    x = np.stack([((a - 0.5) / 0.5).transpose(2, 0, 1) for a in arrays])
    return np.round(x, 4).astype(np.float32)


def _row(value: bytes) -> int:
    return int(orjson.loads(value)["parameters"]["row"])


def _expected(path: Path, x: np.ndarray) -> list[list[float]]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"x": x})
    return [row.astype(np.float64).tolist() for row in out]


@pytest.fixture(scope="module")
def ocr(kafka_admin: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    path = member(*OCR, OCR_MODEL)
    tmp = tmp_path_factory.mktemp("wheel")
    unique = f"wheel{tmp.name.replace('_', '')}"
    kafka = KafkaSettings(topic_prefix=f"t{unique}")
    store = tmp / "store"
    for name, result_format in (("ocr", "driftline"), ("ocrv2", "v2")):
        deploy(
            kafka,
            store,
            {
                "name": name,
                "models": [{"name": "textdir", "path": str(path)}],
                # the classifier's second column: text upside down
                "validations": {"upright": "textdir.outputs[0][1] < 0.5"},
                "options": {
                    "max_message_bytes": 2_000_000,
                    "record_inputs": False,
                    "result_format": result_format,
                },
            },
        )
    worker = Served(kafka, store, unique)
    try:
        yield {"kafka": kafka, "worker": worker, "path": path, "x": _crops()}
    finally:
        worker.stop()
        prefix = kafka.topic_prefix + "."
        topics = [t for t in kafka_admin.list_topics(timeout=10).topics if t.startswith(prefix)]
        if topics:
            for fut in kafka_admin.delete_topics(topics, operation_timeout=15).values():
                fut.result(30)


def test_the_ocr_classifier_serves_a_nested_tensor_as_onnxruntime_does(
    ocr: dict[str, Any],
) -> None:
    x = ocr["x"][:2]
    request = {"id": "crop", "time": T0, "tensor": x.tolist()}
    assert len(orjson.dumps(request)) > 100_000  # a real image crop, not a toy vector
    events, _ = ocr["worker"].ask("ocr", [request], results=2)
    expected = _expected(ocr["path"], x)
    assert [e["outputs"]["textdir"] for e in events] == [[row] for row in expected]
    # The real weights: the upright crop is upright, the rotated one is not.
    assert [e["check_failures"] for e in events] == [[], ["upright"]]


def test_the_ocr_classifier_serves_v2_base64_and_answers_in_v2_form(
    ocr: dict[str, Any],
) -> None:
    x = ocr["x"]
    request = {
        "id": "crops",
        "time": T0,
        "inputs": [
            {
                "name": "x",
                "shape": list(x.shape),
                "datatype": "FP32",
                "data": base64.b64encode(x.astype("<f4").tobytes()).decode(),
            }
        ],
    }
    kafka: KafkaSettings = ocr["kafka"]
    producer = Producer(kafka.client_config(**{"message.max.bytes": 4_000_000}))
    producer.produce(kafka.topic("ocrv2", "requests"), orjson.dumps(request), b"crops")
    assert producer.flush(30) == 0
    raw = [m.value() for m in _read(kafka, kafka.topic("ocrv2", "results"), 4)]
    responses = sorted(map(orjson.loads, raw), key=lambda d: d["parameters"]["row"])
    assert [r["parameters"]["row"] for r in responses] == [0, 1, 2, 3]
    expected = _expected(ocr["path"], x)
    for r, row in zip(responses, expected, strict=True):
        assert (r["model_name"], r["id"]) == ("textdir", "crops")
        assert r["outputs"] == [
            {
                "name": "save_infer_model/scale_0.tmp_1",
                "shape": [1, 2],
                "datatype": "FP32",
                "data": row,
            }
        ]
    assert [read_result(v)["outputs"]["textdir"] for v in sorted(raw, key=_row)] == [
        [row] for row in expected
    ]
    assert [orjson.loads(r["parameters"]["check_failures"]) for r in responses] == [
        [],
        ["upright"],
        [],
        ["upright"],
    ]


def test_silero_vad_is_refused_naming_the_model_and_its_scalar_input(tmp_path: Path) -> None:
    path = member(*VAD, VAD_MODEL)
    with pytest.raises(SpecError) as info:
        spec_from_dict({"name": "vad", "models": [{"name": "silero", "path": str(path)}]})
    text = str(info.value)
    assert "model 'silero'" in text
    assert "input 'sr' is a scalar" in text and "batch dimension first" in text
