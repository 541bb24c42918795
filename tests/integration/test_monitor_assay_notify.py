"""Assay transitions on real Redis: ``ok → warning → alert → warning → ok``, one notification
each, with the details a reader acts on, and the same ids when the windows are recomputed."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from driftline.detectors import Baseline
from driftline.events import Notification, decode, encode
from driftline.expressions import parse
from driftline.streams._engine import AssayPlan, Batch, DetectorBaseline, PipelineEngine
from driftline.streams._monitor_cli import parse_time
from driftline.streams.state import RedisState

pytestmark = pytest.mark.integration

T0 = 1_700_000_000_000
THRESHOLDS = {"warning": 0.1, "alert": 0.25}


def _window(share_high: float) -> np.ndarray:
    """200 values: the baseline's uniform spread, with ``share_high`` of them moved to 0.99."""
    k = int(200 * share_high)
    return np.concatenate([np.linspace(0, 1, 200)[: 200 - k], np.full(k, 0.99)])


def _engine(redis_client, prefix, **plan):  # type: ignore[no-untyped-def]
    base = DetectorBaseline(Baseline.from_values(np.linspace(0, 1, 1001)), "psi", THRESHOLDS)
    y = AssayPlan(
        "drift", parse("m.outputs[0][0]"), base, 1000, 1000, "psi",
        notify=("email:ops@example.com", "webhook:pager"), **plan,
    )  # fmt: skip
    state = RedisState(redis_client, prefix, "fraud")
    return PipelineEngine("fraud", "sha256:x", ["m"], [], [y], state, 1, 0)


def _events(shares: list[float]) -> Batch:
    rows = []
    for s, share in enumerate(shares):
        for j, x in enumerate(_window(share)):
            doc = {"time": T0 + 1000 * s + j, "outputs": {"m": [[float(x)]]}, "inputs": [0.0]}
            rows.append((0, len(rows), orjson.dumps(doc)))
    # one event past the last window closes it
    rows.append((0, len(rows), orjson.dumps({"time": T0 + 1000 * len(shares), "outputs": {}})))
    return Batch.of("res", rows)


def _run(redis_client, prefix, shares, **plan):  # type: ignore[no-untyped-def]
    eng = _engine(redis_client, prefix, **plan)
    eng.ingest(_events(shares))
    closed = eng.close()
    eng.commit(closed)
    return closed


SHARES = [0.0, 0.3, 0.5, 0.5, 0.3, 0.0, 0.0]  # ok warning alert alert warning ok ok


def test_each_status_transition_is_one_notification_with_details(redis_client, redis_prefix):  # type: ignore[no-untyped-def]
    closed = _run(redis_client, redis_prefix, SHARES)
    assert [a.status for a in closed.assays] == [
        "ok", "warning", "alert", "alert", "warning", "ok", "ok",
    ]  # fmt: skip
    notes = closed.notifications
    assert [(n.state, n.severity, n.at - T0) for n in notes] == [
        ("firing", "warning", 2000),
        ("firing", "critical", 3000),
        ("firing", "warning", 5000),
        ("resolved", "warning", 6000),
    ]
    assert all(n.kind == "assay" and n.alert == "drift" for n in notes)
    assert all(n.notify == ["email:ops@example.com", "webhook:pager"] for n in notes)
    assert len({n.id for n in notes}) == 4
    by_end = {a.window_end: a for a in closed.assays}
    for n in notes:
        d = n.details
        assert d is not None
        a = by_end[n.at]
        assert (d["assay_status"], d["metric"], d["score"]) == (a.status, "psi", a.score)
        assert n.value == a.score
        assert (d["window_count"], d["baseline_count"]) == (200, 1001)
        assert d["thresholds"] == THRESHOLDS and d["iopath"] == "m.outputs[0][0]"
        crossed = {"warning": 0.1, "critical": 0.25}[n.severity]
        assert d["threshold"] == (0.1 if n.state == "resolved" else crossed)
        # the replay command names a range that reaches back before the transition
        words = d["replay"].split()
        assert words[:3] == ["driftline", "replay", "fraud"] and words[-1] == "--audit"
        start = parse_time(words[words.index("--from") + 1], "--from")
        assert parse_time(words[words.index("--to") + 1], "--to") == n.at
        assert start <= n.window["start"]
    # the notification survives its wire form, details included
    again = Notification.from_dict(decode(encode(notes[0])))
    assert again == notes[0]


def test_recomputing_the_windows_gives_the_same_transitions(redis_client, redis_prefix):  # type: ignore[no-untyped-def]
    live = _run(redis_client, redis_prefix + "a", SHARES)
    replayed = _run(redis_client, redis_prefix + "b", SHARES)
    assert [n.to_dict() for n in live.notifications] == [
        n.to_dict() for n in replayed.notifications
    ]


def test_for_and_repeat_are_honoured(redis_client, redis_prefix):  # type: ignore[no-untyped-def]
    closed = _run(
        redis_client,
        redis_prefix,
        [0.3, 0.0, 0.3, 0.5, 0.5, 0.5, 0.5, 0.0],
        for_ms=1000,
        repeat_ms=2000,
        severity="warning",
    )
    # the lone warning at 1000 is shorter than ``for``; the run from 3000 fires at 4000
    assert [
        (n.state, n.severity, n.at - T0, n.details["assay_status"]) for n in closed.notifications
    ] == [  # type: ignore[index]
        ("firing", "warning", 4000, "alert"),
        ("firing", "warning", 6000, "alert"),
        ("resolved", "warning", 8000, "ok"),
    ]
