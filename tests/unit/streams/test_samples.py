"""Bottom-k samples: the same whichever way the stream is cut, and bounded."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from driftline.streams.samples import member, merge, parse_member, priorities

pytestmark = pytest.mark.unit


def _bucket(ids: list[str], size: int) -> list[tuple[float, float]]:
    p = priorities(ids, [0] * len(ids), [0] * len(ids), list(range(len(ids))))
    order = np.argsort(p, kind="stable")[:size]
    return [(float(p[i]), float(i)) for i in order]


@given(st.lists(st.integers(0, 10_000), unique=True, max_size=60), st.integers(1, 10), st.data())
def test_a_window_sample_does_not_depend_on_how_the_stream_was_cut(ids, size, data) -> None:  # type: ignore[no-untyped-def]
    names = [f"r{i}" for i in ids]
    cuts = sorted(data.draw(st.lists(st.integers(0, len(names)), max_size=4)))
    p = priorities(names, [0] * len(names), [0] * len(names), [0] * len(names))
    events = [(float(p[i]), float(ids[i])) for i in range(len(names))]
    whole = merge([events], size)
    parts = [events[a:b] for a, b in zip([0, *cuts], [*cuts, len(events)], strict=True)]
    # each part trimmed to its own bottom-k first, as a bucket in Redis is
    trimmed = [sorted(part)[:size] for part in parts]
    assert merge(trimmed, size) == whole
    assert len(whole) == min(size, len(names))


def test_priorities_key_on_id_and_row_or_else_on_the_offset() -> None:
    a = priorities(["x", "x", "y"], [0, 1, 0], [0, 0, 0], [1, 2, 3])
    assert len(set(a.tolist())) == 3
    same = priorities(["x"], [0], [5], [99])  # another partition and offset: same event
    assert same[0] == a[0]
    no_id = priorities([None, None], [0, 0], [0, 1], [7, 7])
    assert no_id[0] != no_id[1]
    assert ((a >= 0) & (a < 1)).all()


def test_members_round_trip() -> None:
    assert parse_member(member(0.125, 3.5)) == 3.5
    assert member(0.1, 1.0) != member(0.2, 1.0)
