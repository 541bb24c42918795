"""The performance join on in-memory state: any order, duplicates, redelivery, revisions."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from driftline.performance import BinaryEstimator, BinaryLayout, MulticlassLayout
from driftline.streams.feedback import Labels, MemoryJoinState, PerformanceJoin, Predictions

from ._join_stream import FEEDBACK, MIN, RESULTS, T0, Stream, check_final, run

pytestmark = pytest.mark.unit


def make_join(state: MemoryJoinState | None = None, **kw: Any) -> PerformanceJoin:
    opts: dict[str, Any] = {
        "width_ms": 2 * MIN,
        "interval_ms": MIN,
        "horizon_ms": 10**9,
        "partitions": 2,
        "lateness_ms": 0,
    }
    opts.update(kw)
    layout = opts.pop("layout", BinaryLayout(bins=20))
    est = opts.pop("estimator", BinaryEstimator())
    return PerformanceJoin(
        "p", "quality", "sha256:x", layout, est, state or MemoryJoinState(), **opts
    )


@pytest.mark.parametrize("seed", range(6))
def test_final_revision_of_every_window_equals_offline(seed: int) -> None:
    stream = Stream(seed)
    join = make_join()
    events = run(join, stream, seed)
    check_final(events, stream, join)
    assert any(e["revision"] > 0 for e in events)
    c = join.counters()
    assert c["predictions"] == len(stream.ids)
    assert c["labels"] == len(stream.label_rows)
    assert c["relabeled"] > 0


def test_redelivered_batch_changes_nothing() -> None:
    stream = Stream(1, n=100)
    join = make_join()
    p = next(stream.prediction_batches(100))
    first = join.apply(p, None)
    again = join.apply(p, None)
    assert first.counters["predictions"] == 100
    assert again.counters == {} and again.skipped == 100
    # a fresh join on the same state (a restarted monitor) also skips it
    other = make_join(join.state)  # type: ignore[arg-type]
    assert other.apply(p, None).skipped == 100
    assert join.counters()["predictions"] == 100


def test_label_before_prediction_twice_and_unmatched() -> None:
    join = make_join(horizon_ms=5 * MIN)
    lab = Labels(
        FEEDBACK,
        ["a", "a", "ghost"],
        np.array([0, 0, 0]),
        np.array([0.0, 1.0, 1.0]),
        np.array([T0, T0 + 1, T0]),
        np.array([0, 0, 0]),
        np.array([0, 1, 2]),
    )
    r = join.apply(None, lab)
    assert r.counters == {"labels": 3, "pending": 2, "relabeled": 1}
    pred = Predictions(
        RESULTS,
        ["a"],
        np.array([0]),
        np.array([T0 + 30_000]),
        np.array([0.9]),
        np.array([0]),
        np.array([0]),
    )
    assert join.apply(pred, None).counters == {"predictions": 1, "joined": 1}
    closing = join.close(watermark=T0 + 2 * MIN)
    (e,) = [e for e in closing.events if e["window_end"] == T0 - T0 % MIN + 2 * MIN]
    assert (e["metrics"]["tp"], e["labeled"], e["revision"]) == (1, 1, 0)  # the last label won
    assert closing.unmatched == []
    join.confirm(closing)
    # the ghost's label is published as unmatched once the horizon has passed
    late = join.close(watermark=T0 + 6 * MIN)
    assert [(u["id"], u["label"]) for u in late.unmatched] == [("ghost", 1.0)]
    join.confirm(late)
    assert join.counters()["unmatched"] == 1
    assert join.close(watermark=T0 + 7 * MIN).unmatched == []


def test_late_label_revises_a_closed_window_once() -> None:
    join = make_join()
    pred = Predictions(
        RESULTS,
        ["a", "b"],
        np.array([0, 0]),
        np.array([T0, T0]),
        np.array([0.9, 0.1]),
        np.array([0, 1]),
        np.array([0, 0]),
    )
    join.apply(pred, None)
    c1 = join.close(watermark=T0 + 5 * MIN)
    join.confirm(c1)
    assert {e["revision"] for e in c1.events} == {0}
    assert all(e["labeled"] == 0 for e in c1.events)
    assert c1.events[0]["estimated"]["accuracy"] == pytest.approx(0.9)
    lab = Labels(
        FEEDBACK,
        ["a"],
        np.array([0]),
        np.array([1.0]),
        np.array([T0 + 3 * MIN]),
        np.array([0]),
        np.array([0]),
    )
    join.apply(None, lab)
    c2 = join.close(watermark=T0 + 5 * MIN)
    join.confirm(c2)
    # the two windows holding a's bucket are revised, each once
    assert sorted((e["window_end"] - T0 + T0 % MIN, e["revision"]) for e in c2.events) == [
        (MIN, 1),
        (2 * MIN, 1),
    ]
    assert all(
        e["labeled"] == 1 and e["metrics"]["label_delay_p50_ms"] == 600_000 for e in c2.events
    )
    assert join.close(watermark=T0 + 5 * MIN).events == []
    # the same label again: the statistics end where they were, so no revision
    lab2 = Labels(
        FEEDBACK,
        ["a"],
        np.array([0]),
        np.array([1.0]),
        np.array([T0 + 3 * MIN]),
        np.array([0]),
        np.array([1]),
    )
    assert join.apply(None, lab2).counters == {"labels": 1, "relabeled": 1}
    assert join.close(watermark=T0 + 5 * MIN).events == []


def test_multiclass_probabilities_and_invalid_labels() -> None:
    join = make_join(layout=MulticlassLayout(classes=3), estimator=None)
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    pred = Predictions(
        RESULTS,
        ["a", "b"],
        np.array([0, 0]),
        np.array([T0, T0]),
        probs,
        np.array([0, 0]),
        np.array([0, 1]),
    )
    lab = Labels(
        FEEDBACK,
        ["a", "b", "c"],
        np.array([0, 0, 0]),
        np.array([0.0, 1.0, 7.0]),
        np.array([T0, T0, T0]),
        np.array([0, 0, 0]),
        np.array([0, 1, 2]),
    )
    r = join.apply(pred, lab)
    assert r.counters["invalid_labels"] == 1 and r.counters["joined"] == 2
    (e, *_) = join.close(watermark=T0 + 3 * MIN).events
    assert e["metrics"]["accuracy"] == 0.5


def test_a_restart_before_confirm_publishes_the_same_revisions_again() -> None:
    stream = Stream(4, n=200)
    state = MemoryJoinState()
    join = make_join(state)
    join.apply(next(stream.prediction_batches(200)), next(stream.label_batches(100)))
    lost = join.close()
    assert lost.events  # produced, then the process died before confirm
    again = make_join(state)
    recovered = again.close()
    assert recovered.events == lost.events
    again.confirm(recovered)
    assert again.close().events == []


def test_a_claimed_revision_lost_before_produce_goes_out_with_the_next_one() -> None:
    stream = Stream(5, n=200)
    state = MemoryJoinState()
    join = make_join(state)
    preds, labels = stream.prediction_batches(200), stream.label_batches(60)
    join.apply(next(preds), next(labels))
    lost = join.close()  # claimed, then the process died before producing
    assert lost.events and {e["revision"] for e in lost.events} == {0}
    again = make_join(state)
    again.apply(None, next(labels))
    recovered = again.close()
    old = [e for e in recovered.events if e["revision"] == 0]
    assert old == lost.events  # the same bytes under the same numbers
    revised = [e for e in recovered.events if e["revision"] == 1]
    assert revised and {e["window_end"] for e in revised} <= {e["window_end"] for e in old}
    again.confirm(recovered)
    assert again.close().events == []


def test_a_stale_window_claims_nothing_and_is_computed_again() -> None:
    stream = Stream(6, n=200)
    state = MemoryJoinState()
    a, b = make_join(state), make_join(state)
    preds, labels = stream.prediction_batches(200), stream.label_batches(60)
    a.apply(next(preds), None)
    a.confirm(a.close())
    real = state.claim

    def late_label_then_claim(windows: Any) -> Any:
        b.apply(None, next(labels))  # between a's read of the buckets and its claim
        return real(windows)

    a.apply(None, next(labels))
    state.claim = late_label_then_claim  # type: ignore[method-assign]
    stale = a.close()
    state.claim = real  # type: ignore[method-assign]
    a.confirm(stale)
    assert stale.events == []
    fresh = a.close()
    a.confirm(fresh)
    assert fresh.events and {e["revision"] for e in fresh.events} == {1}
    assert fresh.events == sorted(fresh.events, key=lambda e: e["window_end"])
