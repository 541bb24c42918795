"""The in-memory state follows Redis's rules: the same events give the same outputs on both."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from driftline.compile import AlertPlan, AssayPlan, DetectorBaseline, ScanPlan
from driftline.detectors import Baseline, live_metrics
from driftline.expressions import alert_condition, parse
from driftline.streams._engine import PipelineEngine
from driftline.streams.memstate import MemoryState
from driftline.streams.state import RedisState

pytestmark = pytest.mark.integration

T0 = 1_700_000_000_000


def _engine(state: Any) -> PipelineEngine:
    base = Baseline.from_values(np.random.default_rng(0).uniform(0, 1, 300))
    alert = AlertPlan("hi", alert_condition(parse("count(m.outputs[0][0] > 0.9, '2s', '1s') >= 3")))
    assays = [
        AssayPlan(
            m,
            parse("m.outputs[0][0]"),
            DetectorBaseline(base, m, {"auto": 0.01}),
            2000,
            1000,
            m,
            scan=ScanPlan() if m == "psi" else None,
        )
        for m in live_metrics()
    ]
    return PipelineEngine("p", "v", ["m"], [alert], assays, state, 2, 500)


def _rows() -> list[tuple[int, int, bytes]]:
    rng = np.random.default_rng(5)
    rows, offsets = [], [0, 0]
    for i in range(600):
        p = i % 2
        t = T0 + i * 10 + int(rng.integers(-400, 50))  # out of order: some late
        v = float(rng.uniform(0.5, 1.0) if 200 <= i < 300 else rng.uniform(0, 1))
        value = orjson.dumps({"id": f"r{i}", "row": 0, "time": t, "outputs": {"m": [[v]]}})
        if i % 97 == 0:
            value = b"not json"
        rows.append((p, offsets[p], value))
        offsets[p] += 1
    return rows


def test_memory_and_redis_states_give_the_same_outputs(redis_client, redis_prefix):  # type: ignore[no-untyped-def]
    rows = _rows()
    outs = []
    for state in (MemoryState("p"), RedisState(redis_client, redis_prefix, "p")):
        engine = _engine(state)
        closed = engine.test(rows, batch_size=70, floor=T0 + 7000)
        again = engine.test(rows, batch_size=70)  # redelivered: nothing changes
        assert not again.assays and not again.notifications
        outs.append(
            (
                [a.to_dict() for a in closed.assays],
                [n.to_dict() for n in closed.notifications],
                state.snapshot(),
                state.emitted(),
            )
        )
    mem, red = outs
    assert mem[0] and mem[1]
    assert orjson.dumps(mem[:2]) == orjson.dumps(red[:2])
    assert mem[2] == red[2] and mem[3] == red[3]


def test_samples_are_cleaned_up_with_the_buckets(redis_client, redis_prefix):  # type: ignore[no-untyped-def]
    base = Baseline.from_values(np.linspace(0, 1, 100))
    mmd = AssayPlan("mmd", parse("m.outputs[0][0]"), DetectorBaseline(base, "mmd", {"auto": 0.01}),
                    1000, 1000, "mmd")  # fmt: skip
    rows = [
        orjson.dumps({"id": f"r{i}", "time": T0 + 100 * i, "outputs": {"m": [[i % 10 / 10]]}})
        for i in range(300)  # 30 one-second buckets
    ]
    mem = MemoryState("p")
    red = RedisState(redis_client, redis_prefix, "p")
    for state in (mem, red):
        out = PipelineEngine("p", "v", ["m"], [], [mmd], state, 1, 0).test(rows, batch_size=20)
        assert len(out.assays) == 29
    left = sorted(redis_client.scan_iter(match=f"{red.key('r')}*"))
    assert len(mem.samples) == len(left)
    assert 0 < len(left) <= 5, left  # the last few buckets (cleanup runs with a batch), not 30
