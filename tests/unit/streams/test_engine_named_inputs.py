"""The monitor windows the named inputs of a champion with several inputs (results record them
as an object by name): a numeric input by name or position, in driftline events and in V2
responses alike; a string input is carried as strings, and rows unlike the rest are dead."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from driftline.compile import AlertPlan, AssayPlan, DetectorBaseline
from driftline.detectors import Baseline
from driftline.expressions import alert_condition, parse
from driftline.streams._decode import build_tensors, decode_results
from driftline.streams._engine import PipelineEngine
from driftline.streams.memstate import MemoryState
from driftline.streams.v2_response import ResponseForm, to_response

pytestmark = pytest.mark.unit

T0 = 1_700_000_000_000
NAMES = {("price", "inputs"): ["city", "age"], ("price", "outputs"): ["variable"]}


def _event(i: int, t: int, city: str, age: float) -> bytes:
    return orjson.dumps(
        {
            "id": f"r{i}",
            "row": 0,
            "time": t,
            "pipeline": "p",
            "spec": "s",
            "inputs": {"city": [city], "age": [age]},
            "outputs": {"price": [[age * 2]]},
            "models": {"price": "sha256:x"},
            "check_failures": [],
            "elapsed_ns": 0,
        }
    )


def _rows(ages: list[float]) -> list[bytes]:
    return [_event(i, T0 + 10 * i, "paris" if i % 2 else "nice", a) for i, a in enumerate(ages)]


def test_named_inputs_become_one_tensor_per_input_in_the_models_order() -> None:
    docs, ok, _ = decode_results(_rows([30.0, 61.0]))
    assert ok.all()
    # recorded order differs from the model's: the names decide
    names = {("price", "inputs"): ["age", "city"]}
    (age, city) = build_tensors(docs, [("price", "inputs")], names)[("price", "inputs")]  # type: ignore[arg-type]
    assert age.tolist() == [[30.0], [61.0]] and age.dtype == np.float64
    assert city.tolist() == [["nice"], ["paris"]] and city.dtype == object
    # without names, the recorded order
    (city2, age2) = build_tensors(docs, [("price", "inputs")])[("price", "inputs")]  # type: ignore[arg-type]
    assert city2.tolist() == city.tolist() and age2.tolist() == age.tolist()


def _engine(iopath: str) -> PipelineEngine:
    cond = alert_condition(parse('count(price.inputs["age"][0] < 18, "1s", "1s") >= 3'))
    base = DetectorBaseline(Baseline.from_values(np.linspace(20, 80, 121)), "psi", None)
    assay = AssayPlan("age_drift", parse(iopath), base, 1000, 1000, "psi")
    return PipelineEngine(
        "p",
        "v",
        ["price"],
        [AlertPlan("minors", cond)],
        [assay],
        MemoryState("p"),
        1,
        0,
        tensor_names=NAMES,
    )


@pytest.mark.parametrize("iopath", ['price.inputs["age"][0]', "price.inputs[1][0]"])
@pytest.mark.parametrize("form", ["driftline", "v2"])
def test_an_assay_and_an_alert_window_a_named_numeric_input(iopath: str, form: str) -> None:
    rng = np.random.default_rng(3)
    first = rng.uniform(20, 80, 50).round(2).tolist()  # like the baseline
    second = rng.uniform(5, 17, 50).round(2).tolist()  # minors only
    rows = _rows(first + second)
    rows = [
        r if i < 50 else r.replace(str(T0 + 10 * i).encode(), str(T0 + 1000 + 10 * i).encode())
        for i, r in enumerate(rows)
    ]
    if form == "v2":
        rows = [
            to_response(r, ResponseForm("price", ("variable",), ("FP32",), ((1,),))) for r in rows
        ]
    out = _engine(iopath).test(rows, floor=T0 + 10_000)
    base = Baseline.from_values(np.linspace(20, 80, 121))
    assert [(a.window_start - T0, a.count) for a in out.assays] == [(0, 50), (1000, 50)]
    for a, values in zip(out.assays, (first, second), strict=True):
        assert a.score == pytest.approx(base.compare(values, metric="psi").score)
    assert out.assays[1].status == "alert"
    fired = [
        (n.alert, n.state, n.window["start"] - T0) for n in out.notifications if n.kind == "alert"
    ]
    assert fired[0] == ("minors", "firing", 1000)


def test_a_row_whose_named_inputs_differ_from_the_batch_is_dead_not_the_batch() -> None:
    rows = _rows([30.0, 40.0, 50.0])
    odd: dict[str, Any] = orjson.loads(rows[1])
    odd["inputs"] = {"city": ["x"], "age": [1.0, 2.0]}  # two ages: not this model's row
    rows[1] = orjson.dumps(odd)
    eng = _engine('price.inputs["age"][0]')
    from driftline.streams._engine import Batch

    rep = eng.ingest(Batch.of("t", [(0, i, r) for i, r in enumerate(rows)]))
    assert (rep.accepted, len(rep.dead)) == (2, 1)
