"""The assay lifecycle: one notification per status transition, ``for`` and ``repeat``."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from driftline.alerts.lifecycle import AlertState
from driftline.streams.assay_lifecycle import run_assay, step_assay

pytestmark = pytest.mark.unit


def _t(out):  # type: ignore[no-untyped-def]
    return [(t.state, t.level, t.at, t.repeat) for t in out]


def test_each_level_change_is_one_notification() -> None:
    statuses = ["ok", "warning", "warning", "alert", "alert", "warning", "ok", "ok"]
    s, out = run_assay({}, statuses, list(range(10, 90, 10)))
    assert _t(out) == [
        ("firing", "warning", 20, False),
        ("firing", "alert", 40, False),
        ("firing", "warning", 60, False),
        ("resolved", "warning", 70, False),
    ]
    assert s == {"state": "ok"}
    # an alert straight from ok, resolved straight to ok
    _, out = run_assay({}, ["alert", "ok"], [1, 2])
    assert _t(out) == [("firing", "alert", 1, False), ("resolved", "alert", 2, False)]


def test_for_waits_from_the_first_window_not_ok_whatever_its_level() -> None:
    _, out = run_assay({}, ["warning", "alert", "alert", "ok"], [0, 10, 20, 30], for_ms=20)
    assert _t(out) == [("firing", "alert", 20, False), ("resolved", "alert", 30, False)]
    # a blip shorter than ``for`` notifies nobody
    s, out = run_assay({}, ["alert", "ok", "alert", "ok"], [0, 10, 20, 30], for_ms=20)
    assert out == [] and s == {"state": "ok"}


def test_repeat_resends_the_current_level() -> None:
    _, out = run_assay({}, ["warning"] * 4 + ["alert"] * 3, range(0, 70, 10), repeat_ms=20)
    assert _t(out) == [
        ("firing", "warning", 0, False),
        ("firing", "warning", 20, True),
        ("firing", "alert", 40, False),
        ("firing", "alert", 60, True),
    ]


def test_ids_are_deterministic_and_distinct() -> None:
    _, a = run_assay({}, ["warning", "alert", "ok"], [1, 2, 3])
    _, b = run_assay({}, ["warning", "alert", "ok"], [1, 2, 3])
    ids = [t.id("p", "drift") for t in a]
    assert ids == [t.id("p", "drift") for t in b]
    assert len(set(ids)) == 3
    assert ids[0] != a[0].id("p", "other")


def test_state_is_readable_by_the_alert_state_and_resumes_anywhere() -> None:
    statuses = ["ok", "warning", "alert", "alert", "warning", "ok", "alert"]
    ends = list(range(7))
    whole, all_out = run_assay({}, statuses, ends, for_ms=1, repeat_ms=2)
    s: dict = {}  # type: ignore[type-arg]
    parts = []
    for status, end in zip(statuses, ends, strict=True):
        AlertState.from_dict(s)  # stored states stay valid for the alert reader
        s, out = step_assay(s, status, end, for_ms=1, repeat_ms=2)
        parts.extend(out)
    assert s == whole and _t(parts) == _t(all_out)


def test_a_state_stored_before_levels_existed_takes_the_window_level() -> None:
    old = {"state": "firing", "since": 5, "notified": 5}
    s, out = step_assay(old, "alert", 10)
    assert out == [] and s["level"] == "alert"
    _, out = step_assay(old, "ok", 10)
    assert _t(out) == [("resolved", "warning", 10, False)]


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="status='error'"):
        step_assay({}, "error", 1)
    with pytest.raises(ValueError, match="for_ms=-1"):
        step_assay({}, "ok", 1, for_ms=-1)
    with pytest.raises(ValueError, match="same length"):
        run_assay({}, ["ok"], [1, 2])


@given(st.lists(st.sampled_from(["ok", "warning", "alert"]), max_size=40))
def test_notifications_alternate_between_levels_and_ok(statuses: list[str]) -> None:
    _, out = run_assay({}, statuses, list(range(len(statuses))))
    level = "ok"
    for t in out:
        if t.state == "resolved":
            assert level != "ok" and t.level == level
            level = "ok"
        else:
            assert t.level != level  # no repeat configured: every firing changes the level
            level = t.level
    changes = [s for i, s in enumerate(statuses) if s != (statuses[i - 1] if i else "ok")]
    assert len(out) == len(changes)
