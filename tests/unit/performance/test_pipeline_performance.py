"""PipelinePerformance: every entry of a spec fed one micro-batch of both topics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from driftline.spec import spec_from_dict
from driftline.streams._feedback_io import PipelinePerformance, Record
from driftline.streams.feedback import MemoryJoinState

pytestmark = pytest.mark.unit

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "fraud"
T0 = 1_699_999_980_000
MIN = 60_000


def spec() -> Any:
    data = yaml.safe_load((EXAMPLE / "pipeline.yaml").read_text())
    data["performance"] = {
        "quality": {
            "task": "binary",
            "prediction": "ccfraud.outputs[0][0]",
            "window": {"width": "1m"},
            "estimate": "cbpe",
        },
        "classes": {
            "task": "multiclass",
            "prediction": ["1 - ccfraud.outputs[0][0]", "ccfraud.outputs[0][0]"],
            "classes": ["ok", "fraud"],
            "window": {"width": "1m"},
        },
    }
    return spec_from_dict(data, EXAMPLE)


def test_every_entry_joins_and_only_feedback_no_entry_can_use_is_dead_lettered() -> None:
    s = spec()
    states: dict[str, tuple[str, int]] = {}

    def state(name: str, digest: str, horizon: int) -> MemoryJoinState:
        states[name] = (digest, horizon)
        return MemoryJoinState()

    perf = PipelinePerformance(s, state, "p.results", "p.feedback", partitions=1)
    assert set(states) == {"quality", "classes"} and states["quality"][1] == 7 * 86_400_000
    assert states["quality"][0] != states["classes"][0]

    def result(i: int, score: float) -> Record:
        doc = {"id": f"r{i}", "time": T0 + i, "outputs": {"ccfraud": [[score]]}}
        return Record("p.results", 0, i, orjson.dumps(doc), 0)

    def label(off: int, ident: str, value: Any) -> Record:
        return Record("p.feedback", 0, off, orjson.dumps({"id": ident, "label": value}), T0)

    dead = perf.apply(
        [
            result(0, 0.9),
            result(1, 0.2),
            label(0, "r0", 1),  # both entries
            label(1, "r1", "fraud"),  # a class name: only the multiclass entry
            label(2, "r2", "maybe"),  # nobody: dead-lettered
            Record("p.feedback", 0, 3, b"{", T0),
        ]
    )
    assert [(d.record.offset, d.reason) for d in dead] == [(2, "bad_label"), (3, "malformed_json")]
    closings = perf.close(watermark=T0 + MIN)
    (q,) = closings["quality"].events
    (c,) = closings["classes"].events
    assert (q["labeled"], q["metrics"]["tp"]) == (1, 1)
    assert (c["labeled"], c["metrics"]["accuracy"]) == (2, 0.5)
    assert c["metrics"]["per_class"]["fraud"]["support"] == 2
    assert q["estimated"] is not None and c["estimated"] is None
    perf.confirm(closings)
    assert all(not x.events for x in perf.close(watermark=T0 + MIN).values())
