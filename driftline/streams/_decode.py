"""Decoding result events for the monitor: only the fields it reads, a whole batch at once."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Annotated, Any

import msgspec
import numpy as np

from driftline.expressions import ragged

__all__ = ["Doc", "build_tensors", "decode_results", "output_column", "output_signature"]


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
            ok[i] = False
            reasons[i] = "malformed-result"
            docs.append(None)
    return docs, ok, reasons


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
