"""The dead-letter contract: headers, clipping, and truncation to the topic's limit."""

from __future__ import annotations

import pytest

from driftline.kafka.deadletter import (
    MAX_DETAIL_BYTES,
    PRODUCER_MAX_BYTES,
    RECORD_OVERHEAD_BYTES,
    DeadLetter,
    dead_letter,
    read_dead_letter,
    record_size,
)

pytestmark = pytest.mark.unit


def _dl(value: bytes | None, **kw: object) -> DeadLetter:
    args: dict[str, object] = {
        "reason": "malformed_json",
        "detail": "not valid JSON",
        "topic": "driftline.fraud.requests",
        "partition": 1,
        "offset": 99,
        "key": b"r-7",
    }
    args.update(kw)
    return dead_letter(value, **args)  # type: ignore[arg-type]


def test_a_small_copy_is_the_original_with_every_header() -> None:
    dl = dead_letter(
        b'{"tensor": [[1',
        reason="malformed_json",
        detail="not valid JSON",
        topic="driftline.fraud.requests",
        partition=1,
        offset=99,
        key=b"r-7",
        extra_headers=[("traceparent", b"00-abc-01"), ("tracestate", None)],
    )
    assert dl.key == b"r-7" and dl.value == b'{"tensor": [[1'
    assert dl.headers == [
        ("driftline-error", b"malformed_json"),
        ("driftline-detail", b"not valid JSON"),
        ("driftline-source-topic", b"driftline.fraud.requests"),
        ("driftline-source-partition", b"1"),
        ("driftline-source-offset", b"99"),
        ("traceparent", b"00-abc-01"),
    ]
    assert read_dead_letter(dl.headers) == {
        "driftline-error": "malformed_json",
        "driftline-detail": "not valid JSON",
        "driftline-source-topic": "driftline.fraud.requests",
        "driftline-source-partition": "1",
        "driftline-source-offset": "99",
    }


@pytest.mark.parametrize("size", [1_000_100, 1_500_000, PRODUCER_MAX_BYTES])
def test_a_copy_too_large_for_the_producer_keeps_a_prefix_and_says_so(size: int) -> None:
    value = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    dl = dead_letter(
        value,
        reason="too_large",
        detail="big",
        topic="t",
        partition=0,
        offset=5,
        key=b"k",
    )
    assert dl.size <= PRODUCER_MAX_BYTES - RECORD_OVERHEAD_BYTES
    assert value.startswith(dl.value or b"") and len(dl.value or b"") > 900_000
    assert read_dead_letter(dl.headers)["driftline-truncated"] == str(size)
    assert dl.key == b"k"


def test_a_copy_that_fits_exactly_is_not_truncated() -> None:
    small = dead_letter(b"", reason="r", detail="d", topic="t", partition=0, offset=0)
    budget = 4000
    room = budget - RECORD_OVERHEAD_BYTES - small.size
    fits = dead_letter(
        b"v" * room, reason="r", detail="d", topic="t", partition=0, offset=0, max_bytes=budget
    )
    assert fits.value == b"v" * room and "driftline-truncated" not in dict(fits.headers)
    over = dead_letter(
        b"v" * (room + 1),
        reason="r",
        detail="d",
        topic="t",
        partition=0,
        offset=0,
        max_bytes=budget,
    )
    assert over.size <= budget - RECORD_OVERHEAD_BYTES
    assert dict(over.headers)["driftline-truncated"] == str(room + 1).encode()


def test_a_huge_key_is_cut_as_well() -> None:
    dl = _dl(b"v" * 100, key=b"k" * 10_000, max_bytes=3000)
    assert dl.size <= 3000 - RECORD_OVERHEAD_BYTES
    assert dl.key and set(dl.key) == {ord("k")}


def test_detail_is_clipped_on_a_character_boundary() -> None:
    dl = _dl(b"x", detail="é" * 5000)
    detail = dict(dl.headers)["driftline-detail"]
    assert len(detail) <= MAX_DETAIL_BYTES
    assert detail.decode("utf-8").endswith("...")


def test_missing_value_and_position_are_carried() -> None:
    dl = _dl(None, partition=None, offset=None)
    assert dl.value is None
    headers = dict(dl.headers)
    assert headers["driftline-source-partition"] == b"-1"
    assert headers["driftline-source-offset"] == b"-1"


@pytest.mark.parametrize("reason", ["", "two words", "a\r\nb"])
def test_reason_codes_are_short_words(reason: str) -> None:
    with pytest.raises(ValueError, match="reason="):
        _dl(b"x", reason=reason)


def test_record_size_counts_key_value_and_headers() -> None:
    assert record_size(None, None) == 0
    assert record_size(b"ab", b"cde", [("xy", b"z"), ("w", None)]) == 2 + 3 + 3 + 1
