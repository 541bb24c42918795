"""Decoding result events for the monitor: only the fields it reads, a whole batch at once."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Annotated, Any

import msgspec
import numpy as np
import orjson

from driftline.streams.v2_response import from_response, is_response

__all__ = ["Doc", "build_tensors", "decode_results", "read_result"]


# Event times are int64 milliseconds; msgspec checks the range (and rejects bools and floats).
_Time = Annotated[int, msgspec.Meta(ge=-(1 << 63), le=(1 << 63) - 1)]


class _Result(msgspec.Struct):
    """A result event as the monitor reads it: the input vector is skipped, not built."""

    time: _Time
    outputs: dict[str, Any]


class _ResultWithInputs(msgspec.Struct):
    time: _Time
    outputs: dict[str, Any]
    inputs: Any


class _KeyedResult(msgspec.Struct):
    """With ``id`` and ``row``: what a raw-value sample is keyed by."""

    time: _Time
    outputs: dict[str, Any]
    id: Any = None
    row: Any = 0


class _KeyedResultWithInputs(msgspec.Struct):
    time: _Time
    outputs: dict[str, Any]
    inputs: Any
    id: Any = None
    row: Any = 0


Doc = _Result | _ResultWithInputs | _KeyedResult | _KeyedResultWithInputs

_DECODERS: dict[tuple[bool, bool], msgspec.json.Decoder[Any]] = {
    (False, False): msgspec.json.Decoder(_Result),
    (True, False): msgspec.json.Decoder(_ResultWithInputs),
    (False, True): msgspec.json.Decoder(_KeyedResult),
    (True, True): msgspec.json.Decoder(_KeyedResultWithInputs),
}


def decode_results(
    values: list[bytes], with_inputs: bool = True, with_ids: bool = False
) -> tuple[list[Doc | None], np.ndarray, list[str]]:
    """Decode result events (``.time``, ``.outputs``[, ``.inputs``]); bad ones are ``None``.

    Only the fields the monitor reads are materialized: with ``with_inputs=False`` the input
    vector (most of an event's bytes) is skipped, not built; ``with_ids`` adds ``id`` and
    ``row`` (for raw-value samples). ``time`` must be an int64 integer (not a bool or float)
    and ``outputs`` an object, as the events contract says.
    """
    decoder = _DECODERS[(with_inputs, with_ids)]
    n = len(values)
    if n and values[0].startswith(_RESPONSE_START):
        return _decode_responses(values, decoder)
    # Fast path: the batch as one newline-delimited document, decoded in one call. It applies
    # only when no value holds a newline (so each line is exactly one value) and every line
    # is a valid event; otherwise each value is decoded alone to find the bad ones.
    joined = b"\n".join(values)
    if n and joined.count(b"\n") == n - 1:
        try:
            docs: list[Doc | None] = list(decoder.decode_lines(joined))
        except msgspec.DecodeError:
            pass
        else:
            if len(docs) == n:
                return docs, np.ones(n, dtype=bool), [""] * n
    docs = []
    ok = np.ones(n, dtype=bool)
    reasons = [""] * n
    for i, v in enumerate(values):
        try:
            docs.append(decoder.decode(v))
        except msgspec.DecodeError:  # also a ValidationError: wrong types, missing fields
            doc = _from_response(v, decoder)
            if doc is None:
                ok[i] = False
                reasons[i] = "malformed-result"
            docs.append(doc)
    return docs, ok, reasons


#: How the worker starts a result in V2 response form (``options.result_format: v2``).
_RESPONSE_START = b'{"model_name":'


def _from_response(value: bytes, decoder: msgspec.json.Decoder[Any]) -> Doc | None:
    """A result in V2 response form as the decoder's struct, or ``None`` if it is not one."""
    try:
        doc = orjson.loads(value)
        if not is_response(doc):
            return None
        result: Doc = msgspec.convert(from_response(doc), decoder.type)
    except (orjson.JSONDecodeError, ValueError, msgspec.ValidationError):
        return None
    return result


def _decode_responses(
    values: list[bytes], decoder: msgspec.json.Decoder[Any]
) -> tuple[list[Doc | None], np.ndarray, list[str]]:
    docs = [_from_response(v, decoder) for v in values]
    ok = np.array([d is not None for d in docs], dtype=bool)
    if not ok.all():
        # Not all of them are responses: driftline's own events decode the usual way.
        for i, v in enumerate(values):
            if docs[i] is None:
                try:
                    docs[i] = decoder.decode(v)
                    ok[i] = True
                except msgspec.DecodeError:
                    pass
    return docs, ok, ["" if k else "malformed-result" for k in ok.tolist()]


def read_result(value: bytes | None) -> Any:
    """One result event as driftline's own form, whichever form it was written in.

    Raises ``orjson.JSONDecodeError`` when the value is not JSON, and ``ValueError`` when it
    is a V2 response without driftline's fields.

    >>> read_result(b'{"id": "r", "row": 0, "time": 1, "outputs": {"m": [[0.5]]}}')["outputs"]
    {'m': [[0.5]]}
    >>> read_result(b'{"model_name": "m", "id": "r", "outputs": [{"name": "y", "shape": [1, 1],'
    ...     b' "datatype": "FP32", "data": [0.5]}], "parameters": {"row": 0, "time": 1,'
    ...     b' "pipeline": "p", "spec": "s"}}')["outputs"]
    {'m': [[0.5]]}
    """
    doc = orjson.loads(value or b"")
    return from_response(doc) if is_response(doc) else doc


def build_tensors(
    docs: Sequence[Doc], needed: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], list[np.ndarray]]:
    """Evaluator input for decoded result events: ``{(model, kind): [2-D array per tensor]}``.

    Every model sees the row's input vector as its ``inputs[0]``. Raises ``ValueError``,
    ``KeyError``, ``TypeError``, ``IndexError`` or ``AttributeError`` when rows do not share
    one shape.
    """
    out: dict[tuple[str, str], list[np.ndarray]] = {}
    n = len(docs)
    for model, kind in needed:
        if kind == "inputs":
            rows = [d.inputs for d in docs]  # type: ignore[union-attr]
            out[(model, kind)] = [np.array(rows, dtype=np.float64).reshape(n, -1)]
        else:
            tensors = [d.outputs[model] for d in docs]
            out[(model, kind)] = [
                np.array([t[i] for t in tensors], dtype=np.float64).reshape(n, -1)
                for i in range(len(tensors[0]))
            ]
    return out
