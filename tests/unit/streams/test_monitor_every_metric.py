"""Every assay the spec compiler accepts runs in the monitor and in replay.

Generated over every metric the detector registry lists × every bins mode × fixed and auto
thresholds × scan on and off × tumbling and sliding windows: the spec is compiled as
``deploy`` compiles it, turned into the monitor's plans from its canonical form, run through
the engine on in-memory state, and run again as replay runs it (fresh state, other batch
cuts, closed at the range end). Each emits assay results, none raises, and both agree. (The
same on Redis: ``tests/integration/test_monitor_memstate.py``.)
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from driftline.compile import plans_from_spec
from driftline.detectors import P_VALUE_METRICS, RAW_SAMPLE, REGISTRY, live_metrics
from driftline.spec import load_baseline_values, spec_from_canonical, spec_from_dict
from driftline.streams._engine import PipelineEngine
from driftline.streams.memstate import MemoryState

pytestmark = pytest.mark.unit

MODEL = Path(__file__).resolve().parents[3] / "examples" / "fraud" / "models" / "ccfraud.onnx"
T0 = 1_700_000_000_000
BINS = {
    "quantile": {"mode": "quantile", "count": 5},
    "equal": {"mode": "equal", "count": 4},
    "provided": {"mode": "provided", "edges": [0.2, 0.4, 0.6, 0.8]},
}
WINDOWS = {
    "tumbling": {"width": "1s", "interval": "1s"},
    "sliding": {"width": "2s", "interval": "1s"},
}
CASES = list(itertools.product(live_metrics(), BINS, ("fixed", "auto"), (False, True), WINDOWS))


def _thresholds(metric: str, kind: str) -> dict[str, float]:
    if kind == "auto":
        return {"auto": 0.01}
    return {"alpha": 0.01} if metric in P_VALUE_METRICS else {"warning": 0.1, "alert": 0.25}


def _events(seconds: int = 4) -> list[tuple[int, int, bytes]]:
    rng = np.random.default_rng(3)
    rows = []
    for s in range(seconds):
        for j in range(40):
            v = float(rng.uniform(0.3, 1.0) if s == 2 else rng.uniform(0.0, 1.0))
            doc = {"id": f"r{s}-{j}", "row": 0, "time": T0 + 1000 * s + 20 * j,
                   "outputs": {"ccfraud": [[v]]}}  # fmt: skip
            rows.append((j % 2, len(rows), orjson.dumps(doc)))
    return rows


def _run(spec: Any, cuts: list[int]) -> list[dict[str, Any]]:
    _, assays = plans_from_spec(spec, lambda a: load_baseline_values(a, None))
    state = MemoryState(spec.name)
    engine = PipelineEngine(spec.name, spec.version, ["ccfraud"], [], assays, state, 2, 0)
    rows = _events()
    out: list[dict[str, Any]] = []
    for lo, hi in itertools.pairwise([0, *cuts, len(rows)]):
        if hi > lo:
            closed = engine.test(rows[lo:hi])
            out += [a.to_dict() for a in closed.assays]
    # as replay closes at the end of its range
    out += [a.to_dict() for a in engine.test([], floor=T0 + 4000).assays]
    return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


@pytest.mark.parametrize(("metric", "bins", "thresholds", "scan", "window"), CASES)
def test_every_accepted_assay_runs_live_and_in_replay(  # type: ignore[no-untyped-def]
    metric, bins, thresholds, scan, window
):
    data: dict[str, Any] = {
        "name": "every",
        "models": [{"name": "ccfraud", "path": str(MODEL)}],
        "assays": {
            "a": {
                "iopath": "ccfraud.outputs[0][0]",
                "baseline": {"values": [round(x, 4) for x in np.linspace(0.0, 1.0, 201)]},
                "window": WINDOWS[window],
                "metric": metric,
                "bins": BINS[bins],
                "thresholds": _thresholds(metric, thresholds),
                **({"scan": True} if scan else {}),
            }
        },
        "options": {"lateness": "0s", "partitions": 2},
    }
    spec = spec_from_canonical(orjson.loads(spec_from_dict(data).canonical_json()))
    live = _run(spec, [37, 90])
    again = _run(spec, [121])
    assert live, "no assay result"
    assert {a["status"] for a in live} <= {"ok", "warning", "alert"}
    assert [a["metric"] for a in live] == [metric] * len(live)
    expected_ends = [T0 + 1000 * s for s in range(1, 5)]
    assert [a["window_end"] for a in live] == expected_ends
    assert _same(live, again)
    if REGISTRY[metric].needs == RAW_SAMPLE:  # scored on the sample, counted on all events
        counts = [40, 80, 80, 80] if window == "sliding" else [40] * 4
        assert [a["count"] for a in live] == counts
