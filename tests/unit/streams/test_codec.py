"""Request decoding: one matrix per batch, every bad message classified, good ones kept."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driftline.streams.codec import REASONS, DecodedBatch, decode_requests

pytestmark = pytest.mark.unit


def _decode(values: Sequence[bytes | None], width: int | None = 3, **kw: object):  # type: ignore[no-untyped-def]
    n = len(values)
    return decode_requests(
        values,
        width=width,
        default_ids=[f"k{i}" for i in range(n)],
        default_times=[1000 + i for i in range(n)],
        **kw,  # type: ignore[arg-type]
    )


def test_well_formed_batch_is_one_matrix_in_order() -> None:
    values = [
        orjson.dumps({"id": "a", "time": 5, "tensor": [[1, 2, 3], [4, 5, 6]]}),
        orjson.dumps({"tensor": [[7.5, 8, 9]]}),
    ]
    b = _decode(values)
    assert b.rows.dtype == np.float64
    assert b.rows.tolist() == [[1, 2, 3], [4, 5, 6], [7.5, 8, 9]]
    assert b.accepted == [0, 1]
    assert b.ids == ["a", "k1"]
    assert b.times == [5, 1001]
    assert b.counts == [2, 1]
    assert b.row_message().tolist() == [0, 0, 1]
    assert b.row_number().tolist() == [0, 1, 0]
    assert b.rejected == []


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"{not json", "malformed_json"),
        (b"", "malformed_json"),
        (None, "missing_tensor"),
        (b"[1, 2, 3]", "missing_tensor"),
        (b'{"id": "x"}', "missing_tensor"),
        (b'{"tensor": []}', "missing_tensor"),
        (b'{"tensor": [["a", 1, 2]]}', "non_numeric"),
        (b'{"tensor": [[true, false, true]]}', "non_numeric"),
        (b'{"tensor": [[1, false, 2]]}', "non_numeric"),
        (b'{"tensor": [[1, 2, true]]}', "non_numeric"),
        (b'{"tensor": [[{"a": 1}, 1, 2]]}', "non_numeric"),
        (b'{"tensor": [[1, 2]]}', "wrong_width"),
        (b'{"tensor": [[1, 2, 3], [1, 2]]}', "wrong_width"),
        (b'{"tensor": [1, 2, 3]}', "wrong_width"),
    ],
)
def test_each_bad_kind_is_rejected_and_neighbours_survive(value: bytes | None, reason: str) -> None:
    good = orjson.dumps({"tensor": [[1, 2, 3]]})
    b = _decode([good, value, good])
    assert [(r.index, r.reason) for r in b.rejected] == [(1, reason)]
    assert reason in REASONS
    assert b.rejected[0].detail
    assert b.accepted == [0, 2]
    assert b.rows.tolist() == [[1, 2, 3], [1, 2, 3]]


def test_too_large_is_checked_before_parsing() -> None:
    big = orjson.dumps({"tensor": [[1, 2, 3]] * 50})
    small = orjson.dumps({"tensor": [[1, 2, 3]]})
    b = _decode([small, big], max_bytes=len(small) + 1)
    assert [(r.index, r.reason) for r in b.rejected] == [(1, "too_large")]
    assert str(len(big)) in b.rejected[0].detail


def test_nan_inf_and_null_are_allowed_by_default() -> None:
    values = [b'{"tensor": [[NaN, Infinity, 1]]}', b'{"tensor": [[null, 1, 2]]}']
    b = _decode(values)
    assert b.rejected == []
    assert math.isnan(b.rows[0, 0]) and math.isinf(b.rows[0, 1]) and math.isnan(b.rows[1, 0])


def test_non_finite_rejected_per_message_when_disallowed() -> None:
    values = [
        orjson.dumps({"tensor": [[1, 2, 3]]}),
        b'{"tensor": [[1, 2, 3], [NaN, 1, 2]]}',
        b'{"tensor": [[1e300, 1, 2]]}',  # finite in float64, inf for the float32 model
        orjson.dumps({"tensor": [[4, 5, 6]]}),
    ]
    b = _decode(values, allow_nan=False)
    assert [(r.index, r.reason) for r in b.rejected] == [(1, "non_finite"), (2, "non_finite")]
    assert b.accepted == [0, 3]
    assert b.counts == [1, 1]
    assert b.rows.tolist() == [[1, 2, 3], [4, 5, 6]]


def test_named_inputs_map_onto_model_input_order() -> None:
    value = orjson.dumps({"inputs": {"b": [2, 20], "a": [[1], [10]], "c": [3, 30]}})
    b = _decode([value], input_names=("a", "b", "c"))
    assert b.rows.tolist() == [[1, 2, 3], [10, 20, 30]]
    single = _decode([orjson.dumps({"inputs": {"x": [[1, 2, 3]]}})], input_names=("x",))
    assert single.rows.tolist() == [[1, 2, 3]]
    missing = _decode([orjson.dumps({"inputs": {"a": [1]}})], input_names=("a", "b", "c"))
    assert missing.rejected[0].reason == "missing_tensor"
    assert "'b'" in missing.rejected[0].detail


def test_unknown_width_needs_one_width_per_batch() -> None:
    b = _decode(
        [b'{"tensor": [[1, 2]]}', b'{"tensor": [[1, 2, 3]]}', b'{"tensor": [["x", 1]]}'], width=None
    )
    assert b.accepted == [0]
    assert [(r.index, r.reason) for r in b.rejected] == [(1, "wrong_width"), (2, "non_numeric")]


def test_defaults_must_match_values() -> None:
    with pytest.raises(ValueError, match="default_ids"):
        decode_requests([b"{}"], width=1, default_ids=[], default_times=[0])


_cell = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.integers(-1000, 1000),
)
_good = st.lists(st.lists(_cell, min_size=3, max_size=3), min_size=1, max_size=4).map(
    lambda t: ("ok", orjson.dumps({"tensor": t}))
)
_bad = st.sampled_from(
    [
        ("malformed_json", b"{"),
        ("missing_tensor", b"{}"),
        ("non_numeric", b'{"tensor": [["1", 2, 3]]}'),
        ("wrong_width", b'{"tensor": [[1, 2, 3, 4]]}'),
    ]
)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(_good, _bad), min_size=1, max_size=12))
def test_every_message_is_either_accepted_or_rejected_once(msgs: list[tuple[str, bytes]]) -> None:
    b = _decode([v for _, v in msgs])
    rejected = {r.index: r.reason for r in b.rejected}
    assert len(rejected) == len(b.rejected)
    assert sorted([*b.accepted, *rejected]) == list(range(len(msgs)))
    expected_rows = []
    for i, (kind, value) in enumerate(msgs):
        if kind == "ok":
            assert i in b.accepted
            expected_rows.extend(orjson.loads(value)["tensor"])
        else:
            assert rejected[i] == kind
    np.testing.assert_array_equal(b.rows, np.array(expected_rows, dtype=np.float64).reshape(-1, 3))
    assert sum(b.counts) == b.num_rows


_ident = st.one_of(
    st.none(), st.text(max_size=3), st.integers(-5, 5), st.booleans(), st.floats(width=32)
)
_doc = st.fixed_dictionaries(
    {"tensor": st.lists(st.lists(_cell, min_size=3, max_size=3), min_size=1, max_size=3)},
    optional={"id": _ident, "time": st.one_of(_ident, st.integers(0, 2**40))},
).map(lambda d: ("ok", orjson.dumps(d)))


def _fields(b: DecodedBatch) -> tuple[object, ...]:
    return (b.accepted, b.counts, b.ids, b.times, b.rejected, b.rows.tolist())


@settings(max_examples=80, deadline=None)
@given(st.lists(st.one_of(_doc, _doc, _bad), min_size=1, max_size=10))
def test_batch_fast_path_decodes_exactly_as_message_by_message(
    msgs: list[tuple[str, bytes]],
) -> None:
    import driftline.streams.codec as codec

    values: list[bytes | None] = [v for _, v in msgs]
    fast = _decode(values)
    original = codec._scan_batch
    codec._scan_batch = lambda *a, **k: None
    try:
        slow = _decode(values)
    finally:
        codec._scan_batch = original
    assert _fields(fast) == _fields(slow)
    # Requests that carry no usable id or time get the per-message defaults.
    for k, i in enumerate(fast.accepted):
        doc = orjson.loads(values[i])
        rid = doc.get("id")
        if not (isinstance(rid, str) and rid) and type(rid) is not int:
            assert fast.ids[k] == f"k{i}"
        if doc.get("time") is None:
            assert fast.times[k] == 1000 + i


# Poisoned single messages (issue 18, findings 3): each used to raise out of decode_requests
# (OverflowError, RecursionError) and so stop the worker on every restart.
@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b'{"tensor": [[1, 2, ' + b"9" * 400 + b"]]}", "number_out_of_range"),
        (b'{"tensor": [[1, 2, -' + b"9" * 400 + b"]]}", "number_out_of_range"),
        (b'{"tensor": [[1, 2, 1e400]]}', "number_out_of_range"),
        (b'{"tensor": [[1, 2, -1e400]]}', "number_out_of_range"),
        (b"[" * 100_000, "too_deep"),
        (b'{"tensor": ' + b"[" * 5000 + b"1" + b"]" * 5000 + b"}", "too_deep"),
        # Deep, but within orjson's own limit: refused as a tensor, not by a recursion.
        (b'{"tensor": [[1, 2, ' + b"[" * 1000 + b"1" + b"]" * 1000 + b"]]}", "non_numeric"),
        (b'{"tensor": [[1, 2, 3]], "x": ' + b"7" * 5000 + b"}", "number_out_of_range"),
    ],
)
def test_poisoned_messages_are_rejected_and_neighbours_survive(value: bytes, reason: str) -> None:
    good = orjson.dumps({"tensor": [[1, 2, 3]]})
    b = _decode([good, value, good])
    assert [(r.index, r.reason) for r in b.rejected] == [(1, reason)]
    assert reason in REASONS and len(b.rejected[0].detail) < 500
    assert b.accepted == [0, 2] and b.rows.tolist() == [[1, 2, 3], [1, 2, 3]]


def test_a_huge_integer_reaching_the_strict_path_is_out_of_range() -> None:
    from driftline.streams.codec import _check_one, _Reject

    with pytest.raises(_Reject) as info:
        _check_one([[1, 10**400]], 2)
    assert info.value.reason == "number_out_of_range"


def test_event_times_outside_the_accepted_range_are_rejected() -> None:
    values = [
        orjson.dumps({"time": 999, "tensor": [[1, 2, 3]]}),
        orjson.dumps({"time": 1000, "tensor": [[1, 2, 3]]}),
        orjson.dumps({"tensor": [[1, 2, 3]]}),  # default time 1002
        orjson.dumps({"time": 2000, "tensor": [[1, 2, 3]]}),
        orjson.dumps({"time": 32503680000000, "tensor": [[1, 2, 3]]}),  # year 3000
        b'{"time": 1' + b"0" * 30 + b', "tensor": [[1, 2, 3]]}',  # no calendar date at all
    ]
    b = _decode(values, time_range=(1000, 2000))
    assert b.accepted == [1, 2, 3] and b.times == [1000, 1002, 2000]
    assert b.rows.shape == (3, 3)
    assert [(r.index, r.reason) for r in b.rejected] == [
        (0, "time_out_of_range"),
        (4, "time_out_of_range"),
        (5, "time_out_of_range"),
    ]
    assert "before" in b.rejected[0].detail and "3000-01-01" in b.rejected[1].detail
    assert "DRIFTLINE_WORKER_MAX_EVENT_AGE_MS" in b.rejected[0].detail


_any_json = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=16,
)
_hostile = st.one_of(
    st.binary(max_size=48),
    # Python's json writes NaN, Infinity and integers of any size, as a careless producer may.
    _any_json.map(lambda v: json.dumps({"tensor": v}).encode()),
    _any_json.map(lambda v: json.dumps({"tensor": [[1, 2, 3]], "time": v}).encode()),
    _any_json.map(lambda v: json.dumps(v).encode()),
    st.integers(1, 6000).map(lambda d: b'{"tensor": ' + b"[" * d + b"1" + b"]" * d + b"}"),
    st.integers(1, 6000).map(lambda d: b"[" * d),
    st.integers(300, 4000).map(lambda d: b'{"tensor": [[' + b"9" * d + b", 1, 2]]}"),
    st.sampled_from(
        [
            b'{"tensor": [[1e400, 1, 2]]}',
            b'{"tensor": [[-1e999, 1, 2]]}',
            b'{"tensor": [[1, 2, 3]], "time": 1e30}',
            b'{"tensor": [[1, 2, 3]], "time": -1e400}',
            b'{"tensor": [[1, 2, 3]], "time": "2026-01-01"}',
            b'{"tensor": [[1, 2, 3]], "id": ' + b"[" * 3000 + b"]" * 3000 + b"}",
        ]
    ),
).map(lambda v: ("hostile", v))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(_good, _hostile), min_size=1, max_size=8), st.booleans())
def test_no_message_makes_decoding_raise_and_good_neighbours_are_kept(
    msgs: list[tuple[str, bytes]], allow_nan: bool
) -> None:
    b = _decode([v for _, v in msgs], allow_nan=allow_nan, max_bytes=50_000, time_range=(0, 2**41))
    rejected = {r.index: r for r in b.rejected}
    assert len(rejected) == len(b.rejected)
    assert sorted([*b.accepted, *rejected]) == list(range(len(msgs)))
    assert all(r.reason in REASONS and 0 < len(r.detail) < 600 for r in b.rejected)
    assert all(0 <= t <= 2**41 for t in b.times)
    assert [i for i, (kind, _) in enumerate(msgs) if kind == "ok"] == [
        i for i in b.accepted if msgs[i][0] == "ok"
    ]
    assert sum(b.counts) == b.num_rows and b.rows.shape[1] == 3
