"""Decoding result events for the monitor: only the fields it reads, a whole batch at once."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated, Any

import msgspec
import numpy as np
import orjson

from driftline.expressions import ragged
from driftline.streams.v2_response import from_response, is_response

__all__ = [
    "Doc",
    "build_tensors",
    "decode_results",
    "input_signature",
    "output_column",
    "output_signature",
    "read_result",
]


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
    docs: Sequence[Doc],
    needed: Iterable[tuple[str, str]],
    names: Mapping[tuple[str, str], Sequence[str]] | None = None,
) -> dict[tuple[str, str], list[np.ndarray]]:
    """Evaluator input for decoded result events: ``{(model, kind): [2-D array per tensor]}``.

    Every model sees the row's recorded inputs: a list (one numeric input) is its
    ``inputs[0]``; an object of inputs by name (a champion with several inputs, or a string
    input) gives one tensor per input, in the order of ``names[(model, "inputs")]`` when it
    names them all, else in the recorded order. Numeric inputs are float64, string inputs
    object arrays. Raises ``ValueError``, ``KeyError``, ``TypeError``, ``IndexError`` or
    ``AttributeError`` when rows do not share one shape.
    """
    out: dict[tuple[str, str], list[np.ndarray]] = {}
    n = len(docs)
    for model, kind in needed:
        if kind == "inputs":
            rows = [d.inputs for d in docs]  # type: ignore[union-attr]
            if n and type(rows[0]) is dict:
                order = _input_order(rows[0], (names or {}).get((model, "inputs")))
                out[(model, kind)] = [
                    _column([r[k] for r in rows], n) if k in rows[0] else np.empty((n, 0))
                    for k in order
                ]
            else:
                out[(model, kind)] = [np.array(rows, dtype=np.float64).reshape(n, -1)]
        else:
            tensors = [d.outputs[model] for d in docs]
            out[(model, kind)] = [
                output_column([t[i] for t in tensors]) for i in range(len(tensors[0]))
            ]
    return out


def output_signature(tensors: Any) -> tuple[str, ...]:
    """What a result's outputs of one model hold, per tensor: ``"number"`` (a list of
    numbers, of any length) or ``"string"``; raises ``TypeError`` for anything else (not a
    list, strings mixed with numbers). Rows of one batch agree on it unless malformed.

    >>> output_signature([[0.5, 1], ["setosa"], []])
    ('number', 'string', 'number')
    """
    if not isinstance(tensors, list):
        raise TypeError("a model's outputs in a result are not a list")
    out: list[str] = []
    for t in tensors:
        if not isinstance(t, list):
            raise TypeError("an output of a result is not a list")
        if all(v is None or isinstance(v, int | float) for v in t):
            out.append("number")
        elif all(isinstance(v, str) for v in t):
            out.append("string")
        else:
            raise TypeError("an output of a result mixes strings with other values")
    return tuple(out)


def output_column(rows: list[Any]) -> np.ndarray:
    """One output tensor of a batch of results: a float64 matrix when every row holds as
    many numbers (the common case, one conversion), strings as a string matrix, and rows of
    varying length as a ragged tensor (:func:`driftline.expressions.ragged`).

    >>> output_column([[1, 2], [3, 4]]).tolist(), output_column([["a"], ["b"]]).tolist()
    ([[1.0, 2.0], [3.0, 4.0]], [['a'], ['b']])
    >>> [r.tolist() for r in output_column([[0.5], []])[:, 0]]
    [[0.5], []]
    """
    n = len(rows)
    try:
        return np.array(rows, dtype=np.float64).reshape(n, -1)
    except (ValueError, TypeError):
        pass
    if not all(isinstance(r, list) for r in rows):
        raise TypeError("an output of a result is not a list")
    if len({len(r) for r in rows}) == 1 and all(isinstance(v, str) for r in rows for v in r):
        return np.array(rows, dtype=object).reshape(n, -1)
    if all(v is None or isinstance(v, int | float) for r in rows for v in r):
        return ragged(rows)
    raise TypeError("the rows of an output mix strings and numbers or differ in length")


def _input_order(first: dict[str, Any], wanted: Sequence[str] | None) -> list[str]:
    """The declared order when the row records inputs it names (``record_inputs: used``
    leaves out the ones nothing reads: they become empty placeholders, so the positions of
    the others hold), else the recorded order.

    >>> _input_order({"age": 1}, ["city", "age"]), _input_order({"b": 1, "a": 2}, None)
    (['city', 'age'], ['b', 'a'])
    """
    if wanted and set(first) <= set(wanted):
        return list(wanted)
    return list(first)


def _column(values: list[Any], n: int) -> np.ndarray:
    """One named input of every row: float64, or objects when it holds strings."""
    try:
        return np.array(values, dtype=np.float64).reshape(n, -1)
    except (ValueError, TypeError):
        column = np.array(values, dtype=object).reshape(n, -1)
        if any(not isinstance(v, str) for v in column.flat):
            raise
        return column


def input_signature(inputs: Any) -> Any:
    """The shape of a row's recorded inputs, for finding rows unlike the rest of a batch:
    a list's shape, or the name and shape of every input of an object."""
    if type(inputs) is dict:
        return tuple((k, np.asarray(v, dtype=object).shape) for k, v in inputs.items())
    return np.asarray(inputs, dtype=np.float64).shape
