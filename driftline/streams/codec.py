"""Decode and validate inference requests into one float matrix per micro-batch.

A request (DESIGN §2) is ``{"id": "r-1", "time": 1732170000123, "tensor": [[...], ...]}`` or
``{"inputs": {"amount": [...], ...}}``. :func:`decode_requests` turns the raw Kafka values of a
whole micro-batch into one ``(n_rows, width)`` matrix plus, for every accepted message, its id,
event time and row count; every message that cannot be used is classified with a reason code
and never stops the rest of the batch.

The common case (every message well formed) costs one ``orjson.loads`` per message and one
``numpy.array`` call for the whole batch; messages are examined one by one only when that
batch-wide conversion finds something wrong.
"""

from __future__ import annotations

import json
import math
import reprlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import chain
from typing import Any, Final, cast

import numpy as np
import orjson

__all__ = [
    "REASONS",
    "DecodedBatch",
    "Rejection",
    "decode_requests",
]

MALFORMED_JSON: Final = "malformed_json"
MISSING_TENSOR: Final = "missing_tensor"
NON_NUMERIC: Final = "non_numeric"
WRONG_WIDTH: Final = "wrong_width"
NON_FINITE: Final = "non_finite"
TOO_LARGE: Final = "too_large"
MODEL_ERROR: Final = "model_error"
UNDEPLOYED_PIPELINE: Final = "undeployed_pipeline"
NUMBER_OUT_OF_RANGE: Final = "number_out_of_range"
TOO_DEEP: Final = "too_deep"
TIME_OUT_OF_RANGE: Final = "time_out_of_range"
UNSERIALIZABLE_OUTPUT: Final = "unserializable_output"
RESULT_TOO_LARGE: Final = "result_too_large"
PIPELINE_ERROR: Final = "pipeline_error"
PRODUCE_FAILED: Final = "produce_failed"

#: Every reason code a dead letter can carry in its ``driftline-error`` header.
REASONS: Final = (
    MALFORMED_JSON,
    MISSING_TENSOR,
    NON_NUMERIC,
    WRONG_WIDTH,
    NON_FINITE,
    TOO_LARGE,
    MODEL_ERROR,
    UNDEPLOYED_PIPELINE,
    NUMBER_OUT_OF_RANGE,
    TOO_DEEP,
    TIME_OUT_OF_RANGE,
    UNSERIALIZABLE_OUTPUT,
    RESULT_TOO_LARGE,
    PIPELINE_ERROR,
    PRODUCE_FAILED,
)


def _quoter() -> reprlib.Repr:
    r = reprlib.Repr()
    r.maxlevel, r.maxlist, r.maxstring, r.maxother, r.maxlong = 3, 4, 40, 40, 40
    return r


#: Details quote offending values through this: bounded in length and in nesting depth, so a
#: hostile value cannot make the quote itself expensive or recursive.
_quote = _quoter().repr


@dataclass(frozen=True)
class Rejection:
    """Why message ``index`` of the batch was not used."""

    index: int
    reason: str
    detail: str


@dataclass
class DecodedBatch:
    """The usable rows of a micro-batch and what happened to every message.

    ``rows`` holds the rows of the accepted messages in order (float64, as sent);
    ``accepted[k]`` is the batch index of the k-th accepted message, which contributed
    ``counts[k]`` rows and carries ``ids[k]`` and ``times[k]``.
    """

    rows: np.ndarray
    accepted: list[int] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    times: list[int] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)

    @property
    def num_rows(self) -> int:
        return int(self.rows.shape[0])

    def row_message(self) -> np.ndarray:
        """Position in ``accepted`` of the message each row came from."""
        return np.repeat(np.arange(len(self.counts)), self.counts)

    def row_number(self) -> np.ndarray:
        """Index of each row within its own request (0..N-1)."""
        counts = np.asarray(self.counts, dtype=np.int64)
        if counts.size == 0:
            return np.zeros(0, dtype=np.int64)
        starts = np.repeat(np.cumsum(counts) - counts, counts)
        return np.arange(int(counts.sum()), dtype=np.int64) - starts


class _Reject(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _float_in_range(text: str) -> float:
    x = float(text)
    if math.isinf(x):
        raise _Reject(
            NUMBER_OUT_OF_RANGE,
            f"number {text[:40]} is outside the range of a float (about ±1.8e308)",
        )
    return x


#: Digits beyond which an integer cannot be a float (10**309 > the largest float).
_MAX_INT_DIGITS: Final = 309


def _int_in_range(text: str) -> int:
    if len(text.lstrip("-")) >= _MAX_INT_DIGITS:
        raise _Reject(
            NUMBER_OUT_OF_RANGE,
            f"a {len(text.lstrip('-'))}-digit integer ({text[:20]}...) is outside the range "
            "of a float (about ±1.8e308)",
        )
    return int(text)


def _loads(value: bytes) -> Any:
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        # Python's own json writes NaN/Infinity literals; accept them on this slow path only.
        # Numbers are range-checked as they are parsed (orjson refuses what a float cannot
        # hold; json would turn it into inf or a huge int), and depth is bounded.
        try:
            return json.loads(value, parse_float=_float_in_range, parse_int=_int_in_range)
        except RecursionError:
            raise _Reject(
                TOO_DEEP,
                "JSON nested too deeply; a request is an object with a list of rows",
            ) from None
        except (ValueError, UnicodeDecodeError):
            raise _Reject(MALFORMED_JSON, f"not valid JSON: {exc}") from None


def _is_number(x: Any) -> bool:
    return x is None or (isinstance(x, int | float) and not isinstance(x, bool))


def _tensor_of(doc: Any, input_names: Sequence[str] | None) -> Any:
    """The list of rows a request carries, before numeric checks."""
    if not isinstance(doc, dict):
        raise _Reject(
            MISSING_TENSOR,
            f"request must be a JSON object with a 'tensor' list of rows, got {type(doc).__name__}",
        )
    tensor = doc.get("tensor")
    if tensor is not None:
        return tensor
    named = doc.get("inputs")
    if isinstance(named, dict):
        if not input_names:
            raise _Reject(
                MISSING_TENSOR,
                "named 'inputs' need a model with named inputs; send 'tensor' (a list of rows)",
            )
        missing = [n for n in input_names if n not in named]
        if missing:
            raise _Reject(
                MISSING_TENSOR,
                f"'inputs' lacks {', '.join(map(repr, missing))}; "
                f"the model expects {', '.join(input_names)}",
            )
        if len(input_names) == 1:
            # One model input: its value is the tensor itself, a list of rows.
            return named[input_names[0]]
        columns = [named[n] for n in input_names]
        if not all(isinstance(c, list) for c in columns):
            raise _Reject(NON_NUMERIC, "every named input must be a list with one value per row")
        if len({len(c) for c in columns}) > 1:
            raise _Reject(WRONG_WIDTH, "named inputs have different numbers of rows")
        # A column may hold scalars or one-element lists (an (n, 1) tensor).
        flat = [[v[0] if isinstance(v, list) and len(v) == 1 else v for v in c] for c in columns]
        return [list(r) for r in zip(*flat, strict=True)]
    raise _Reject(MISSING_TENSOR, "request has no 'tensor' (a list of rows) and no 'inputs'")


def _check_one(tensor: Any, width: int | None) -> np.ndarray:
    """Strict per-message conversion, used only when the batch-wide one fails."""
    if not isinstance(tensor, list) or not tensor:
        raise _Reject(MISSING_TENSOR, "'tensor' must be a non-empty list of rows")
    if not all(isinstance(r, list) for r in tensor):
        raise _Reject(
            WRONG_WIDTH,
            f"'tensor' must be a list of rows (lists of {width or 'N'} numbers), "
            "e.g. [[0.1, 0.2]], not a flat list",
        )
    lengths = {len(r) for r in tensor}
    if len(lengths) > 1:
        raise _Reject(WRONG_WIDTH, f"rows have different lengths {sorted(lengths)}")
    got = lengths.pop()
    if width is not None and got != width:
        raise _Reject(WRONG_WIDTH, f"rows have {got} values, the model expects {width}")
    for r, row in enumerate(tensor):
        for c, x in enumerate(row):
            if not _is_number(x):
                raise _Reject(NON_NUMERIC, f"tensor[{r}][{c}] = {_quote(x)} is not a number")
    # null means a missing value: NaN, as driftline itself writes NaN as null.
    try:
        return np.array(tensor, dtype=np.float64)
    except OverflowError:
        raise _Reject(
            NUMBER_OUT_OF_RANGE, "tensor holds an integer outside the range of a float"
        ) from None


def decode_requests(
    values: Sequence[bytes | None],
    *,
    width: int | None,
    default_ids: Sequence[str],
    default_times: Sequence[int],
    input_names: Sequence[str] | None = None,
    allow_nan: bool = True,
    max_bytes: int | None = None,
    time_range: tuple[int, int] | None = None,
) -> DecodedBatch:
    """Decode the request messages of one pipeline's micro-batch.

    Parameters
    ----------
    values:
        Raw Kafka message values.
    width:
        Number of values per row the model expects (``None``: any, but one per batch).
    default_ids, default_times:
        Id and event time (epoch ms) of each message when the request has none, e.g. the
        Kafka key (or ``topic:partition:offset``) and the message timestamp.
    input_names:
        Column names that named ``inputs`` map onto, in the model's order.
    allow_nan:
        Whether NaN and ±inf (and ``null``) values are accepted.
    max_bytes:
        Messages larger than this are rejected as ``too_large`` before parsing.
    time_range:
        Earliest and latest accepted event time (epoch ms, inclusive); a message whose event
        time (its own or its default) lies outside is rejected as ``time_out_of_range``.

    Examples
    --------
    >>> batch = decode_requests(
    ...     [b'{"id": "a", "tensor": [[1, 2], [3, 4]]}', b'{"tensor": [[1]]}', b'oops'],
    ...     width=2, default_ids=["k0", "k1", "k2"], default_times=[10, 11, 12])
    >>> batch.rows.tolist(), batch.ids, batch.counts
    ([[1.0, 2.0], [3.0, 4.0]], ['a'], [2])
    >>> [(r.index, r.reason) for r in batch.rejected]
    [(1, 'wrong_width'), (2, 'malformed_json')]
    """
    if len(default_ids) != len(values) or len(default_times) != len(values):
        raise ValueError(
            f"default_ids ({len(default_ids)}) and default_times ({len(default_times)}) "
            f"need one entry per message ({len(values)})"
        )
    out = DecodedBatch(rows=np.zeros((0, width or 0), dtype=np.float64))
    limit = max_bytes if max_bytes is not None else sys.maxsize
    tensors = _scan_batch(out, values, default_ids, default_times, limit)
    if tensors is None:
        tensors = _scan_each(out, values, default_ids, default_times, limit, input_names)
    if time_range is not None and tensors:
        tensors = _drop_out_of_time(out, tensors, time_range)
    if not tensors:
        return out
    # numpy silently turns JSON booleans into numbers; one search over the whole batch sends
    # any batch that may hold one down the strict path (a false positive only costs time).
    joined = b"\n".join([v for v in values if v is not None])
    # A one-byte search is a memchr, many times faster than a word search; requests with
    # neither "u" nor "l" anywhere (the usual: keys id/tensor/time and numbers) skip it.
    strict = (b"u" in joined and b"true" in joined) or (b"l" in joined and b"false" in joined)
    matrix = None if strict else _batch_matrix(tensors, width)
    if matrix is None:
        matrix = _per_message(out, tensors, width)
    else:
        out.counts = list(map(len, tensors))
    if not allow_nan and matrix.size:
        matrix = _drop_non_finite(out, matrix)
    out.rows = matrix
    if out.rejected:
        out.rejected.sort(key=lambda r: r.index)
    return out


def _scan_batch(
    out: DecodedBatch,
    values: Sequence[bytes | None],
    default_ids: Sequence[str],
    default_times: Sequence[int],
    limit: int,
) -> list[Any] | None:
    """The common case without a Python loop per message: every value is a JSON object
    with a ``tensor``. ``None`` (and ``out`` untouched) when any message needs
    :func:`_scan_each`, which then classifies every message exactly as before."""
    if not values or None in values:
        return None
    present = cast("Sequence[bytes]", values)
    if max(map(len, present)) > limit:
        return None
    try:
        docs = list(map(orjson.loads, present))
    except orjson.JSONDecodeError:
        return None
    if set(map(type, docs)) != {dict}:
        return None
    tensors = [d.get("tensor") for d in docs]
    if None in tensors:
        return None
    rids = [d.get("id") for d in docs]
    if set(map(type, rids)) != {str} or "" in rids:
        rids = [
            r if type(r) is str and r else (str(r) if type(r) is int else default_ids[i])
            for i, r in enumerate(rids)
        ]
    ts = [d.get("time") for d in docs]
    kinds = set(map(type, ts))
    if kinds == {type(None)}:
        ts = list(map(int, default_times))
    elif kinds != {int}:
        ts = [
            t
            if type(t) is int
            else (int(t) if type(t) is float and math.isfinite(t) else int(default_times[i]))
            for i, t in enumerate(ts)
        ]
    out.accepted = list(range(len(values)))
    out.ids = rids
    out.times = ts
    return tensors


def _scan_each(
    out: DecodedBatch,
    values: Sequence[bytes | None],
    default_ids: Sequence[str],
    default_times: Sequence[int],
    limit: int,
    input_names: Sequence[str] | None,
) -> list[Any]:
    """Message by message: parse, find the tensor, classify what is wrong with each."""
    max_bytes = None if limit == sys.maxsize else limit
    tensors: list[Any] = []
    loads, decode_error = orjson.loads, orjson.JSONDecodeError
    accepted, ids, times = out.accepted, out.ids, out.times
    for i, value in enumerate(values):
        try:
            if value is None:
                raise _Reject(MISSING_TENSOR, "message has no value")
            if len(value) > limit:
                raise _Reject(
                    TOO_LARGE,
                    f"message is {len(value)} bytes, over the limit of {max_bytes} "
                    "(raise options.max_message_bytes in the spec or split the request)",
                )
            try:
                doc = loads(value)
            except decode_error:
                doc = _loads(value)
            tensor = doc.get("tensor") if type(doc) is dict else None
            tensors.append(tensor if tensor is not None else _tensor_of(doc, input_names))
        except _Reject as rej:
            out.rejected.append(Rejection(i, rej.reason, rej.detail))
            continue
        accepted.append(i)
        rid = doc.get("id")
        if type(rid) is str and rid:
            ids.append(rid)
        else:
            ids.append(str(rid) if type(rid) is int else default_ids[i])
        t = doc.get("time")
        if type(t) is int:
            times.append(t)
        else:
            times.append(int(t) if type(t) is float and math.isfinite(t) else int(default_times[i]))
    return tensors


def _batch_matrix(tensors: list[Any], width: int | None) -> np.ndarray | None:
    """All tensors as one matrix, or ``None`` when any message needs a closer look."""
    # Exact type test: a list subclass cannot come out of JSON.
    if set(map(type, tensors)) != {list} or not all(tensors):
        return None
    try:
        matrix = np.array(list(chain.from_iterable(tensors)))
    except (ValueError, TypeError, OverflowError):
        return None
    # Strings, objects (null, huge ints) and booleans need the strict per-message path.
    if matrix.ndim != 2 or matrix.dtype.kind not in "iuf":
        return None
    if width is not None and matrix.shape[1] != width:
        return None
    return matrix.astype(np.float64, copy=False)


def _per_message(out: DecodedBatch, tensors: list[Any], width: int | None) -> np.ndarray:
    accepted: list[int] = []
    ids: list[str] = []
    times: list[int] = []
    counts: list[int] = []
    parts: list[np.ndarray] = []
    for k, tensor in enumerate(tensors):
        index = out.accepted[k]
        try:
            m = _check_one(tensor, width)
            if width is None and parts and m.shape[1] != parts[0].shape[1]:
                raise _Reject(
                    WRONG_WIDTH,
                    f"rows have {m.shape[1]} values, others in this batch have {parts[0].shape[1]}",
                )
        except _Reject as rej:
            out.rejected.append(Rejection(index, rej.reason, rej.detail))
            continue
        accepted.append(index)
        ids.append(out.ids[k])
        times.append(out.times[k])
        counts.append(m.shape[0])
        parts.append(m)
    out.accepted, out.ids, out.times, out.counts = accepted, ids, times, counts
    if not parts:
        return np.zeros((0, width or 0), dtype=np.float64)
    return np.concatenate(parts, axis=0)


def _drop_non_finite(out: DecodedBatch, matrix: np.ndarray) -> np.ndarray:
    # The model sees float32: a value beyond its range becomes inf there, so check that.
    bad_rows = ~(np.abs(matrix) <= np.finfo(np.float32).max).all(axis=1)
    if not bad_rows.any():
        return matrix
    msg_of_row = out.row_message()
    bad_msgs = np.unique(msg_of_row[bad_rows])
    keep_msg = np.ones(len(out.counts), dtype=bool)
    keep_msg[bad_msgs] = False
    for k in bad_msgs.tolist():
        out.rejected.append(
            Rejection(
                out.accepted[k],
                NON_FINITE,
                "tensor holds NaN, infinite or null values (or values beyond float32), "
                "which this pipeline rejects (options.allow_nan: false)",
            )
        )
    out.accepted = [a for a, keep in zip(out.accepted, keep_msg.tolist(), strict=True) if keep]
    out.ids = [a for a, keep in zip(out.ids, keep_msg.tolist(), strict=True) if keep]
    out.times = [a for a, keep in zip(out.times, keep_msg.tolist(), strict=True) if keep]
    out.counts = [a for a, keep in zip(out.counts, keep_msg.tolist(), strict=True) if keep]
    return matrix[keep_msg[msg_of_row]]


def _when(t: int) -> str:
    try:
        return datetime.fromtimestamp(t / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return "beyond any calendar date"


def _drop_out_of_time(out: DecodedBatch, tensors: list[Any], bounds: tuple[int, int]) -> list[Any]:
    lo, hi = bounds
    if lo <= min(out.times) and max(out.times) <= hi:
        return tensors
    keep: list[int] = []
    for k, t in enumerate(out.times):
        if lo <= t <= hi:
            keep.append(k)
            continue
        side = "before" if t < lo else "after"
        out.rejected.append(
            Rejection(
                out.accepted[k],
                TIME_OUT_OF_RANGE,
                f"event time {t} ({_when(t)}) is {side} the accepted range "
                f"{_when(lo)} .. {_when(hi)}; send 'time' in epoch milliseconds, or widen "
                "DRIFTLINE_WORKER_MAX_EVENT_AGE_MS / DRIFTLINE_WORKER_MAX_EVENT_SKEW_MS",
            )
        )
    out.accepted = [out.accepted[k] for k in keep]
    out.ids = [out.ids[k] for k in keep]
    out.times = [out.times[k] for k in keep]
    return [tensors[k] for k in keep]
