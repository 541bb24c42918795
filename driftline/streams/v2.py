"""Requests as tensors: named inputs, explicit shapes and the Open Inference Protocol (V2).

The fast path of :mod:`driftline.streams.codec` turns flat rows for a one-input, fixed-width
model into one float matrix. Everything else a producer may send lands here and becomes, for
every accepted message, one numpy array per model input (batch dimension first):

- ``{"tensor": X}`` or ``{"tensor": X, "shape": S}``: X nested to the model's rank, or flat
  (row-major) with the full shape S, for a model with one input;
- ``{"inputs": {"age": A, "city": C}}``: by input name, each value nested (one value per row
  is enough for an input of shape ``[batch, 1]``) or ``{"shape": S, "data": D}``;
- the Open Inference Protocol request ``{"id", "parameters", "inputs": [{"name", "shape",
  "datatype", "data"}]}`` with datatypes BOOL, INT8/16/32/64, UINT8, FP16/32/64 and BYTES
  (strings); ``data`` nested or flat, or for a numeric datatype a base64 string of the
  tensor's raw little-endian bytes in row-major order (the large-tensor form).

Every value is checked against the model's declared input: name, rank, the fixed dimensions,
and the element type (numbers for numeric inputs, integers for integer inputs, strings for
string inputs). A message that does not fit is rejected with a reason code and a detail naming
the input, never stopping the rest of the batch.
"""

from __future__ import annotations

import base64
import binascii
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import orjson

from driftline.streams.codec import (
    MISSING_TENSOR,
    NON_FINITE,
    NON_NUMERIC,
    TOO_LARGE,
    WRONG_WIDTH,
    Rejection,
    _loads,
    _quote,
    _Reject,
)

__all__ = ["V2_DATATYPES", "FeedBatch", "InputSpec", "decode_feeds", "needs_feeds"]

#: Open Inference Protocol datatypes accepted, with the numpy type of their raw bytes.
V2_DATATYPES: Final[dict[str, str]] = {
    "BOOL": "bool",
    "INT8": "int8",
    "INT16": "int16",
    "INT32": "int32",
    "INT64": "int64",
    "UINT8": "uint8",
    "UINT16": "uint16",
    "UINT32": "uint32",
    "UINT64": "uint64",
    "FP16": "float16",
    "FP32": "float32",
    "FP64": "float64",
    "BYTES": "string",
}

_MARKERS: Final = (b'"shape"', b'"datatype"')


@dataclass(frozen=True)
class InputSpec:
    """One model input as the worker feeds it: name, element type, declared shape.

    ``dtype`` is a numpy type name (``float32``, ``int64``, ``bool``...) or ``string``;
    ``shape`` has ``None`` for every free dimension, the batch dimension first.
    """

    name: str
    dtype: str
    shape: tuple[int | None, ...]

    @property
    def batch_one(self) -> bool:
        """Whether the model takes exactly one row per call."""
        return bool(self.shape) and self.shape[0] == 1


@dataclass
class FeedBatch:
    """The accepted messages of a micro-batch as model feeds, and what happened to the rest.

    ``feeds[k]`` holds one array per input name for the k-th accepted message, whose batch
    index is ``accepted[k]``, with ``counts[k]`` rows, id ``ids[k]`` and time ``times[k]``.
    """

    feeds: list[dict[str, np.ndarray]] = field(default_factory=list)
    accepted: list[int] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    times: list[int] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)


def needs_feeds(values: Sequence[bytes | None]) -> bool:
    """Whether any message may use a form only :func:`decode_feeds` reads (a shape or a
    datatype); the others go through the codec's fast path. A false positive only costs
    time: the feed path reads plain rows too.

    >>> needs_feeds([b'{"tensor": [[1]]}']), needs_feeds([b'{"inputs": [{"shape": [1]}]}'])
    (False, True)
    """
    # One join and a one-byte search (a memchr) over the batch: both markers hold a "p",
    # which plain requests (keys id/time/tensor, numbers) lack; a word search or a loop over
    # the messages would cost several percent of a plain request's serving time.
    joined = b"\n".join([v for v in values if v is not None])
    return b"p" in joined and any(m in joined for m in _MARKERS)


def _shape_of(value: Any, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(type(d) is int and 0 <= d < 2**31 for d in value):
        raise _Reject(WRONG_WIDTH, f"{where}: shape must be a list of non-negative integers")
    return tuple(value)


def _numeric(raw: Any, spec: InputSpec, where: str, allow_nan: bool) -> np.ndarray:
    try:
        arr = np.array(raw)
    except (ValueError, OverflowError):
        raise _Reject(
            WRONG_WIDTH, f"{where}: a nested list whose rows have different lengths"
        ) from None
    kind = arr.dtype.kind
    if kind in "USO":
        if kind == "O":
            # null means a missing value (NaN); anything else here is ragged or not a number
            try:
                arr = np.array(raw, dtype=np.float64)
            except (ValueError, TypeError, OverflowError):
                raise _Reject(
                    NON_NUMERIC,
                    f"{where}: holds values that are not numbers, or rows of different "
                    "lengths (one list per dimension of the declared shape)",
                ) from None
        else:
            first = arr.flat[0] if arr.size else ""
            raise _Reject(
                NON_NUMERIC,
                f"{where} = {_quote(first)}: input {spec.name!r} takes {spec.dtype} numbers",
            )
    if kind == "b" and spec.dtype != "bool":
        raise _Reject(NON_NUMERIC, f"{where}: true/false sent for {spec.dtype} input {spec.name!r}")
    target = np.dtype(spec.dtype)
    if target.kind in "iub":
        if arr.dtype.kind == "f" and (not np.isfinite(arr).all() or (arr != np.round(arr)).any()):
            raise _Reject(
                NON_NUMERIC,
                f"{where}: input {spec.name!r} takes {spec.dtype} values; send integers",
            )
        if target.kind != "b":
            info = np.iinfo(target)
            if arr.size and (arr.min() < info.min or arr.max() > info.max):
                raise _Reject(
                    NON_NUMERIC,
                    f"{where}: a value lies outside the range of {spec.dtype} "
                    f"({info.min}..{info.max})",
                )
        elif arr.dtype.kind != "b" and arr.size and not np.isin(arr, (0, 1)).all():
            raise _Reject(NON_NUMERIC, f"{where}: boolean input {spec.name!r} takes true/false")
    elif not allow_nan and arr.size:
        with np.errstate(over="ignore"):
            finite = np.isfinite(arr.astype(target)).all()
        if not finite:
            raise _Reject(
                NON_FINITE,
                f"{where}: holds NaN, infinite or null values (or values beyond {spec.dtype}), "
                "which this pipeline rejects (options.allow_nan: false)",
            )
    with np.errstate(over="ignore"):
        return arr.astype(target)


def _strings(raw: Any, where: str) -> np.ndarray:
    arr = np.array(raw, dtype=object)

    if arr.size and not all(isinstance(x, str) for x in arr.flat):
        bad = next(x for x in arr.flat if not isinstance(x, str))
        raise _Reject(NON_NUMERIC, f"{where} = {_quote(bad)}: this input takes strings")
    return arr


def _raw_bytes(data: str, datatype: str, where: str) -> np.ndarray:
    try:
        blob = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise _Reject(
            NON_NUMERIC,
            f"{where}: 'data' is a string but not base64; send numbers, or the tensor's raw "
            f"little-endian {datatype} bytes in base64",
        ) from None
    dtype = np.dtype(V2_DATATYPES[datatype]).newbyteorder("<")
    if len(blob) % dtype.itemsize:
        raise _Reject(
            WRONG_WIDTH,
            f"{where}: {len(blob)} bytes is not a whole number of {datatype} values "
            f"({dtype.itemsize} bytes each)",
        )
    return np.frombuffer(blob, dtype=dtype).astype(dtype.newbyteorder("="))


def _to_array(
    data: Any,
    shape: tuple[int, ...] | None,
    spec: InputSpec,
    where: str,
    allow_nan: bool,
    datatype: str | None = None,
) -> np.ndarray:
    if datatype is not None:
        sent = V2_DATATYPES.get(datatype)
        if sent is None:
            raise _Reject(
                NON_NUMERIC,
                f"{where}: datatype {datatype!r} is not one of {', '.join(V2_DATATYPES)}",
            )
        if (sent == "string") != (spec.dtype == "string"):
            raise _Reject(
                NON_NUMERIC,
                f"{where}: datatype {datatype} sent for input {spec.name!r} of type {spec.dtype}",
            )
        if isinstance(data, str) and sent != "string":
            data = _raw_bytes(data, datatype, where)
    if spec.dtype == "string":
        arr = _strings(data, where)
    else:
        arr = _numeric(data, spec, where, allow_nan)
    if shape is not None:
        if math.prod(shape) != arr.size:
            raise _Reject(
                WRONG_WIDTH,
                f"{where}: shape {list(shape)} holds {math.prod(shape)} values, 'data' has "
                f"{arr.size}",
            )
        arr = arr.reshape(shape)
    return _fit(arr, spec, where)


def _fit(arr: np.ndarray, spec: InputSpec, where: str) -> np.ndarray:
    """The array in the model's declared rank; rejects any fixed dimension it contradicts."""
    rank = len(spec.shape)
    fixed = [d for d in spec.shape[1:] if d is not None]
    if arr.ndim == 2 and rank > 2 and len(fixed) == rank - 1 and arr.shape[1] == math.prod(fixed):
        arr = arr.reshape((arr.shape[0], *fixed))  # flat rows, as before shapes were read
    if arr.ndim == rank - 1 and rank >= 2 and spec.shape[-1] == 1:
        arr = arr.reshape((*arr.shape, 1))  # one value per row for a [batch, 1] input
    if arr.ndim != rank or arr.ndim == 0:
        raise _Reject(
            WRONG_WIDTH,
            f"{where}: has shape {list(arr.shape)}, input {spec.name!r} takes shape "
            f"{_show(spec.shape)} (the first dimension counts rows)",
        )
    if arr.shape[0] == 0:
        raise _Reject(MISSING_TENSOR, f"{where}: holds no rows")
    for axis, (got, want) in enumerate(zip(arr.shape, spec.shape, strict=True)):
        if axis and want is not None and got != want:
            raise _Reject(
                WRONG_WIDTH,
                f"{where}: has shape {list(arr.shape)}, input {spec.name!r} takes shape "
                f"{_show(spec.shape)} (dimension {axis} must be {want})",
            )
    return arr


def _show(shape: tuple[int | None, ...]) -> str:
    return "[" + ", ".join("N" if d is None else str(d) for d in shape) + "]"


def _feeds_of(doc: Any, inputs: Sequence[InputSpec], allow_nan: bool) -> dict[str, np.ndarray]:
    if not isinstance(doc, dict):
        raise _Reject(
            MISSING_TENSOR,
            f"request must be a JSON object with 'tensor' or 'inputs', got {type(doc).__name__}",
        )
    by_name = {s.name: s for s in inputs}
    names = ", ".join(by_name)
    feeds: dict[str, np.ndarray] = {}
    if "tensor" in doc:
        if len(inputs) != 1:
            raise _Reject(
                MISSING_TENSOR,
                f"the model has {len(inputs)} inputs ({names}): send them by name in 'inputs'",
            )
        shape = _shape_of(doc["shape"], "shape") if "shape" in doc else None
        feeds[inputs[0].name] = _to_array(doc["tensor"], shape, inputs[0], "tensor", allow_nan)
    elif isinstance(doc.get("inputs"), list):
        for i, item in enumerate(doc["inputs"]):
            where = f"inputs[{i}]"
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise _Reject(MISSING_TENSOR, f"{where} must be an object with a 'name'")
            for key in ("shape", "datatype", "data"):
                if key not in item:
                    raise _Reject(MISSING_TENSOR, f"{where} ({item['name']!r}) has no {key!r}")
            spec = by_name.get(item["name"])
            if spec is None:
                raise _Reject(
                    MISSING_TENSOR,
                    f"{where}: the model has no input {item['name']!r}; its inputs: {names}",
                )
            where = f"inputs[{i}] ({spec.name!r})"
            shape = _shape_of(item["shape"], f"{where}.shape")
            feeds[spec.name] = _to_array(
                item["data"], shape, spec, where, allow_nan, str(item["datatype"])
            )
    elif isinstance(doc.get("inputs"), dict):
        for name, value in doc["inputs"].items():
            spec = by_name.get(name)
            if spec is None:
                raise _Reject(
                    MISSING_TENSOR,
                    f"inputs: the model has no input {name!r}; its inputs: {names}",
                )
            where = f"inputs[{name!r}]"
            if isinstance(value, dict):
                if "data" not in value:
                    raise _Reject(MISSING_TENSOR, f"{where} is an object without 'data'")
                shape = _shape_of(value["shape"], f"{where}.shape") if "shape" in value else None
                feeds[name] = _to_array(value["data"], shape, spec, where, allow_nan)
            else:
                feeds[name] = _to_array(value, None, spec, where, allow_nan)
    else:
        raise _Reject(
            MISSING_TENSOR,
            "request has no 'tensor' and no 'inputs' (by name, or a V2 list of "
            "{name, shape, datatype, data})",
        )
    missing = [n for n in by_name if n not in feeds]
    if missing:
        raise _Reject(
            MISSING_TENSOR,
            f"'inputs' lacks {', '.join(map(repr, missing))}; the model expects {names}",
        )
    rows = {a.shape[0] for a in feeds.values()}
    if len(rows) > 1:
        raise _Reject(WRONG_WIDTH, f"inputs have different numbers of rows {sorted(rows)}")
    return feeds


def decode_feeds(
    values: Sequence[bytes | None],
    *,
    inputs: Sequence[InputSpec],
    default_ids: Sequence[str],
    default_times: Sequence[int],
    allow_nan: bool = True,
    max_bytes: int | None = None,
    time_range: tuple[int, int] | None = None,
) -> FeedBatch:
    """Decode one pipeline's micro-batch into per-message model feeds.

    Parameters are those of :func:`driftline.streams.codec.decode_requests`, with the
    model's ``inputs`` in place of a width.

    Examples
    --------
    >>> spec = InputSpec("x", "float32", (None, 2, 2))
    >>> batch = decode_feeds(
    ...     [b'{"tensor": [1, 2, 3, 4], "shape": [1, 2, 2]}',
    ...      b'{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1]}]}'],
    ...     inputs=[spec], default_ids=["a", "b"], default_times=[1, 2])
    >>> batch.feeds[0]["x"].tolist(), batch.counts
    ([[[1.0, 2.0], [3.0, 4.0]]], [1])
    >>> batch.rejected[0].reason
    'wrong_width'
    """
    from driftline.streams.codec import TIME_OUT_OF_RANGE, _when

    out = FeedBatch()
    limit = max_bytes if max_bytes is not None else sys.maxsize
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
                doc = orjson.loads(value)
            except orjson.JSONDecodeError:
                doc = _loads(value)
            feeds = _feeds_of(doc, inputs, allow_nan)
            rid = doc.get("id")
            rid = rid if type(rid) is str and rid else (str(rid) if type(rid) is int else None)
            t = doc.get("time")
            if type(t) is not int:
                t = int(t) if type(t) is float and math.isfinite(t) else int(default_times[i])
            if time_range is not None and not time_range[0] <= t <= time_range[1]:
                lo, hi = time_range
                raise _Reject(
                    TIME_OUT_OF_RANGE,
                    f"event time {t} ({_when(t)}) is outside the accepted range {_when(lo)} .. "
                    f"{_when(hi)}; send 'time' in epoch milliseconds, or widen "
                    "DRIFTLINE_WORKER_MAX_EVENT_AGE_MS / DRIFTLINE_WORKER_MAX_EVENT_SKEW_MS",
                )
        except _Reject as rej:
            out.rejected.append(Rejection(i, rej.reason, rej.detail[:500]))
            continue
        except (ValueError, TypeError, OverflowError, MemoryError) as exc:
            # numpy's own refusal of some odd value: this message's, never the batch's.
            detail = f"the tensor cannot be read: {type(exc).__name__}: {exc}"[:500]
            out.rejected.append(Rejection(i, NON_NUMERIC, detail))
            continue
        out.feeds.append(feeds)
        out.accepted.append(i)
        out.counts.append(int(next(iter(feeds.values())).shape[0]))
        out.ids.append(rid if rid is not None else default_ids[i])
        out.times.append(t)
    return out
