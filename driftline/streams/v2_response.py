"""Result events in the Open Inference Protocol's response form (``options.result_format: v2``).

A pipeline deployed with ``result_format: v2`` writes each result row as a V2
``InferenceResponse``, so that a consumer written for KServe, MLServer or Triton reads it
unchanged::

    {"model_name": "ccfraud", "model_version": "sha256:…", "id": "r-1",
     "parameters": {"pipeline": "fraud", "spec": "sha256:…", "row": 0, "time": 1732170000123,
                    "check_failures": "[\\"no_high_fraud\\"]", "models": "{…}",
                    "shadows": "{\\"fraud_base\\": [[0.0011]]}", "inputs": "[1.07, …]",
                    "elapsed_ns": 132317},
     "outputs": [{"name": "probabilities", "shape": [1, 2], "datatype": "FP32",
                  "data": [0.9, 0.1]}]}

``outputs`` are the champion's tensors for this row (batch dimension 1, ``data`` flat in
row-major order). KServe types a response parameter as a string, number or boolean, so
driftline's structured fields (the failed validations, model versions, shadow outputs and
recorded inputs) travel as JSON text in ``parameters``; scalar fields stay scalars.

:func:`to_response` writes that form from a driftline result event and :func:`from_response`
reads it back into the same event, field for field; every reader of results goes through
:func:`driftline.streams._decode.read_result`, which accepts both forms.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson

__all__ = [
    "ResponseForm",
    "from_response",
    "is_response",
    "to_response",
    "to_responses",
    "v2_datatype",
]

#: V2 datatype of each element type a model declares (numpy names, ``string``).
_DATATYPES: Final[dict[str, str]] = {
    "bool": "BOOL",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "uint8": "UINT8",
    "uint16": "UINT16",
    "uint32": "UINT32",
    "uint64": "UINT64",
    "float16": "FP16",
    "float32": "FP32",
    "float64": "FP64",
    "string": "BYTES",
}

#: Parameters carried as JSON text (KServe allows only strings, numbers and booleans there).
_JSON_PARAMETERS: Final = ("check_failures", "models", "shadows", "inputs")


def v2_datatype(dtype: str) -> str | None:
    """The V2 datatype of a declared element type, or ``None`` when V2 has none for it.

    >>> v2_datatype("float32"), v2_datatype("string"), v2_datatype("seq(map(int64,float))")
    ('FP32', 'BYTES', None)
    """
    return _DATATYPES.get(dtype)


@dataclass(frozen=True)
class ResponseForm:
    """How the champion's outputs appear in a response: its spec name and, per output, its
    name, V2 datatype (``None``: read from the values) and per-row shape (``None``: flat)."""

    model: str
    names: tuple[str, ...]
    datatypes: tuple[str | None, ...]
    shapes: tuple[tuple[int, ...] | None, ...]


def _datatype_of(values: Sequence[Any]) -> str:
    """
    >>> _datatype_of([True]), _datatype_of([1, 2]), _datatype_of(["a"]), _datatype_of([])
    ('BOOL', 'INT64', 'BYTES', 'FP64')
    """
    # A ZipMap's per-class probabilities, or an output whose type the model does not declare.
    kinds = set(map(type, values))
    if not kinds:
        return "FP64"  # an empty row of an undeclared output: numbers are the common case
    if kinds <= {bool}:
        return "BOOL"
    if kinds <= {int}:
        return "INT64"
    if kinds <= {str}:
        return "BYTES"
    return "FP64" if kinds <= {int, float, type(None)} else "BYTES"


def _output(name: str, datatype: str | None, shape: Sequence[int] | None, data: Any) -> Any:
    flat = data if all(not isinstance(v, list) for v in data) else _flatten(data)
    if shape is None or math.prod(shape) != len(flat):
        shape = (len(flat),)
    return {
        "name": name,
        "shape": [1, *shape],
        "datatype": datatype or _datatype_of(flat),
        "data": flat,
    }


def _flatten(data: Any) -> list[Any]:
    """Nested lists in row-major order, without recursion (a hostile response may nest as
    deep as the JSON parser allows, deeper than Python's recursion limit).

    >>> _flatten([[1, [2, 3]], 4, []])
    [1, 2, 3, 4]
    """
    out: list[Any] = []
    stack = [iter(data if isinstance(data, list) else [data])]
    while stack:
        for v in stack[-1]:
            if isinstance(v, list):
                stack.append(iter(v))
                break
            out.append(v)
        else:
            stack.pop()
    return out


def to_response(event: bytes, form: ResponseForm) -> bytes:
    """A driftline result event (JSON) as a V2 inference response (JSON).

    >>> form = ResponseForm("m", ("p",), ("FP32",), ((2,),))
    >>> ev = (b'{"id":"r","row":0,"time":5,"pipeline":"x","spec":"sha256:a","inputs":[1.5],'
    ...       b'"outputs":{"m":[[0.25,0.75]]},"models":{"m":"sha256:b"},'
    ...       b'"check_failures":[],"elapsed_ns":9}')
    >>> doc = orjson.loads(to_response(ev, form))
    >>> doc["model_name"], doc["model_version"], doc["outputs"]
    ('m', 'sha256:b', [{'name': 'p', 'shape': [1, 2], 'datatype': 'FP32', 'data': [0.25, 0.75]}])
    >>> doc["parameters"]["time"], doc["parameters"]["inputs"], doc["parameters"]["shadows"]
    (5, '[1.5]', '{}')
    >>> from_response(doc) == orjson.loads(ev)
    True
    """
    return to_responses([event], form)[0]


def to_responses(events: Sequence[bytes], form: ResponseForm) -> list[bytes]:
    """:func:`to_response` of a batch's events; names, types and shapes resolved once."""
    out: list[bytes] = []
    loads, dumps = orjson.loads, orjson.dumps
    model = form.model
    columns: tuple[list[str], list[str | None], list[tuple[int, ...] | None]] | None = None
    for event in events:
        doc = loads(event)
        outputs = doc["outputs"]
        champion = outputs[model]
        if columns is None or len(columns[0]) != len(champion):
            columns = _columns(form, len(champion))
        names, datatypes, shapes = columns
        models = doc["models"]
        parameters: dict[str, Any] = {
            "pipeline": doc["pipeline"],
            "spec": doc["spec"],
            "row": doc["row"],
            "time": doc["time"],
            "check_failures": dumps(doc["check_failures"]).decode(),
            "models": dumps(models).decode(),
            "shadows": dumps({m: v for m, v in outputs.items() if m != model}).decode(),
        }
        if "inputs" in doc:
            parameters["inputs"] = dumps(doc["inputs"]).decode()
        parameters["elapsed_ns"] = doc["elapsed_ns"]
        response = {
            "model_name": model,
            "model_version": models.get(model, ""),
            "id": doc["id"],
            "parameters": parameters,
            "outputs": [
                _output(n, t, s, data)
                for n, t, s, data in zip(names, datatypes, shapes, champion, strict=True)
            ],
        }
        out.append(dumps(response))
    return out


def _columns(
    form: ResponseForm, count: int
) -> tuple[list[str], list[str | None], list[tuple[int, ...] | None]]:
    """Name, datatype and per-row shape of each of ``count`` champion outputs; outputs the
    form does not describe are ``output_<i>``, typed from their values."""
    names = [*form.names[:count], *(f"output_{i}" for i in range(len(form.names), count))]
    datatypes = [*form.datatypes[:count], *([None] * (count - len(form.datatypes)))]
    shapes = [*form.shapes[:count], *([None] * (count - len(form.shapes)))]
    return names, datatypes, shapes


def is_response(doc: Any) -> bool:
    """Whether a decoded result is in the V2 response form (not driftline's own event).

    >>> is_response({"model_name": "m", "outputs": [], "parameters": {"time": 1}})
    True
    >>> is_response({"id": "r", "time": 1, "outputs": {"m": [[1.0]]}})
    False
    """
    return (
        type(doc) is dict
        and "model_name" in doc
        and type(doc.get("outputs")) is list
        and type(doc.get("parameters")) is dict
    )


def from_response(doc: dict[str, Any]) -> dict[str, Any]:
    """The driftline result event a V2 response written by :func:`to_response` carries.

    Raises ``ValueError`` (naming the field) when a field the event needs is missing or is
    not what :func:`to_response` writes.
    """
    params = doc["parameters"]
    event: dict[str, Any] = {}
    try:
        event["id"] = doc["id"]
        for key in ("row", "time", "pipeline", "spec"):
            event[key] = params[key]
        structured = {k: orjson.loads(params[k]) for k in _JSON_PARAMETERS if k in params}
        if "inputs" in structured:
            event["inputs"] = structured["inputs"]
        model = doc["model_name"]
        if not isinstance(model, str):
            raise TypeError(f"model_name must be the champion's name (text), got {model!r}")
        champion = [_flatten(o["data"]) for o in doc["outputs"]]
        event["outputs"] = {model: champion, **structured.get("shadows", {})}
        event["models"] = structured.get("models", {})
        event["check_failures"] = structured.get("check_failures", [])
        event["elapsed_ns"] = params.get("elapsed_ns", 0)
    except KeyError as exc:
        raise ValueError(
            f"V2 response lacks {exc}: a driftline result in V2 form carries id, outputs and "
            "parameters row, time, pipeline and spec"
        ) from None
    except (TypeError, orjson.JSONDecodeError) as exc:
        raise ValueError(f"V2 response has a malformed field: {exc}") from None
    return event
