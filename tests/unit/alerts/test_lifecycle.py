from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from driftline.alerts.lifecycle import AlertState, run, step

pytestmark = pytest.mark.unit


def test_fires_and_resolves_once():
    s, out = run(AlertState(), [False, True, True, True, False, False], range(6), [0] * 6)
    assert [(t.state, t.at) for t in out] == [("firing", 1), ("resolved", 4)]
    assert s.state == "ok"


def test_for_waits_before_firing_and_pending_resets():
    holds = [True, True, False, True, True, True]
    s, out = run(AlertState(), holds, [0, 10, 20, 30, 40, 50], [1.0] * 6, for_ms=20)
    assert [(t.state, t.at) for t in out] == [("firing", 50)]
    assert s.state == "firing" and s.since == 50


def test_repeat_renotifies_while_firing_with_new_ids():
    _s, out = run(AlertState(), [True] * 5, [0, 10, 20, 30, 40], [1.0] * 5, repeat_ms=20)
    assert [(t.at, t.repeat, t.start) for t in out] == [(0, False, 0), (20, True, 0), (40, True, 0)]
    ids = {t.id("p", "a") for t in out}
    assert len(ids) == 3


def test_ids_are_deterministic():
    _, a = run(AlertState(), [True, False], [5, 6], [1, 0])
    _, b = run(AlertState(), [True, False], [5, 6], [1, 0])
    assert [t.id("p", "x") for t in a] == [t.id("p", "x") for t in b]
    assert a[0].id("p", "x") != a[1].id("p", "x")


def test_bad_arguments_name_the_parameter():
    with pytest.raises(ValueError, match="for_ms"):
        step(AlertState(), True, 0, for_ms=-1)
    with pytest.raises(ValueError, match="holds, ends and values"):
        run(AlertState(), [True], [1, 2], [0])


def test_state_roundtrip():
    s = AlertState("firing", 5, 7)
    assert AlertState.from_dict(s.to_dict()) == s
    with pytest.raises(ValueError, match="alert state"):
        AlertState.from_dict({"state": "weird"})


@given(st.lists(st.booleans(), max_size=60), st.data())
def test_split_runs_equal_one_run(holds, data):
    """Evaluating windows in several chunks (e.g. across restarts) gives the same transitions."""
    ends = [i * 10 for i in range(len(holds))]
    vals = [float(i) for i in range(len(holds))]
    cut = data.draw(st.integers(0, len(holds)))
    s1, whole = run(AlertState(), holds, ends, vals, for_ms=20, repeat_ms=30)
    s2, a = run(AlertState(), holds[:cut], ends[:cut], vals[:cut], for_ms=20, repeat_ms=30)
    s2 = AlertState.from_dict(s2.to_dict())
    s2, b = run(s2, holds[cut:], ends[cut:], vals[cut:], for_ms=20, repeat_ms=30)
    assert whole == a + b and s1 == s2
    # transitions alternate firing/resolved (repeats aside)
    states = [t.state for t in whole if not t.repeat]
    assert all(x != y for x, y in itertools.pairwise(states))
