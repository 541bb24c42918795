"""Replay's rule for performance: feedback first, then the results, closed once, gives what a
live monitor's latest revision of every window holds, whatever its ticks made of the rest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import yaml

from driftline.spec import spec_from_dict
from driftline.streams._feedback_io import PipelinePerformance, Record
from driftline.streams.feedback import MemoryJoinState
from driftline.streams.replay import ReplayResult, compare_performance

pytestmark = pytest.mark.unit

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "fraud"
T0 = 1_699_999_980_000
MIN = 60_000
WINDOWS = 6


def _spec() -> Any:
    data = yaml.safe_load((EXAMPLE / "pipeline.yaml").read_text())
    data["options"] = {"lateness": "0s", "partitions": 2}
    data["performance"] = {
        "quality": {
            "task": "binary",
            "prediction": "ccfraud.outputs[0][0]",
            "window": {"width": "2m", "interval": "1m"},
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


def _records(seed: int) -> tuple[list[Record], list[Record]]:
    """Results (2 partitions, time order) and feedback (2 partitions by id): labels shuffled,
    some twice with another value first, some never."""
    rng = np.random.default_rng(seed)
    n = 600
    times = T0 + np.sort(rng.integers(0, WINDOWS * MIN, n))
    results: list[Record] = []
    offsets = [0, 0]
    for i, t in enumerate(times.tolist()):
        doc = {"id": f"r{i}", "time": t, "outputs": {"ccfraud": [[float(rng.uniform())]]}}
        p = i % 2
        results.append(Record("p.results", p, offsets[p], orjson.dumps(doc), t))
        offsets[p] += 1
    for p in (0, 1):  # closes the last window on both partitions
        doc = {"id": f"end{p}", "time": T0 + WINDOWS * MIN, "outputs": {"ccfraud": [[0.1]]}}
        results.append(Record("p.results", p, offsets[p], orjson.dumps(doc), T0 + WINDOWS * MIN))
    feedback: list[Record] = []
    offsets = [0, 0]
    for i in rng.permutation(n).tolist():
        u = rng.uniform()
        if u < 0.1:
            continue
        labels = [int(rng.integers(0, 2))] + ([int(rng.integers(0, 2))] if u < 0.3 else [])
        for y in labels:
            p = i % 2
            doc = {"id": f"r{i}", "label": y}
            feedback.append(Record("p.feedback", p, offsets[p], orjson.dumps(doc), T0 + n + i))
            offsets[p] += 1
    return results, feedback


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_feedback_first_then_results_closed_once_is_the_live_latest_revision(seed: int) -> None:
    spec = _spec()
    results, feedback = _records(seed)
    rng = np.random.default_rng(seed + 100)

    # live: both topics' batches interleaved at random, a tick (close, confirm) now and then
    live = PipelinePerformance(spec, lambda *_: MemoryJoinState(), "p.results", "p.feedback", 2)
    queues = [list(results), list(feedback)]
    published: list[dict[str, Any]] = []
    while any(queues):
        q = queues[int(rng.integers(0, 2))] if all(queues) else next(q for q in queues if q)
        size = int(rng.integers(1, 60))
        batch, q[:] = q[:size], q[size:]
        live.apply(batch)
        if rng.uniform() < 0.3:
            closings = live.close()
            published += [e for c in closings.values() for e in c.events]
            live.confirm(closings)
    closings = live.close()
    published += [e for c in closings.values() for e in c.events]
    assert len(published) > 2 * WINDOWS  # windows were revised, some more than once

    # replay: every label first, then the predictions, one close
    again = PipelinePerformance(spec, lambda *_: MemoryJoinState(), "p.results", "p.feedback", 2)
    for i in range(0, len(feedback), 100):
        again.apply(feedback[i : i + 100])
    for i in range(0, len(results), 100):
        again.apply(results[i : i + 100])
    replayed = [e for c in again.close().values() for e in c.events]
    result = ReplayResult(spec.name, T0, T0 + WINDOWS * MIN, performance=replayed)
    compared, diffs = compare_performance(published, result)
    assert diffs == [] and compared == len(replayed) - 1 >= 2 * WINDOWS - 2

    # an earlier revision is no final answer: the audit sees a window's revision 0 as latest
    revised = next(e for e in published if e["revision"] > 0 and e["window_start"] >= T0)
    window = (revised["name"], revised["window_end"])
    cut = [e for e in published if (e["name"], e["window_end"]) != window or e["revision"] == 0]
    _, diffs = compare_performance(cut, result)
    assert diffs and {d.key for d in diffs} == {f"{window[0]}@{window[1]}"}


def test_audit_takes_an_identical_republished_revision_as_one_and_flags_another_content() -> None:
    e = {"pipeline": "p", "name": "q", "window_start": 0, "window_end": 10, "revision": 0,
         "predictions": 3, "labeled": 2, "metrics": {"accuracy": 0.5}, "estimated": None,
         "spec": "s"}  # fmt: skip
    r = ReplayResult("p", 0, 10, performance=[e])
    assert compare_performance([e, dict(e), dict(e)], r) == (1, [])
    _, diffs = compare_performance([e, dict(e, metrics={"accuracy": 1.0})], r)
    assert [(d.key, d.what) for d in diffs] == [("q@10#0", "republished metrics.accuracy")]
