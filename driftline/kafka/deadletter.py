"""The dead-letter contract shared by every consumer (DESIGN §2).

A message a consumer cannot process goes to a dead-letter topic as one record: the original
bytes as its value, its original key, and headers that say why and where it came from:

``driftline-error``
    a short reason code (``malformed_json``, ``time_out_of_range``, ``model_error``, …);
``driftline-detail``
    one line for a person, at most :data:`MAX_DETAIL_BYTES`;
``driftline-source-topic``, ``driftline-source-partition``, ``driftline-source-offset``
    where the original is (or was, before retention removed it);
``driftline-truncated``
    only when the copy did not fit the dead-letter topic: the original value's size in bytes.
    The value is then a prefix of the original.

A dead-letter copy must always fit, or the transaction carrying it fails for a reason that will
not change and the consumer never moves on: :func:`dead_letter` truncates it to the limit given.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

__all__ = [
    "DETAIL",
    "ERROR",
    "MAX_DETAIL_BYTES",
    "PRODUCER_MAX_BYTES",
    "RECORD_OVERHEAD_BYTES",
    "SOURCE_OFFSET",
    "SOURCE_PARTITION",
    "SOURCE_TOPIC",
    "TRUNCATED",
    "DeadLetter",
    "dead_letter",
    "read_dead_letter",
    "record_size",
]

ERROR: Final = "driftline-error"
DETAIL: Final = "driftline-detail"
SOURCE_TOPIC: Final = "driftline-source-topic"
SOURCE_PARTITION: Final = "driftline-source-partition"
SOURCE_OFFSET: Final = "driftline-source-offset"
TRUNCATED: Final = "driftline-truncated"

#: librdkafka's default ``message.max.bytes``: the largest record a producer sends.
PRODUCER_MAX_BYTES: Final = 1_000_000
#: What a record costs beyond its key, value and headers in the producer's size check and in a
#: broker's record batch (batch header, varints, attributes), rounded up generously.
RECORD_OVERHEAD_BYTES: Final = 512
MAX_DETAIL_BYTES: Final = 1000

Header = tuple[str, bytes]


@dataclass(frozen=True)
class DeadLetter:
    """One dead-letter record, ready to produce."""

    key: bytes | None
    value: bytes | None
    headers: list[Header]

    @property
    def size(self) -> int:
        """Bytes of key, value and headers (what the producer's size limit counts)."""
        return record_size(self.key, self.value, self.headers)


def record_size(
    key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes | None]] = ()
) -> int:
    """Key, value and header bytes of a record.

    >>> record_size(b"k", b"value", [("h", b"12")])
    9
    """
    return (
        len(key or b"")
        + len(value or b"")
        + sum(len(k.encode()) + len(v or b"") for k, v in headers)
    )


def _clip(text: str, limit: int) -> bytes:
    raw = text.encode("utf-8", "replace")
    if len(raw) <= limit:
        return raw
    # Cut on a character boundary, so the header stays valid UTF-8.
    return raw[: limit - 3].decode("utf-8", "ignore").encode() + b"..."


def dead_letter(
    value: bytes | None,
    *,
    reason: str,
    detail: str,
    topic: str,
    partition: int | None,
    offset: int | None,
    key: bytes | None = None,
    extra_headers: Iterable[tuple[str, str | bytes | None]] = (),
    max_bytes: int = PRODUCER_MAX_BYTES,
) -> DeadLetter:
    """Build the dead-letter record of one consumed message.

    Parameters
    ----------
    value, key:
        The original message's value and key.
    reason:
        Reason code (letters, digits, ``_`` and ``-``), the ``driftline-error`` header.
    detail:
        What was wrong and what to do, for a person; clipped to :data:`MAX_DETAIL_BYTES`.
    topic, partition, offset:
        Where the original was consumed.
    extra_headers:
        Headers carried over from the original (trace context, for example).
    max_bytes:
        The largest record the dead-letter topic and the producer accept (the smaller of the
        topic's ``max.message.bytes`` and the producer's ``message.max.bytes``). A copy that
        would not fit keeps a prefix of the value (and of the key if need be) and gains a
        ``driftline-truncated`` header with the original size.

    Examples
    --------
    >>> dl = dead_letter(b'{"tensor": oops', reason="malformed_json", detail="not JSON",
    ...                  topic="driftline.fraud.requests", partition=2, offset=41, key=b"r-1")
    >>> dl.value, dict(dl.headers)["driftline-source-offset"]
    (b'{"tensor": oops', b'41')
    >>> big = dead_letter(b"x" * 5000, reason="too_large", detail="5000 bytes", topic="t",
    ...                   partition=0, offset=0, max_bytes=2000)
    >>> big.size <= 2000 - RECORD_OVERHEAD_BYTES, dict(big.headers)["driftline-truncated"]
    (True, b'5000')
    """
    if not reason or not reason.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"reason={reason!r}: use a short code of letters, digits, '_' and '-'")
    headers: list[Header] = [
        (ERROR, reason.encode()),
        (DETAIL, _clip(detail, MAX_DETAIL_BYTES)),
        (SOURCE_TOPIC, topic.encode("utf-8", "replace")),
        (SOURCE_PARTITION, str(partition if partition is not None else -1).encode()),
        (SOURCE_OFFSET, str(offset if offset is not None else -1).encode()),
    ]
    headers += [(k, v.encode() if isinstance(v, str) else v) for k, v in extra_headers if v]
    budget = max_bytes - RECORD_OVERHEAD_BYTES
    if record_size(key, value, headers) <= budget:
        return DeadLetter(key, value, headers)
    original = len(value or b"")
    headers.append((TRUNCATED, str(original).encode()))
    room = budget - record_size(None, None, headers)
    if len(key or b"") > room // 2:
        # A key this large is itself part of the problem: keep a prefix of it too.
        key = (key or b"")[: max(room // 2, 0)]
    room -= len(key or b"")
    return DeadLetter(key, (value or b"")[: max(room, 0)], headers)


def read_dead_letter(headers: Iterable[tuple[str, bytes | str | None]] | None) -> dict[str, str]:
    """The contract's headers of a consumed dead letter, decoded (absent ones left out).

    >>> read_dead_letter([("driftline-error", b"too_large"), ("traceparent", b"00-ab")])
    {'driftline-error': 'too_large'}
    """
    known = (ERROR, DETAIL, SOURCE_TOPIC, SOURCE_PARTITION, SOURCE_OFFSET, TRUNCATED)
    out: dict[str, str] = {}
    for k, v in headers or ():
        if k in known and v is not None:
            out[k] = v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
    return out
