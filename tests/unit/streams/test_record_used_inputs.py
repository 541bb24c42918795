"""``options.record_inputs: used``: results carry only the inputs the monitor reads, and the
monitor still finds each of them at its declared position."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from driftline.compile import worker_plan
from driftline.errors import SpecError
from driftline.expressions import evaluate, parse
from driftline.models import LoadedModel, ModelStore
from driftline.spec import spec_from_canonical, spec_from_dict
from driftline.streams._decode import build_tensors, decode_results
from driftline.streams._worker_core import process_batch
from driftline.streams._worker_source import runtime_from_canonical
from driftline.streams.control import spec_version

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def price_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A skl2onnx ColumnTransformer pipeline: a string input ``city``, a numeric ``age``."""
    import pandas as pd
    from skl2onnx import to_onnx
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    frame = pd.DataFrame({"city": ["a", "b", "c", "a"] * 5, "age": np.arange(20.0)})
    pipe = make_pipeline(
        ColumnTransformer(
            [
                ("c", OneHotEncoder(handle_unknown="ignore"), ["city"]),
                ("n", StandardScaler(), ["age"]),
            ]
        ),
        LinearRegression(),
    ).fit(frame, np.arange(20.0))
    path = tmp_path_factory.mktemp("price") / "price.onnx"
    path.write_bytes(to_onnx(pipe, frame[:1], target_opset=17).SerializeToString())
    return path


def _doc(path: Path, record: Any, iopath: str = 'price.inputs["age"][0]') -> dict[str, Any]:
    return {
        "name": "p",
        "models": [{"name": "price", "path": str(path)}],
        "validations": {"known": 'price.inputs["city"][0] != "z"'},
        "assays": {
            "age_drift": {
                "iopath": iopath,
                "baseline": {"values": [1.0, 2.0, 3.0]},
                "window": {"width": "1m"},
            }
        },
        "options": {"record_inputs": record},
    }


def test_used_keeps_the_inputs_alerts_and_assays_read(price_model: Path) -> None:
    spec = spec_from_dict(_doc(price_model, "used"))
    # the validation reads city, but validations run on the request, not on results
    assert spec.recorded_inputs() == (True, ("age",))
    assert spec_from_dict(_doc(price_model, "used", "price.inputs[1][0]")).recorded_inputs() == (
        True,
        ("age",),
    )
    assert spec_from_dict(_doc(price_model, True)).recorded_inputs() == (True, None)
    canonical = spec.to_canonical()
    assert canonical["options"]["record_inputs"] == "used"
    assert spec_from_canonical(canonical).options.record_inputs == "used"
    assert spec_version(canonical) != spec_version(
        spec_from_dict(_doc(price_model, True)).to_canonical()
    )
    # nothing reads inputs: results carry none
    doc = _doc(price_model, "used")
    doc["assays"]["age_drift"]["iopath"] = "price.outputs[0][0]"
    assert spec_from_dict(doc).recorded_inputs() == (False, None)


def test_a_value_other_than_true_false_or_used_is_refused(price_model: Path) -> None:
    with pytest.raises(SpecError, match="expected true, false or used") as err:
        spec_from_dict(_doc(price_model, "some"))
    assert err.value.field == "options.record_inputs"


def test_results_carry_only_the_used_inputs_and_the_monitor_reads_them_in_place(
    price_model: Path, tmp_path: Path
) -> None:
    store = ModelStore(tmp_path / "store")
    store.put("price", price_model)
    canonical = spec_from_dict(_doc(price_model, "used", "price.inputs[1][0]")).to_canonical()
    assert worker_plan(canonical, store.path).recorded_inputs == ("age",)
    runtime = runtime_from_canonical(
        canonical, tmp_path / "store", lambda _sha, path, name: LoadedModel(path, name)
    )
    ages = [17.0, 42.0, 66.0]
    request = {"inputs": {"city": ["a", "b", "q"], "age": ages}}
    out = process_batch(runtime, [orjson.dumps(request)], default_ids=["r"], default_times=[5])
    assert not out.rejected and len(out.results) == 3
    events = [orjson.loads(v) for _, v in out.results]
    assert [e["inputs"] for e in events] == [{"age": [a]} for a in ages]
    docs, ok, _ = decode_results([v for _, v in out.results], True)
    assert ok.all()
    names = spec_from_canonical(canonical).tensor_names()
    tensors = build_tensors(docs, [("price", "inputs")], names)  # type: ignore[arg-type]
    values = evaluate(parse("price.inputs[1][0]"), tensors, names)
    assert np.asarray(values).tolist() == ages
    by_name = evaluate(parse('price.inputs["age"][0]'), tensors, names)
    assert np.asarray(by_name).tolist() == ages
