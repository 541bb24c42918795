"""The monitor engine without Redis: windows, late events, redelivery, lost state, batches."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driftline.compile import AlertPlan, AssayPlan, DetectorBaseline
from driftline.detectors import Baseline
from driftline.expressions import alert_condition, parse
from driftline.streams._engine import Batch, PipelineEngine, StateLost
from driftline.streams.memstate import MemoryState

pytestmark = pytest.mark.unit

T0 = 1_700_000_000_000


def _event(t: int, x: float) -> bytes:
    return orjson.dumps({"time": t, "outputs": {"m": [[x]]}})


def _engine(state: MemoryState | None = None, lateness: int = 0) -> PipelineEngine:
    cond = alert_condition(parse("count(m.outputs[0][0] > 0.9, '3s', '1s') >= 2"))
    base = DetectorBaseline(Baseline.from_values(np.linspace(0, 1, 101)), "psi", None)
    drift = AssayPlan("drift", parse("m.outputs[0][0]"), base, 2000, 1000, "psi")
    return PipelineEngine(
        "p", "v", ["m"], [AlertPlan("high", cond)], [drift], state or MemoryState("p"), 1, lateness
    )


def test_alert_and_assay_windows_in_memory() -> None:
    scores = [0.1, 0.1, 0.1, 0.95, 0.95, 0.1, 0.1, 0.1, 0.1, 0.1]
    out = _engine().test([_event(T0 + 1000 * s + 10, x) for s, x in enumerate(scores)])
    assert [(n.state, n.at - T0) for n in out.notifications if n.kind == "alert"] == [
        ("firing", 5000),
        ("resolved", 7000),
    ]
    assert [(a.window_end - T0, a.count) for a in out.assays] == [
        (1000, 1), *[(1000 * s, 2) for s in range(2, 10)]
    ]  # fmt: skip
    direct = Baseline.from_values(np.linspace(0, 1, 101)).compare([0.95, 0.95], metric="psi")
    assert out.assays[4].score == pytest.approx(direct.score)


def test_late_events_go_aside_and_redelivery_changes_nothing() -> None:
    eng = _engine(lateness=1000)
    rows = [_event(T0 + 5000, 0.2), _event(T0 + 3000, 0.2), b"{}"]
    rep = eng.ingest(Batch.of("t", [(0, i, r) for i, r in enumerate(rows)]))
    assert (rep.accepted, len(rep.late), len(rep.dead)) == (1, 1, 1)
    assert eng.ingest(Batch.of("t", [(0, i, r) for i, r in enumerate(rows)])).applied == 0


def test_a_state_that_lost_what_the_engine_applied_raises() -> None:
    state = MemoryState("p")
    eng = _engine(state)
    eng.test([_event(T0 + 1000, 0.2)])
    state.clear()  # Redis restarted empty
    with pytest.raises(StateLost):
        eng.close()
    with pytest.raises(StateLost):
        eng.ingest(Batch.of("test", [(0, 1, _event(T0 + 2000, 0.2))]))


@given(
    st.lists(st.tuples(st.integers(0, 8000), st.floats(0, 1)), min_size=1, max_size=60),
    st.integers(1, 60),
)
@settings(max_examples=40, deadline=None)
def test_outputs_do_not_depend_on_batch_boundaries(events, size) -> None:  # type: ignore[no-untyped-def]
    rows = [_event(T0 + t, x) for t, x in events]
    whole = _engine().test(rows, floor=T0 + 10_000)
    cut = _engine().test(rows, floor=T0 + 10_000, batch_size=size)
    assert orjson.dumps([a.to_dict() for a in whole.assays]) == orjson.dumps(
        [a.to_dict() for a in cut.assays]
    )
    assert [n.id for n in whole.notifications] == [n.id for n in cut.notifications]


def test_string_and_variable_length_outputs_are_read_and_only_malformed_rows_dead_lettered() -> (
    None
):
    """A label output (strings) and scores of varying length are the model's outputs; a
    result whose outputs mix strings with numbers, or lack the model, is the only one put
    aside, as bad-tensor-shape."""
    cond = alert_condition(parse("count(m.outputs[0][0] == \"virginica\", '1s', '1s') >= 1"))
    base = DetectorBaseline(Baseline.from_values(np.linspace(0, 1, 101)), "psi", None)
    drift = AssayPlan("conf", parse("mean(m.outputs[1])"), base, 1000, 1000, "psi")
    eng = PipelineEngine("p", "v", ["m"], [AlertPlan("v", cond)], [drift], MemoryState("p"), 1, 0)

    def event(t: int, label: str, scores: list[float]) -> bytes:
        return orjson.dumps({"time": t, "outputs": {"m": [[label], scores]}})

    rows = [
        event(T0 + 10, "virginica", [0.5, 0.7]),
        event(T0 + 20, "setosa", []),
        event(T0 + 30, "virginica", [0.9]),
        orjson.dumps({"time": T0 + 40, "outputs": {"m": [[1.0], ["x", 2]]}}),
        orjson.dumps({"time": T0 + 50, "outputs": {"other": [[1.0]]}}),
        event(T0 + 2000, "setosa", [0.1]),
    ]
    rep = eng.ingest(Batch.of("t", [(0, i, r) for i, r in enumerate(rows)]))
    assert rep.accepted == 4
    assert sorted((offset, reason) for _, offset, _, reason in rep.dead) == [
        (3, "bad-tensor-shape"),
        (4, "bad-tensor-shape"),
    ]
    closed = eng.close()
    (firing,) = [n for n in closed.notifications if n.state == "firing"]
    assert firing.value == 2.0
    first = next(a for a in closed.assays if a.window_start == T0)
    assert first.count == 3  # the empty row's mean is NaN: counted, in the leftmost bin
    direct = Baseline.from_values(np.linspace(0, 1, 101)).compare(
        [0.6, float("nan"), 0.9], metric="psi"
    )
    assert first.score == pytest.approx(direct.score)
