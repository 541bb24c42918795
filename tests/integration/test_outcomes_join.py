"""The performance join on the real Redis: exact final revisions, restarts, concurrent monitors."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest

from driftline.performance import BinaryEstimator, BinaryLayout
from driftline.streams.feedback import (
    Labels,
    PerformanceJoin,
    Predictions,
    RedisJoinState,
    StateLostError,
)

from ..unit.performance._join_stream import MIN, Stream, check_final, run

pytestmark = pytest.mark.integration


def make_join(client: Any, prefix: str, **kw: Any) -> PerformanceJoin:
    state = RedisJoinState(client, prefix, "p", "quality", "d1", horizon_ms=10**9)
    return PerformanceJoin(
        "p",
        "quality",
        "sha256:x",
        BinaryLayout(bins=20),
        BinaryEstimator(),
        state,
        width_ms=2 * MIN,
        interval_ms=MIN,
        horizon_ms=10**9,
        partitions=2,
        lateness_ms=0,
        **kw,
    )


@pytest.mark.parametrize("seed", [0, 3])
def test_final_revisions_on_redis_equal_offline(
    redis_client: Any, redis_prefix: str, seed: int
) -> None:
    stream = Stream(seed)
    join = make_join(redis_client, redis_prefix)
    events = run(join, stream, seed)
    check_final(events, stream, join)
    c = join.counters()
    assert c["predictions"] == len(stream.ids) and c["labels"] == len(stream.label_rows)
    assert any(e["revision"] > 0 for e in events)
    # every key of the join shares the pipeline's hash tag
    keys = [k.decode() for k in redis_client.scan_iter(match=f"{redis_prefix}*", count=1000)]
    assert keys and all(k.startswith(f"{redis_prefix}:{{p}}:perf:quality:d1:") for k in keys)


def test_restarted_monitor_reapplies_nothing(redis_client: Any, redis_prefix: str) -> None:
    stream = Stream(7, n=300)
    preds = list(stream.prediction_batches(50))
    labels = list(stream.label_batches(50))
    first = make_join(redis_client, redis_prefix)
    for p, lab in zip(preds[:3], labels[:3], strict=False):
        first.apply(p, lab)
    before = first.counters()
    # a restarted process reads every batch again from the last committed offsets (none)
    second = make_join(redis_client, redis_prefix)
    events: list[dict[str, Any]] = []
    for i in range(max(len(preds), len(labels))):
        r = second.apply(
            preds[i] if i < len(preds) else None, labels[i] if i < len(labels) else None
        )
        if i < 3:
            assert r.counters == {} and r.skipped > 0
    assert second.counters()["predictions"] == len(stream.ids) > before["predictions"]
    closing = second.close(watermark=int(stream.times.max()) + 10 * MIN)
    second.confirm(closing)
    events += closing.events
    check_final(events, stream, second)
    # a process that applied more than Redis holds learns that the state was lost
    lost = make_join(redis_client, redis_prefix + "x")
    lost._offsets = {"p.results:0": 5}
    with pytest.raises(StateLostError, match="replaying the results and feedback topics"):
        lost.apply(preds[0], None)


def test_two_monitors_on_shared_ids_join_exactly(redis_client: Any, redis_prefix: str) -> None:
    stream = Stream(11, n=800)
    preds = list(stream.prediction_batches(20))
    labels = list(stream.label_batches(20))

    def only(batch: Any, part: int) -> Any:
        sel = np.flatnonzero(np.asarray(batch.partitions) == part)
        if not sel.size:
            return None
        return type(batch)(
            batch.topic,
            [batch.ids[i] for i in sel],
            *(np.asarray(getattr(batch, f))[sel] for f in list(batch.__dataclass_fields__)[2:]),
        )

    joins = [make_join(redis_client, redis_prefix) for _ in range(2)]
    errors: list[BaseException] = []
    attempts = [0, 0]

    def worker(k: int) -> None:
        try:
            for i in range(max(len(preds), len(labels))):
                p = only(preds[i], k) if i < len(preds) else None
                lab = only(labels[i], k) if i < len(labels) else None
                attempts[k] += joins[k].apply(p, lab).attempts
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    closing = joins[0].close(watermark=int(stream.times.max()) + 10 * MIN)
    joins[0].confirm(closing)
    check_final(closing.events, stream, joins[0])
    c = joins[0].counters()
    assert c["predictions"] == len(stream.ids) and c["labels"] == len(stream.label_rows)


def test_labels_and_predictions_types_roundtrip(redis_client: Any, redis_prefix: str) -> None:
    join = make_join(redis_client, redis_prefix)
    t0 = 1_700_000_000_000
    lab = Labels(
        "f", ["a:b"], np.array([3]), np.array([1.0]), np.array([t0]), np.array([0]), np.array([0])
    )
    join.apply(None, lab)
    pred = Predictions(
        "r", ["a:b"], np.array([3]), np.array([t0]), np.array([0.75]), np.array([1]), np.array([0])
    )
    assert join.apply(pred, None).counters == {"predictions": 1, "joined": 1}
    assert join.state.pending_before(t0 + 1) == []


def test_alert_state_survives_a_restart_on_redis(redis_client: Any, redis_prefix: str) -> None:
    from driftline.spec import PerformanceAlertSpec

    drop = PerformanceAlertSpec("drop", "accuracy", "<", 0.9, 2, ("email:ops@example.com",))
    t0 = 1_699_999_980_000

    def join() -> PerformanceJoin:
        state = RedisJoinState(redis_client, redis_prefix, "p", "quality", "d1", horizon_ms=10**9)
        return PerformanceJoin(
            "p",
            "quality",
            "sha256:x",
            BinaryLayout(),
            None,
            state,
            width_ms=MIN,
            interval_ms=MIN,
            horizon_ms=10**9,
            partitions=1,
            lateness_ms=0,
            alerts={"drop": drop},
        )

    z = np.zeros(3, dtype=np.int64)
    ids = ["a", "b", "c"]
    first = join()
    first.apply(
        Predictions("r", ids, z, np.full(3, t0), np.array([0.9, 0.9, 0.1]), z, np.arange(3)),
        Labels("f", ids, z, np.array([0.0, 0.0, 0.0]), np.full(3, t0), z, np.arange(3)),
    )
    closing = first.close(watermark=t0 + MIN)
    first.confirm(closing)
    assert [n["state"] for n in closing.notifications] == ["firing"]
    second = join()
    second.apply(
        None, Labels("f", ["c"], z[:1], np.array([1.0]), np.array([t0]), z[:1], np.array([3]))
    )
    closing = second.close(watermark=t0 + MIN)
    second.confirm(closing)
    assert closing.events and closing.events[0]["revision"] == 1
    assert closing.notifications == []  # still firing (0 of 3 right now), already notified
    assert second.state.marks().alerts["drop"]["state"]["state"] == "firing"
