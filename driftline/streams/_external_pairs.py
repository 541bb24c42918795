"""The pure part of serving a pipeline without models: pairing, and result events.

Another serving system makes the predictions; driftline only sees them on Kafka. With
``source.format: v2-pairs`` an Open Inference Protocol request and its response travel on two
topics and are paired by id; with ``driftline`` each message already is a result event. Either
way each prediction becomes driftline result events (one per row) that validations, the
monitor, replay and performance read as if a driftline worker had served them.

No Kafka here: :class:`Pairing` keeps the messages still waiting for their other half, and
reports which of them changed since the state was last saved (the Kafka shell,
:mod:`driftline.streams._worker_external`, writes those changes to the pipeline's pairing
changelog in the transaction that commits the batch); :class:`ResultBuilder` turns pairs and
driftline-format events into result events or a reason to dead-letter them.

The id of a message is its Kafka key when it has one, else its body's ``id``. MLServer's
Kafka server works that way: the key takes precedence over the body's ``id``, and the
response carries it as its key and as its ``id``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import orjson

from driftline.streams.codec import (
    MALFORMED_JSON,
    MISSING_TENSOR,
    MODEL_ERROR,
    NON_NUMERIC,
    RESULT_TOO_LARGE,
    TIME_OUT_OF_RANGE,
    WRONG_WIDTH,
    _loads,
    _Reject,
)
from driftline.streams.v2 import InputSpec, _feeds_of
from driftline.streams.v2_response import ResponseForm, to_responses

__all__ = [
    "CLOUDEVENTS",
    "DUPLICATE_ID",
    "MISSING_ID",
    "PAIR_MISMATCH",
    "REQUEST",
    "RESPONSE",
    "UNKNOWN_SIDE",
    "UNPAIRED",
    "Built",
    "Pairing",
    "Pending",
    "Record",
    "ResultBuilder",
    "cloudevent_side",
    "message_id",
]

#: Dead-letter reasons of external pipelines (besides the request codec's own).
MISSING_ID: Final = "missing_id"
DUPLICATE_ID: Final = "duplicate_id"
UNPAIRED: Final = "unpaired"
PAIR_MISMATCH: Final = "pair_mismatch"

UNKNOWN_SIDE: Final = "unknown_side"

REQUEST: Final = "request"
RESPONSE: Final = "response"
#: The side of a topic carrying both requests and responses, told apart per message by the
#: CloudEvents type header (KServe's payload logger through a Knative Kafka sink).
CLOUDEVENTS: Final = "cloudevents"


@dataclass(frozen=True)
class Record:
    """One consumed message: where it was, and what it held."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int
    #: Kafka headers; read for CloudEvents' ``ce_id`` and ``ce_type`` (a payload logger's).
    headers: tuple[tuple[str, bytes | None], ...] = ()


@dataclass(frozen=True)
class Pending:
    """A message waiting for its other half since ``seen_ms`` (wall clock, epoch ms)."""

    side: str
    id: str
    record: Record
    seen_ms: int

    def to_record(self) -> tuple[bytes, list[tuple[str, bytes]]]:
        """The changelog record (value, headers): the original bytes as they were, and where
        they came from, so the record is hardly larger than the message it saves.

        The value is never ``None`` (a tombstone): a message without a value is refused
        before it can wait.
        """
        r = self.record
        meta = orjson.dumps(
            {
                "side": self.side,
                "seen_ms": self.seen_ms,
                "topic": r.topic,
                "partition": r.partition,
                "offset": r.offset,
                "timestamp": r.timestamp,
            }
        )
        headers = [("driftline-pairing", meta)]
        if r.key is not None:
            headers.append(("driftline-key", r.key))
        return r.value or b"", headers

    @classmethod
    def from_record(
        cls, key: bytes, value: bytes, headers: Sequence[tuple[str, bytes | None]]
    ) -> Pending:
        """Inverse of :meth:`to_record` (``key`` is the id).

        >>> p = Pending(REQUEST, "r-1", Record("t", 0, 7, b"r-1", b'{"x": 1}', 5), 9)
        >>> Pending.from_record(b"r-1", *p.to_record()) == p
        True
        """
        meta_raw = dict(headers)
        d = orjson.loads(meta_raw["driftline-pairing"] or b"{}")
        record = Record(
            d["topic"],
            d["partition"],
            d["offset"],
            meta_raw.get("driftline-key"),
            value,
            d["timestamp"],
        )
        return cls(d["side"], key.decode("utf-8", "replace"), record, d["seen_ms"])


def _header(record: Record, *names: str) -> str | None:
    for k, v in record.headers:
        if k.lower() in names and v:
            return v.decode("utf-8", "replace")
    return None


def cloudevent_side(record: Record) -> str:
    """Whether a message of a shared topic is a request or a response, from its CloudEvents
    type (``ce_type``, as a Knative Kafka sink writes KServe's payload logger's
    ``org.kubeflow.serving.inference.request`` / ``...response``).

    Raises ``_Reject`` (``unknown_side``) when the header is missing or names neither.

    >>> ce = lambda t: Record("t", 0, 0, None, b"{}", 0, (("ce_type", t),))
    >>> cloudevent_side(ce(b"org.kubeflow.serving.inference.response"))
    'response'
    >>> cloudevent_side(ce(b"org.kubeflow.serving.inference.request"))
    'request'
    """
    kind = _header(record, "ce_type", "ce-type")
    if kind is not None:
        last = kind.rsplit(".", 1)[-1].lower()
        if last in (REQUEST, RESPONSE):
            return last
    raise _Reject(
        UNKNOWN_SIDE,
        f"source.requests and source.topic are one topic, so each message's CloudEvents type "
        f"header (ce_type) must end in .request or .response; this one has {kind!r}",
    )


def message_id(record: Record) -> str:
    """The pairing id of a message: its key, else its CloudEvents id (header ``ce_id``, which
    a payload logger gives a request and its response alike), else its body's ``id``.

    Raises ``_Reject`` when the body is not a JSON object (``malformed_json``,
    ``missing_tensor``) or there is no id (``missing_id``).

    >>> message_id(Record("t", 0, 0, b"k-1", b'{"id": "b"}', 0))
    'k-1'
    >>> message_id(Record("t", 0, 0, None, b'{"id": "b-2"}', 0))
    'b-2'
    >>> message_id(Record("t", 0, 0, None, b'{"id": "b"}', 0, (("ce_id", b"ce-3"),)))
    'ce-3'
    """
    # Read now, so that a malformed message is dead-lettered at once, not after it waited.
    doc = _parse(record.value)
    if not isinstance(doc, dict):
        raise _Reject(MISSING_TENSOR, f"expected a JSON object, got {type(doc).__name__}")
    if record.key:
        return record.key.decode("utf-8", "replace")
    ce_id = _header(record, "ce_id", "ce-id")
    if ce_id:
        return ce_id
    rid = doc.get("id")
    if isinstance(rid, int) and not isinstance(rid, bool):
        rid = str(rid)
    if not isinstance(rid, str) or not rid:
        raise _Reject(
            MISSING_ID,
            "the message has no Kafka key and no 'id' in its body, so its request and its "
            "response cannot be paired; send each request with a key or an 'id'",
        )
    return rid


def _parse(value: bytes | None) -> Any:
    if value is None:
        raise _Reject(MALFORMED_JSON, "message has no value")
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        return _loads(value)  # raises _Reject with the codec's reason


class Pairing:
    """Requests and responses waiting for their other half, by id.

    :meth:`offer` either stores a message or returns the pair it completes;
    :meth:`expire` removes what waited longer than ``timeout_ms``; :meth:`changes` lists
    what differs from the state last saved (``None``: no longer pending), so that only
    messages still waiting at the end of a batch are written to the changelog.

    >>> p = Pairing(timeout_ms=1000)
    >>> req = Record("req", 0, 0, b"a", b"{}", 10)
    >>> p.offer(REQUEST, "a", req, now_ms=0) is None
    True
    >>> pair = p.offer(RESPONSE, "a", Record("resp", 0, 0, b"a", b"{}", 11), now_ms=5)
    >>> pair[0].record is req, p.changes()
    (True, {})
    """

    def __init__(self, timeout_ms: int):
        self.timeout_ms = timeout_ms
        self.pending: dict[str, Pending] = {}
        self._saved: dict[str, Pending] = {}

    def restore(self, entries: Iterable[Pending], now_ms: int) -> None:
        """Start from saved entries (the changelog read after a restart); each waits a full
        timeout again from ``now_ms``, as the worker was not reading while it was down."""
        saved = list(entries)
        self._saved = {e.id: e for e in saved}
        self.pending = {e.id: dataclasses.replace(e, seen_ms=now_ms) for e in saved}

    def offer(
        self, side: str, rid: str, record: Record, now_ms: int
    ) -> tuple[Pending, Pending] | None:
        """Store ``record``, or return ``(request, response)`` when it completes a pair.

        Raises ``_Reject`` (``duplicate_id``) when a message of the same side and id is
        already waiting: the first one stays, the second is dead-lettered.
        """
        waiting = self.pending.get(rid)
        entry = Pending(side, rid, record, now_ms)
        if waiting is None:
            self.pending[rid] = entry
            return None
        if waiting.side == side:
            raise _Reject(
                DUPLICATE_ID,
                f"another {side} with id {rid!r} is waiting for its "
                f"{'response' if side == REQUEST else 'request'} (at {waiting.record.topic}"
                f"[{waiting.record.partition}]@{waiting.record.offset}); give every request "
                "an id of its own",
            )
        del self.pending[rid]
        return (waiting, entry) if side == RESPONSE else (entry, waiting)

    def expire(self, now_ms: int) -> list[Pending]:
        """Remove and return what has waited ``timeout_ms`` or longer, oldest first.

        Waiting counts from when the worker read the message (or restarted), on the wall
        clock: the two topics' timestamps may come from different clocks (a backfilled
        request, a response stamped when it was served). Call it only when the source is
        read to its end, so that a backlog never expires what its later part would pair.
        """
        cut = now_ms - self.timeout_ms
        old = sorted(
            (e for e in self.pending.values() if e.seen_ms <= cut), key=lambda e: e.seen_ms
        )
        for e in old:
            del self.pending[e.id]
        return old

    def changes(self) -> dict[str, Pending | None]:
        """What to write to the changelog so that it equals :attr:`pending`."""
        out: dict[str, Pending | None] = {
            rid: None for rid in self._saved if rid not in self.pending
        }
        for rid, e in self.pending.items():
            saved = self._saved.get(rid)
            # When it was read need not be saved: a restart starts every wait afresh.
            if saved is None or saved.record is not e.record:
                out[rid] = e
        return out

    def saved(self) -> None:
        """The changes were written: the changelog now equals :attr:`pending`."""
        self._saved = dict(self.pending)

    def oldest_wait_ms(self, now_ms: int) -> int:
        return max((now_ms - e.seen_ms for e in self.pending.values()), default=0)


@dataclass
class Built:
    """Result events ``(key, value, partition hint, event time)`` and rejections ``(record,
    reason, detail)`` of one batch."""

    results: list[tuple[bytes, bytes, int, int]] = field(default_factory=list)
    rejected: list[tuple[Record, str, str]] = field(default_factory=list)
    check_failures: dict[str, int] = field(default_factory=dict)


def _width(spec: InputSpec) -> int:
    """Values per row of a schema tensor (its shape is fixed apart from the batch)."""
    width = 1
    for d in spec.shape[1:]:
        width *= d or 1
    return width


Validation = Callable[[Mapping[tuple[str, str], Sequence[np.ndarray]]], np.ndarray]


class ResultBuilder:
    """Result events of an external pipeline, exactly as the worker writes its own.

    Parameters
    ----------
    pipeline, version:
        The pipeline name and spec version every event carries.
    model:
        The external model's name (``source.model``): the key of ``outputs``.
    inputs, outputs:
        The declared tensors (batch dimension first, ``None``).
    validations:
        Row checks by name, as the worker runs them.
    record_inputs, allow_nan:
        The spec's options.
    max_bytes:
        The largest result event (the spec's ``options.max_message_bytes``); a prediction
        whose event would be larger is dead-lettered as ``result_too_large``, as a
        transaction carrying it could never commit.
    time_range:
        Earliest and latest accepted event time (epoch ms), as the worker's; others are
        dead-lettered as ``time_out_of_range``. Set per batch by the caller.
    """

    def __init__(
        self,
        pipeline: str,
        version: str,
        model: str,
        inputs: Sequence[InputSpec],
        outputs: Sequence[InputSpec],
        validations: Mapping[str, Validation],
        *,
        record_inputs: bool = True,
        allow_nan: bool = True,
        max_bytes: int = 1_000_000,
        response_form: ResponseForm | None = None,
    ):
        self.pipeline = pipeline
        self.version = version
        self.model = model
        self.inputs = tuple(inputs)
        self.outputs = tuple(outputs)
        self.validations = dict(validations)
        self.record_inputs = record_inputs
        self.allow_nan = allow_nan
        self.max_bytes = max_bytes
        #: With it, results are written as V2 responses (``options.result_format: v2``).
        self.response_form = response_form
        self.time_range: tuple[int, int] | None = None
        self._widths = [_width(s) for s in self.outputs]

    # -- decoding ----------------------------------------------------------------------
    def _pair(self, request: Record, response: Record) -> tuple[np.ndarray, list[np.ndarray]]:
        req = _parse(request.value)
        resp = _parse(response.value)
        feeds = _feeds_of(req, self.inputs, self.allow_nan)
        x = feeds[self.inputs[0].name].reshape(feeds[self.inputs[0].name].shape[0], -1)
        if not isinstance(resp, dict) or not isinstance(resp.get("outputs"), list):
            raise _Reject(MISSING_TENSOR, "the response has no 'outputs' list (V2 response)")
        wanted = {s.name for s in self.outputs}
        # Outputs the spec does not declare are not monitored: left out, not refused.
        given = [o for o in resp["outputs"] if isinstance(o, dict) and o.get("name") in wanted]
        try:
            outs = _feeds_of({"inputs": given}, self.outputs, self.allow_nan)
        except _Reject as rej:
            detail = f"response: {rej.detail}".replace("inputs", "outputs")
            raise _Reject(rej.reason, detail) from None
        columns = [outs[s.name].reshape(outs[s.name].shape[0], -1) for s in self.outputs]
        rows = {x.shape[0], *(c.shape[0] for c in columns)}
        if len(rows) != 1:
            raise _Reject(
                PAIR_MISMATCH,
                f"the request has {x.shape[0]} row(s) but the response's outputs have "
                f"{[c.shape[0] for c in columns]}: they are not each other's pair",
            )
        return x, columns

    def _event_doc(self, record: Record) -> tuple[str, int, int, np.ndarray, list[np.ndarray]]:
        doc = _parse(record.value)
        if not isinstance(doc, dict):
            raise _Reject(MISSING_TENSOR, "a result event must be a JSON object")
        rid = doc.get("id")
        if not isinstance(rid, str) or not rid:
            rid = record.key.decode("utf-8", "replace") if record.key else None
        if rid is None:
            raise _Reject(MISSING_ID, "the result event has no 'id' and the message no key")
        row = doc.get("row", 0)
        if type(row) is not int or row < 0:
            raise _Reject(WRONG_WIDTH, f"'row' must be a non-negative integer, got {row!r}")
        outputs = doc.get("outputs")
        mine = outputs.get(self.model) if isinstance(outputs, dict) else None
        if not isinstance(mine, list) or len(mine) != len(self.outputs):
            raise _Reject(
                MISSING_TENSOR,
                f"'outputs' must hold {self.model!r}: a list of {len(self.outputs)} output "
                f"row(s) ({[s.name for s in self.outputs]}), got {outputs!r}"[:400],
            )
        columns = []
        for spec, values, width in zip(self.outputs, mine, self._widths, strict=True):
            columns.append(self._row(values, width, f"outputs.{self.model}[{spec.name!r}]"))
        x = self._row(doc.get("inputs"), None, "inputs")
        want = _width(self.inputs[0])
        if x.shape[1] != want:
            raise _Reject(
                WRONG_WIDTH, f"'inputs' has {x.shape[1]} values, the schema declares {want}"
            )
        t = doc.get("time")
        when = t if type(t) is int else record.timestamp
        return rid, row, when, x, columns

    def _row(self, values: Any, width: int | None, where: str) -> np.ndarray:
        if not isinstance(values, list) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in values
        ):
            raise _Reject(NON_NUMERIC, f"{where} must be a flat list of numbers")
        if width is not None and len(values) != width:
            raise _Reject(WRONG_WIDTH, f"{where} has {len(values)} values, the schema {width}")
        arr = np.asarray(values, dtype=np.float64).reshape(1, -1)
        if not self.allow_nan and not np.isfinite(arr).all():
            raise _Reject(NON_NUMERIC, f"{where} holds NaN or infinity (options.allow_nan)")
        return arr

    def _out_of_range(self, when: int) -> str | None:
        if self.time_range is None or self.time_range[0] <= when <= self.time_range[1]:
            return None
        lo, hi = self.time_range
        return (
            f"event time {when} is outside the accepted range {lo} .. {hi} (epoch ms); the "
            "request's 'time' or Kafka timestamp must be epoch milliseconds, or widen "
            "DRIFTLINE_WORKER_MAX_EVENT_AGE_MS / DRIFTLINE_WORKER_MAX_EVENT_SKEW_MS"
        )

    # -- building ----------------------------------------------------------------------
    def pairs(self, pairs: Sequence[tuple[Pending, Pending]]) -> Built:
        """Result events of completed pairs; a pair that cannot be read is rejected (its
        response and its request, each with the reason)."""
        units: list[Any] = []
        out = Built()
        for request, response in pairs:
            try:
                x, columns = self._pair(request.record, response.record)
            except _Reject as rej:
                out.rejected += [(p.record, rej.reason, rej.detail) for p in (response, request)]
                continue
            except (ValueError, TypeError, OverflowError) as exc:
                detail = f"the tensors cannot be read: {type(exc).__name__}: {exc}"
                out.rejected += [(p.record, NON_NUMERIC, detail) for p in (response, request)]
                continue
            req_doc = _parse(request.record.value)
            t = req_doc.get("time")
            when = t if type(t) is int else request.record.timestamp
            late = self._out_of_range(when)
            if late is not None:
                out.rejected += [(p.record, TIME_OUT_OF_RANGE, late) for p in (response, request)]
                continue
            # The other system's latency, as the two Kafka timestamps tell it.
            elapsed = max(response.record.timestamp - request.record.timestamp, 0) * 1_000_000
            rows = list(range(x.shape[0]))
            units.append(
                (request.id, rows, when, x, columns, [request, response], elapsed, request.record)
            )
        self._emit(units, out)
        return out

    def events(self, records: Sequence[Record]) -> Built:
        """Result events of driftline-format messages, checked against the schema."""
        units: list[Any] = []
        out = Built()
        for record in records:
            try:
                rid, row, when, x, columns = self._event_doc(record)
            except _Reject as rej:
                out.rejected.append((record, rej.reason, rej.detail))
                continue
            except (ValueError, TypeError, OverflowError) as exc:
                detail = f"the event cannot be read: {type(exc).__name__}: {exc}"
                out.rejected.append((record, NON_NUMERIC, detail))
                continue
            late = self._out_of_range(when)
            if late is not None:
                out.rejected.append((record, TIME_OUT_OF_RANGE, late))
                continue
            units.append((rid, [row], when, x, columns, [], 0, record))
        self._emit(units, out)
        return out

    def _emit(self, units: list[Any], out: Built) -> None:
        if not units:
            return
        # float64 so that a float32 value is recorded digit for digit, as the worker does.
        x = np.concatenate([u[3] for u in units], axis=0).astype(np.float64)
        columns = [
            np.concatenate([u[4][i] for u in units], axis=0).astype(np.float64)
            for i in range(len(self.outputs))
        ]
        n = x.shape[0]
        tensors: dict[tuple[str, str], Sequence[np.ndarray]] = {
            (self.model, "inputs"): [x],
            (self.model, "outputs"): columns,
        }
        failed: dict[str, np.ndarray] = {}
        for name, fn in self.validations.items():
            try:
                healthy = np.broadcast_to(np.asarray(fn(tensors)), (n,)).astype(bool)
            except Exception as exc:
                detail = f"validation {name!r} failed: {exc}"
                for u in units:
                    records = [p.record for p in u[5]] or [u[7]]
                    out.rejected += [(r, MODEL_ERROR, detail) for r in records]
                return
            failed[name] = ~healthy
            out.check_failures[name] = out.check_failures.get(name, 0) + int((~healthy).sum())
        r = 0
        for rid, rows, when, _x, _c, pair, elapsed, where in units:
            events = []
            for row in rows:
                event: dict[str, Any] = {
                    "id": rid,
                    "row": row,
                    "time": when,
                    "pipeline": self.pipeline,
                    "spec": self.version,
                }
                if self.record_inputs:
                    event["inputs"] = x[r]
                event["outputs"] = {self.model: [c[r] for c in columns]}
                event["models"] = {self.model: "external"}
                event["check_failures"] = [v for v, mask in failed.items() if mask[r]]
                event["elapsed_ns"] = elapsed
                events.append(orjson.dumps(event, option=orjson.OPT_SERIALIZE_NUMPY))
                r += 1
            if self.response_form is not None:
                events = to_responses(events, self.response_form)
            largest = max(len(e) for e in events) + len(rid.encode())
            if largest > self.max_bytes:
                detail = (
                    f"a result event of {largest} bytes is over options.max_message_bytes "
                    f"({self.max_bytes}); raise it, or set options.record_inputs: false"
                )
                out.rejected += [(p.record, RESULT_TOO_LARGE, detail) for p in pair] or [
                    (where, RESULT_TOO_LARGE, detail)
                ]
                continue
            out.results += [(rid.encode(), e, where.partition, when) for e in events]
