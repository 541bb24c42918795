"""The pure core of external pipelines: pairing by id, the changelog, result events."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import orjson
import pytest

from driftline.expressions import evaluate, parse
from driftline.streams._external_pairs import (
    DUPLICATE_ID,
    MISSING_ID,
    PAIR_MISMATCH,
    REQUEST,
    RESPONSE,
    Pairing,
    Pending,
    Record,
    ResultBuilder,
    message_id,
)
from driftline.streams.codec import MALFORMED_JSON, MISSING_TENSOR, _Reject
from driftline.streams.v2 import InputSpec

pytestmark = pytest.mark.unit


def _req(rid: str, row: list[float], offset: int = 0, key: bool = True, **extra: Any) -> Record:
    body = {"inputs": [{"name": "x", "shape": [1, len(row)], "datatype": "FP32", "data": row}]}
    body.update(extra)
    return Record("reqs", 0, offset, rid.encode() if key else None, orjson.dumps(body), 1000)


def _resp(rid: str, p: float, offset: int = 0, rows: int = 1) -> Record:
    body = {
        "model_name": "m",
        "id": rid,
        "outputs": [
            {"name": "extra", "shape": [rows, 1], "datatype": "FP32", "data": [9.0] * rows},
            {"name": "prob", "shape": [rows, 1], "datatype": "FP32", "data": [p] * rows},
        ],
    }
    return Record("resps", 1, offset, rid.encode(), orjson.dumps(body), 1250)


def _builder(**kw: Any) -> ResultBuilder:
    names = {("m", "inputs"): ["x"], ("m", "outputs"): ["prob"]}
    expr = parse("m.outputs[0][0] < 0.5")
    return ResultBuilder(
        "ext",
        "sha256:v",
        "m",
        [InputSpec("x", "float32", (None, 3))],
        [InputSpec("prob", "float32", (None, 1))],
        {"low": lambda t: evaluate(expr, t, names)},
        **kw,
    )


def test_ids_come_from_the_key_first_then_the_body() -> None:
    assert message_id(Record("t", 0, 0, b"k", b'{"id": "b"}', 0)) == "k"
    assert message_id(Record("t", 0, 0, None, b'{"id": 12}', 0)) == "12"
    with pytest.raises(_Reject) as info:
        message_id(Record("t", 0, 0, None, b'{"inputs": []}', 0))
    assert info.value.reason == MISSING_ID
    for key in (None, b"k"):
        with pytest.raises(_Reject) as info:
            message_id(Record("t", 0, 0, key, b"{not json", 0))
        assert info.value.reason == MALFORMED_JSON
        with pytest.raises(_Reject) as info:
            message_id(Record("t", 0, 0, key, b"[1]", 0))
        assert info.value.reason == MISSING_TENSOR


def test_a_pair_completes_in_either_order() -> None:
    p = Pairing(timeout_ms=1000)
    assert p.offer(RESPONSE, "a", _resp("a", 0.1), 0) is None
    pair = p.offer(REQUEST, "a", _req("a", [1, 2, 3]), 1)
    assert pair is not None and pair[0].side == REQUEST and pair[1].side == RESPONSE
    assert p.pending == {}


def test_a_second_message_of_the_same_side_and_id_is_refused_and_the_first_stays() -> None:
    p = Pairing(timeout_ms=1000)
    first = _req("a", [1, 2, 3], offset=1)
    p.offer(REQUEST, "a", first, 0)
    with pytest.raises(_Reject) as info:
        p.offer(REQUEST, "a", _req("a", [4, 5, 6], offset=2), 0)
    assert info.value.reason == DUPLICATE_ID
    pair = p.offer(RESPONSE, "a", _resp("a", 0.3), 0)
    assert pair is not None and pair[0].record is first


def test_what_waited_past_the_timeout_since_it_was_read_expires_oldest_first() -> None:
    p = Pairing(timeout_ms=100)
    p.offer(REQUEST, "b", _req("b", [1, 2, 3]), 50)
    p.offer(RESPONSE, "a", _resp("a", 0.2), 10)
    assert p.oldest_wait_ms(109) == 99
    assert p.expire(109) == []
    assert [e.id for e in p.expire(150)] == ["a", "b"]
    assert p.pending == {}


def test_a_restart_gives_what_was_waiting_a_full_timeout_again() -> None:
    p = Pairing(timeout_ms=100)
    p.offer(REQUEST, "b", _req("b", [1, 2, 3]), 0)
    saved = [(k, e.to_record()) for k, e in p.changes().items() if e is not None]
    again = Pairing(timeout_ms=100)
    again.restore((Pending.from_record(k.encode(), *r) for k, r in saved), now_ms=1000)
    assert again.changes() == {}  # what was restored is what is saved
    assert again.expire(1099) == []
    assert [e.id for e in again.expire(1100)] == ["b"]


def test_changes_hold_only_what_still_waits_or_no_longer_does() -> None:
    p = Pairing(timeout_ms=100)
    # Paired within one batch: nothing for the changelog.
    p.offer(REQUEST, "a", _req("a", [1, 2, 3]), 0)
    p.offer(RESPONSE, "a", _resp("a", 0.2), 0)
    p.offer(REQUEST, "b", _req("b", [1, 2, 3]), 0)
    assert list(p.changes()) == ["b"]
    p.saved()
    assert p.changes() == {}
    p.offer(RESPONSE, "b", _resp("b", 0.2), 1)
    assert p.changes() == {"b": None}


def test_state_saved_and_restored_pairs_exactly_as_if_nothing_had_happened() -> None:
    """A worker that stops after any batch and starts again from what its changelog holds
    completes the same pairs as one that never stopped (the crash-recovery argument)."""
    rng = random.Random(7)
    ids = [f"r{i}" for i in range(200)]
    messages = [(REQUEST, i, _req(i, [1, 2, 3])) for i in ids]
    messages += [(RESPONSE, i, _resp(i, 0.5)) for i in ids]
    rng.shuffle(messages)
    batches = [messages[i : i + 17] for i in range(0, len(messages), 17)]

    straight = Pairing(timeout_ms=10**9)
    expected = set()
    for batch in batches:
        for side, rid, rec in batch:
            if straight.offer(side, rid, rec, 0) is not None:
                expected.add(rid)

    changelog: dict[str, Any] = {}
    got: list[str] = []
    live = Pairing(timeout_ms=10**9)
    for batch in batches:
        for side, rid, rec in batch:
            if live.offer(side, rid, rec, 0) is not None:
                got.append(rid)
        for rid, entry in live.changes().items():
            if entry is None:
                changelog.pop(rid)
            else:
                changelog[rid] = entry.to_record()
        live.saved()
        if rng.random() < 0.3:  # a restart: the state is what the changelog holds
            live = Pairing(timeout_ms=10**9)
            restored = (Pending.from_record(k.encode(), *r) for k, r in changelog.items())
            live.restore(restored, now_ms=0)
    assert sorted(got) == sorted(expected) == sorted(ids)
    assert changelog == {}


def test_pairs_become_result_events_with_validations_applied() -> None:
    b = _builder()
    req = Pending(REQUEST, "a", _req("a", [1.5, 2, 3], time=1234), 0)
    resp = Pending(RESPONSE, "a", _resp("a", 0.75), 0)
    built = b.pairs([(req, resp)])
    assert built.rejected == []
    ((key, value, partition, when),) = built.results
    event = orjson.loads(value)
    assert key == b"a" and partition == 0 and when == 1234
    assert event["id"] == "a" and event["row"] == 0 and event["time"] == 1234
    assert event["inputs"] == [1.5, 2.0, 3.0]
    assert event["outputs"] == {"m": [[0.75]]}
    assert event["check_failures"] == ["low"]
    assert event["models"] == {"m": "external"}
    assert event["pipeline"] == "ext" and event["spec"] == "sha256:v"
    assert event["elapsed_ns"] == 250 * 1_000_000
    assert built.check_failures == {"low": 1}


def test_without_a_time_the_request_timestamp_is_the_event_time() -> None:
    b = _builder(record_inputs=False)
    built = b.pairs(
        [
            (
                Pending(REQUEST, "a", _req("a", [1, 2, 3]), 0),
                Pending(RESPONSE, "a", _resp("a", 0.1), 0),
            )
        ]
    )
    event = orjson.loads(built.results[0][1])
    assert event["time"] == 1000 and "inputs" not in event and event["check_failures"] == []


def test_a_pair_that_does_not_fit_the_schema_dead_letters_both_halves() -> None:
    b = _builder()
    good = (
        Pending(REQUEST, "a", _req("a", [1, 2, 3]), 0),
        Pending(RESPONSE, "a", _resp("a", 0.1), 0),
    )
    rows = (
        Pending(REQUEST, "b", _req("b", [1, 2, 3]), 0),
        Pending(RESPONSE, "b", _resp("b", 0.1, rows=2), 0),
    )
    width = (
        Pending(REQUEST, "c", _req("c", [1, 2]), 0),
        Pending(RESPONSE, "c", _resp("c", 0.1), 0),
    )
    no_out = (
        Pending(REQUEST, "d", _req("d", [1, 2, 3]), 0),
        Pending(RESPONSE, "d", Record("resps", 0, 9, b"d", b'{"id": "d"}', 0), 0),
    )
    built = b.pairs([good, rows, width, no_out])
    assert [orjson.loads(v)["id"] for _k, v, _p, _t in built.results] == ["a"]
    reasons = [(r.topic, reason) for r, reason, _d in built.rejected]
    assert reasons == [
        ("resps", PAIR_MISMATCH),
        ("reqs", PAIR_MISMATCH),
        ("resps", "wrong_width"),
        ("reqs", "wrong_width"),
        ("resps", MISSING_TENSOR),
        ("reqs", MISSING_TENSOR),
    ]


def test_driftline_format_events_are_checked_and_their_checks_recomputed() -> None:
    b = _builder()

    def rec(doc: Any, offset: int) -> Record:
        return Record("events", 2, offset, None, orjson.dumps(doc), 777)

    good = {"id": "e1", "row": 1, "time": 5, "inputs": [1, 2, 3], "outputs": {"m": [[0.9]]}}
    no_time = {"id": "e2", "inputs": [1, 2, 3], "outputs": {"m": [[0.1]]}, "check_failures": ["x"]}
    bad = [
        {"id": "e3", "inputs": [1, 2], "outputs": {"m": [[0.1]]}},
        {"id": "e4", "inputs": [1, 2, 3], "outputs": {"other": [[0.1]]}},
        {"id": "e5", "inputs": [1, 2, 3], "outputs": {"m": [[0.1, 0.2]]}},
        {"id": "e6", "inputs": [1, "a", 3], "outputs": {"m": [[0.1]]}},
        {"inputs": [1, 2, 3], "outputs": {"m": [[0.1]]}},
    ]
    built = b.events([rec(good, 0), rec(no_time, 1), *(rec(d, 2 + i) for i, d in enumerate(bad))])
    events = [orjson.loads(v) for _k, v, _p, _t in built.results]
    assert [(e["id"], e["row"], e["time"]) for e in events] == [("e1", 1, 5), ("e2", 0, 777)]
    assert [e["check_failures"] for e in events] == [["low"], []]
    assert [p for _k, _v, p, _t in built.results] == [2, 2]
    assert [reason for _r, reason, _d in built.rejected] == [
        "wrong_width",
        MISSING_TENSOR,
        "wrong_width",
        "non_numeric",
        MISSING_ID,
    ]


def test_several_rows_in_one_pair_are_rows_of_one_id() -> None:
    b = _builder()
    body = {
        "inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP32", "data": [1, 2, 3, 4, 5, 6]}]
    }
    req = Record("reqs", 0, 0, b"m", orjson.dumps(body), 0)
    built = b.pairs(
        [(Pending(REQUEST, "m", req, 0), Pending(RESPONSE, "m", _resp("m", 0.2, rows=2), 0))]
    )
    events = [orjson.loads(v) for _k, v, _p, _t in built.results]
    assert [(e["id"], e["row"]) for e in events] == [("m", 0), ("m", 1)]
    assert np.allclose([e["inputs"] for e in events], [[1, 2, 3], [4, 5, 6]])


def test_event_times_outside_the_accepted_range_are_dead_lettered() -> None:
    b = _builder()
    b.time_range = (1000, 2000)
    ok = (
        Pending(REQUEST, "a", _req("a", [1, 2, 3]), 0),
        Pending(RESPONSE, "a", _resp("a", 0.1), 0),
    )
    old = (
        Pending(REQUEST, "b", _req("b", [1, 2, 3], time=5), 0),
        Pending(RESPONSE, "b", _resp("b", 0.1), 0),
    )
    built = b.pairs([ok, old])
    assert [orjson.loads(v)["id"] for _k, v, _p, _t in built.results] == ["a"]
    assert [reason for _r, reason, _d in built.rejected] == ["time_out_of_range"] * 2


def test_a_result_over_the_size_limit_is_dead_lettered_not_produced() -> None:
    b = _builder(max_bytes=300)
    small = (
        Pending(REQUEST, "a", _req("a", [1, 2, 3]), 0),
        Pending(RESPONSE, "a", _resp("a", 0.1), 0),
    )
    big_id = "b" * 400
    big = (
        Pending(REQUEST, big_id, _req(big_id, [1, 2, 3]), 0),
        Pending(RESPONSE, big_id, _resp(big_id, 0.1), 0),
    )
    built = b.pairs([small, big])
    assert [orjson.loads(v)["id"] for _k, v, _p, _t in built.results] == ["a"]
    assert [(r.topic, reason) for r, reason, d in built.rejected] == [
        ("reqs", "result_too_large"),
        ("resps", "result_too_large"),
    ]
    assert "options.max_message_bytes" in built.rejected[0][2]
