"""The pure part of the inference worker: one pipeline's micro-batch in, result events out.

No Kafka here. :func:`process_batch` decodes the raw request values of one pipeline, runs the
champion and every shadow model once on all rows, evaluates every validation vectorized and
serializes one result event per row. The I/O shell (:mod:`driftline.streams.worker`) only
feeds it messages and produces what it returns.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import orjson

from driftline.models.runtime import carried, merge_rows
from driftline.streams.codec import (
    MODEL_ERROR,
    UNSERIALIZABLE_OUTPUT,
    DecodedBatch,
    Rejection,
    decode_requests,
)
from driftline.streams.v2 import FeedBatch, InputSpec, decode_feeds, needs_feeds
from driftline.streams.v2_response import ResponseForm, to_responses

__all__ = [
    "BatchOutcome",
    "ModelRunner",
    "PipelineRuntime",
    "RuntimeModel",
    "Validation",
    "WorkerStats",
    "process_batch",
]

#: A validation: tensors of a micro-batch → one truth value per row (true = healthy).
Validation = Callable[[Mapping[tuple[str, str], Sequence[np.ndarray]]], np.ndarray]


class ModelRunner(Protocol):
    """What the worker needs of a loaded model: float32 rows in, 2-D outputs out."""

    def run(self, x: np.ndarray) -> list[np.ndarray]: ...


@dataclass(frozen=True)
class RuntimeModel:
    """One loaded model of a deployed pipeline."""

    name: str
    sha256: str
    runner: ModelRunner
    shadow: bool = False


@dataclass(frozen=True)
class PipelineRuntime:
    """Everything needed to serve one version of one pipeline.

    ``models[0]`` is the champion; the others are shadows, run on the same rows and recorded.
    ``version`` is the spec version (``sha256:…``) written into every result.
    """

    name: str
    version: str
    models: tuple[RuntimeModel, ...]
    validations: Mapping[str, Validation] = field(default_factory=dict)
    input_width: int | None = None
    input_names: tuple[str, ...] | None = None
    allow_nan: bool = True
    max_message_bytes: int | None = None
    #: The champion's inputs; with them, requests with shapes, by name or in V2 form are read.
    inputs: tuple[InputSpec, ...] | None = None
    #: Whether every request needs the feed path (several inputs, strings, integers, ranks
    #: other than 2, free feature dimensions, batch size fixed to 1).
    feeds_only: bool = False
    #: Whether result events carry the request's inputs.
    record_inputs: bool = True
    #: Which inputs by name they carry when recorded by name (``None``: all).
    recorded_inputs: tuple[str, ...] | None = None
    #: With it, each result is written as an Open Inference Protocol response.
    response_form: ResponseForm | None = None

    def __post_init__(self) -> None:
        if not self.models:
            raise ValueError(f"models: pipeline {self.name!r} needs at least one model")

    @property
    def model_versions(self) -> dict[str, str]:
        return {m.name: m.sha256 for m in self.models}


@dataclass
class BatchOutcome:
    """What one pipeline's micro-batch produced.

    ``results[i]`` is ``(message index in the batch, serialized result event)``, one per row, in
    message and row order; ``keys`` the result key (request id) of each accepted message by
    message index; ``check_failures`` counts failed rows per validation.
    """

    results: list[tuple[int, bytes]] = field(default_factory=list)
    ids: dict[int, str] = field(default_factory=dict)
    times: dict[int, int] = field(default_factory=dict)
    rejected: list[Rejection] = field(default_factory=list)
    rows: int = 0
    messages: int = 0
    check_failures: dict[str, int] = field(default_factory=dict)
    inference_s: float = 0.0

    def reject_messages(self, details: Mapping[int, str], reason: str) -> None:
        """Move messages (by batch index) from the results to the dead letters.

        Used when the results of a served message cannot be delivered (too large for the
        results topic, say). Messages already rejected are left as they are.
        """
        drop = set(details).difference(r.index for r in self.rejected)
        if not drop:
            return
        kept = [(k, v) for k, v in self.results if k not in drop]
        self.rows -= len(self.results) - len(kept)
        self.results = kept
        for k in drop:
            self.ids.pop(k, None)
            self.times.pop(k, None)
        self.rejected = sorted(
            [*self.rejected, *(Rejection(k, reason, details[k]) for k in drop)],
            key=lambda r: r.index,
        )


def _run_all(runtime: PipelineRuntime, x: np.ndarray) -> dict[str, list[np.ndarray]]:
    n = x.shape[0]
    outs: dict[str, list[np.ndarray]] = {}
    for model in runtime.models:
        res = model.runner.run(x)
        # Validations and results index outputs per row: flatten each row of each output.
        outs[model.name] = [np.asarray(o).reshape(n, -1) for o in res]
    return outs


def _run_isolating(
    runtime: PipelineRuntime, rows: np.ndarray, batch: DecodedBatch
) -> tuple[dict[str, list[np.ndarray]], np.ndarray]:
    """Run message by message to find those the model rejects; return outputs and kept rows."""
    per_msg: list[dict[str, list[np.ndarray]]] = []
    keep = np.ones(len(batch.counts), dtype=bool)
    start = 0
    for k, count in enumerate(batch.counts):
        part = rows[start : start + count]
        start += count
        try:
            per_msg.append(_run_all(runtime, part))
        except Exception as exc:
            keep[k] = False
            batch.rejected.append(
                Rejection(batch.accepted[k], MODEL_ERROR, f"model run failed: {exc}"[:500])
            )
    row_keep = keep[batch.row_message()]
    kept = [a for a, ok in zip(range(len(batch.counts)), keep.tolist(), strict=True) if ok]
    batch.accepted = [batch.accepted[k] for k in kept]
    batch.ids = [batch.ids[k] for k in kept]
    batch.times = [batch.times[k] for k in kept]
    batch.counts = [batch.counts[k] for k in kept]
    batch.rows = batch.rows[row_keep]
    if not per_msg:
        return {}, rows[row_keep]
    outs = {
        m.name: [
            merge_rows([p[m.name][i] for p in per_msg]) for i in range(len(per_msg[0][m.name]))
        ]
        for m in runtime.models
    }
    return outs, rows[row_keep]


def process_batch(
    runtime: PipelineRuntime,
    values: Sequence[bytes | None],
    *,
    default_ids: Sequence[str],
    default_times: Sequence[int],
    received_ns: int | None = None,
    max_message_bytes: int | None = None,
    time_range: tuple[int, int] | None = None,
) -> BatchOutcome:
    """Serve one pipeline's micro-batch.

    Parameters
    ----------
    runtime:
        The pipeline version to serve it with (fixed for the whole batch).
    values:
        Raw request values.
    default_ids, default_times:
        Per message, the id and event time used when the request carries none.
    received_ns:
        ``time.perf_counter_ns()`` when the batch arrived. Each result's ``elapsed_ns`` is the
        time from there to the serialization of the batch's results (decode, every model,
        every validation): what the worker spent on the request, not the time it waited in
        Kafka before.
    max_message_bytes:
        Size limit when the spec sets none.
    time_range:
        Earliest and latest accepted event time (epoch ms); others are dead-lettered as
        ``time_out_of_range``.
    """
    t0 = time.perf_counter_ns() if received_ns is None else received_ns
    limit = runtime.max_message_bytes or max_message_bytes
    if runtime.inputs and (runtime.feeds_only or needs_feeds(values)):
        feeds = decode_feeds(
            values,
            inputs=runtime.inputs,
            default_ids=default_ids,
            default_times=default_times,
            allow_nan=runtime.allow_nan,
            max_bytes=limit,
            time_range=time_range,
        )
        return _as_responses(runtime, _process_feeds(runtime, feeds, len(values), t0))
    batch = decode_requests(
        values,
        width=runtime.input_width,
        default_ids=default_ids,
        default_times=default_times,
        input_names=runtime.input_names,
        allow_nan=runtime.allow_nan,
        max_bytes=limit,
        time_range=time_range,
    )
    outcome = BatchOutcome(messages=len(values))
    if batch.num_rows:
        rows = batch.rows
        with np.errstate(over="ignore"):  # beyond float32 becomes inf, as the model sees it
            x = rows.astype(np.float32)
        t_inf = time.perf_counter()
        try:
            outs = _run_all(runtime, x)
        except Exception:
            outs, x = _run_isolating(runtime, x, batch)
            rows = batch.rows
        outcome.inference_s = time.perf_counter() - t_inf
        if batch.num_rows:
            unfit = _unserializable(runtime, outs)
            if unfit is not None:
                _reject_all(batch, UNSERIALIZABLE_OUTPUT, unfit)
        if batch.num_rows:
            failures = _evaluate(runtime, rows, outs, batch, outcome)
            if batch.num_rows:
                try:
                    _build(runtime, batch, rows, outs, failures, t0, outcome)
                except (TypeError, ValueError) as exc:
                    # orjson refuses what it cannot write; the batch's requests go to the
                    # dead letters instead of stopping the worker on every restart.
                    outcome.results, outcome.rows = [], 0
                    _reject_all(batch, UNSERIALIZABLE_OUTPUT, f"results cannot be written: {exc}")
    outcome.rejected = sorted(batch.rejected, key=lambda r: r.index)
    return _as_responses(runtime, outcome)


def _as_responses(runtime: PipelineRuntime, outcome: BatchOutcome) -> BatchOutcome:
    """The outcome's results as V2 responses when the spec asks for them."""
    form = runtime.response_form
    if form is not None and outcome.results:
        keys = [k for k, _ in outcome.results]
        values = to_responses([v for _, v in outcome.results], form)
        outcome.results = list(zip(keys, values, strict=True))
    return outcome


def _reject_all(batch: DecodedBatch, reason: str, detail: str) -> None:
    """Every accepted message of the batch becomes a dead letter with one reason."""
    batch.rejected.extend(Rejection(idx, reason, detail[:500]) for idx in batch.accepted)
    batch.accepted, batch.ids, batch.times, batch.counts = [], [], [], []
    batch.rows = batch.rows[:0]


def _describe(values: np.ndarray) -> tuple[str, str]:
    """What an output holds that a result cannot carry, and how to export it instead."""
    if values.dtype.kind == "O" and values.size:
        first = next(
            (v for v in values.flat if not isinstance(v, str | np.ndarray)), values.flat[0]
        )
        if isinstance(first, dict):
            return (
                "a sequence of maps (a ZipMap of class probabilities)",
                "export the classifier with skl2onnx options={'zipmap': False}",
            )
        return f"{type(first).__name__} values", "export numeric or string tensor outputs"
    return f"{values.dtype} values", "export numeric or string tensor outputs"


def _unserializable(runtime: PipelineRuntime, outs: Mapping[str, list[np.ndarray]]) -> str | None:
    """Why an output cannot go into a result event, or None."""
    for model in runtime.models:
        for i, values in enumerate(outs.get(model.name, ())):
            if carried(values):
                continue
            names = getattr(model.runner, "output_names", None)
            label = repr(names[i]) if isinstance(names, list) and i < len(names) else f"#{i}"
            role = "shadow model" if model.shadow else "model"
            what, fix = _describe(values)
            return (
                f"{role} {model.name!r}: output {label} holds {what}, which a result event "
                f"cannot carry; {fix}, then redeploy"
            )
    return None


def _evaluate(
    runtime: PipelineRuntime,
    rows: np.ndarray,
    outs: dict[str, list[np.ndarray]],
    batch: DecodedBatch,
    outcome: BatchOutcome,
    inputs: Mapping[str, list[np.ndarray]] | None = None,
) -> list[tuple[str, np.ndarray]]:
    """Failed-row masks of every validation that fails somewhere in the batch.

    A model's ``inputs[i]`` is its i-th input, one flattened row per request row: ``rows``
    for every model, unless ``inputs`` gives each model's own.
    """
    if not runtime.validations:
        return []
    tensors: dict[tuple[str, str], Sequence[np.ndarray]] = {}
    for name, o in outs.items():
        tensors[(name, "outputs")] = o
        tensors[(name, "inputs")] = inputs[name] if inputs is not None else [rows]
    failures: list[tuple[str, np.ndarray]] = []
    n = rows.shape[0]
    for vname, fn in runtime.validations.items():
        try:
            healthy = np.broadcast_to(np.asarray(fn(tensors)), (n,)).astype(bool)
        except Exception as exc:
            # A spec whose validation cannot run on these rows: the rows are unusable as
            # observations, so they go to the dead-letter topic instead of silently passing.
            for idx in batch.accepted:
                batch.rejected.append(
                    Rejection(idx, MODEL_ERROR, f"validation {vname!r} failed: {exc}"[:500])
                )
            batch.accepted, batch.ids, batch.times, batch.counts = [], [], [], []
            batch.rows = rows[:0]
            return []
        failed = ~healthy
        count = int(failed.sum())
        outcome.check_failures[vname] = count
        if count:
            failures.append((vname, failed))
    return failures


def _split_rows(matrix: np.ndarray) -> list[bytes]:
    """JSON of each row of a 2-D numeric array, without its brackets: ``[b"1.0,2.0", ...]``.

    One ``orjson.dumps`` of the whole batch is several times faster than one per row, and
    numbers never contain brackets, so splitting the text at ``],[`` is exact.
    """
    n = matrix.shape[0]
    if matrix.shape[1] == 0:
        return [b""] * n
    if matrix.dtype.kind in "OU":
        # strings may hold "],[" and ragged rows are arrays: one dumps per row
        return [orjson.dumps(_json_row(row))[1:-1] for row in matrix]
    if matrix.dtype.kind == "f" and matrix.dtype != np.float64:
        # float64 so that the recorded value is the model's float32 value, digit for digit.
        matrix = matrix.astype(np.float64)
    text = orjson.dumps(np.ascontiguousarray(matrix), option=orjson.OPT_SERIALIZE_NUMPY)
    rows = text[2:-2].split(b"],[")
    if len(rows) != n:  # pragma: no cover - would mean a bracket inside a number
        raise AssertionError("row split mismatch")
    return rows


def _json_row(row: np.ndarray) -> list[Any]:
    """One row of a string or ragged output as JSON values: strings as they are, a ragged
    row (its only cell an array) as that row's list of values."""
    if row.size == 1 and isinstance(row[0], np.ndarray):
        values = row[0]
        if values.dtype.kind == "f":
            values = values.astype(np.float64)
        out: list[Any] = values.tolist()
        return out
    return [str(v) for v in row.tolist()]


def _rows_with_comma(matrix: np.ndarray) -> list[bytes]:
    """Like :func:`_split_rows`, each row followed by ``],``: ``[b"1.0,2.0],", ...]``.

    Splitting the batch's text at ``[`` (a one-byte split, twice as fast as at ``],[``)
    leaves each row with its closing bracket and comma; only the last row needs fixing.
    """
    n = matrix.shape[0]
    if matrix.shape[1] == 0:
        return [b"],"] * n
    if matrix.dtype.kind == "f" and matrix.dtype != np.float64:
        matrix = matrix.astype(np.float64)
    text = orjson.dumps(np.ascontiguousarray(matrix), option=orjson.OPT_SERIALIZE_NUMPY)
    rows = text.split(b"[")[2:]
    if len(rows) != n:  # pragma: no cover - would mean a bracket inside a number
        raise AssertionError("row split mismatch")
    rows[-1] = rows[-1][:-1] + b","
    return rows


def _checks_json(failures: list[tuple[str, np.ndarray]], n: int) -> list[bytes]:
    """``check_failures`` of every row as JSON, from one code per row (bit v: validation v
    failed) and one serialization per distinct combination."""
    if not failures:
        return [b"[]"] * n
    codes = np.zeros(n, dtype=np.int64)
    for bit, (_vname, failed) in enumerate(failures):
        codes |= failed.astype(np.int64) << bit
    present, inverse = np.unique(codes, return_inverse=True)
    table = np.empty(len(present), dtype=object)
    for j, code in enumerate(present.tolist()):
        table[j] = orjson.dumps([v for bit, (v, _f) in enumerate(failures) if code >> bit & 1])
    out: list[bytes] = table[inverse.reshape(-1)].tolist()
    return out


def _per_row(column: list[Any], msg_of_row: np.ndarray | None) -> list[Any]:
    """A per-message column repeated for each of the message's rows."""
    if msg_of_row is None:
        return column
    arr = np.empty(len(column), dtype=object)
    arr[:] = column
    out: list[Any] = arr[msg_of_row].tolist()
    return out


def _build(
    runtime: PipelineRuntime,
    batch: DecodedBatch,
    rows: np.ndarray,
    outs: dict[str, list[np.ndarray]],
    failures: list[tuple[str, np.ndarray]],
    t0: int,
    outcome: BatchOutcome,
) -> None:
    n = rows.shape[0]
    ids, times, accepted = batch.ids, batch.times, batch.accepted
    # One row per message is the common case: per-message columns are then per-row already.
    single = len(accepted) == n
    msg_of_row = None if single else batch.row_message()
    # One %-template per batch, with a slot per row-dependent piece; constant parts (names,
    # versions, elapsed time) are baked in, so each row costs one C-level formatting call.
    template = [b'{"id":%b,"row":%d,"time":%d']
    template.append(
        (
            b',"pipeline":'
            + orjson.dumps(runtime.name)
            + b',"spec":'
            + orjson.dumps(runtime.version)
        ).replace(b"%", b"%%")
    )
    template.append(b',"inputs":[%b"outputs":{' if runtime.record_inputs else b',"outputs":{')
    columns: list[list[Any]] = [
        _per_row(list(map(orjson.dumps, ids)), msg_of_row),
        [0] * n if single else batch.row_number().tolist(),
        _per_row(times, msg_of_row),
    ]
    if runtime.record_inputs:
        columns.append(_rows_with_comma(rows))
    for m, (name, o_list) in enumerate(outs.items()):
        slots = b",".join([b"[%b]"] * len(o_list))
        template.append((b"," if m else b"") + orjson.dumps(name).replace(b"%", b"%%") + b":[")
        template.append(slots + b"]")
        columns.extend(_split_rows(o) for o in o_list)
    elapsed = time.perf_counter_ns() - t0
    template.append(
        (b'},"models":' + orjson.dumps(runtime.model_versions)).replace(b"%", b"%%")
        + b',"check_failures":%b,"elapsed_ns":'
        + b"%d}" % elapsed
    )
    columns.append(_checks_json(failures, n))
    fmt = b"".join(template)
    events = map(fmt.__mod__, zip(*columns, strict=True))
    outcome.results = list(zip(_per_row(accepted, msg_of_row), events, strict=True))
    outcome.ids = dict(zip(accepted, ids, strict=True))
    outcome.times = dict(zip(accepted, times, strict=True))
    outcome.rows = n


# -- the feed path: named inputs, shapes, V2 -------------------------------------------------


def _model_feeds(model: RuntimeModel, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The champion's feeds as this model takes them: by name, or positionally when both
    have one input under different names."""
    specs = getattr(model.runner, "input_specs", None)
    names = [spec[0] for spec in specs] if specs else list(feeds)
    if all(n in feeds for n in names):
        return {n: feeds[n] for n in names}
    if len(names) == 1 and len(feeds) == 1:
        return {names[0]: next(iter(feeds.values()))}
    raise ValueError(f"model {model.name!r} takes inputs {names}, the request gives {list(feeds)}")


def _run_feeds(
    runtime: PipelineRuntime, feeds: Mapping[str, np.ndarray], n: int
) -> tuple[dict[str, list[np.ndarray]], dict[str, list[np.ndarray]]]:
    """Every model on one group's feeds: outputs and inputs, each one flattened row per row."""
    outs: dict[str, list[np.ndarray]] = {}
    ins: dict[str, list[np.ndarray]] = {}
    for model in runtime.models:
        mine = _model_feeds(model, feeds)
        run_feeds = getattr(model.runner, "run_feeds", None)
        if run_feeds is not None:
            res = run_feeds(mine)
        else:
            (only,) = mine.values()
            res = model.runner.run(only.reshape(n, -1))
        outs[model.name] = [np.asarray(o).reshape(n, -1) for o in res]
        ins[model.name] = [
            a.reshape(n, -1) if a.dtype.kind == "O" else a.reshape(n, -1).astype(np.float64)
            for a in mine.values()
        ]
    return outs, ins


def _groups(batch: FeedBatch) -> list[list[int]]:
    """Messages whose inputs share every non-batch dimension and type, run together."""
    groups: dict[tuple[Any, ...], list[int]] = {}
    for k, feeds in enumerate(batch.feeds):
        key = tuple((name, a.shape[1:], a.dtype.str) for name, a in sorted(feeds.items()))
        groups.setdefault(key, []).append(k)
    return list(groups.values())


def _process_feeds(
    runtime: PipelineRuntime, batch: FeedBatch, messages: int, t0: int
) -> BatchOutcome:
    outcome = BatchOutcome(messages=messages, rejected=list(batch.rejected))
    t_inf = time.perf_counter()
    pending = _groups(batch)
    served: list[tuple[list[int], dict[str, list[np.ndarray]], dict[str, list[np.ndarray]]]] = []
    while pending:
        group = pending.pop()
        n = sum(batch.counts[k] for k in group)
        feeds = {
            name: np.concatenate([batch.feeds[k][name] for k in group], axis=0)
            for name in batch.feeds[group[0]]
        }
        try:
            outs, ins = _run_feeds(runtime, feeds, n)
        except Exception as exc:
            if len(group) > 1:  # find the messages the model refuses, one by one
                pending.extend([k] for k in group)
            else:
                detail = f"model run failed: {exc}"[:500]
                outcome.rejected.append(Rejection(batch.accepted[group[0]], MODEL_ERROR, detail))
            continue
        served.append((group, outs, ins))
    outcome.inference_s = time.perf_counter() - t_inf
    for group, outs, ins in served:
        sub = DecodedBatch(
            rows=np.zeros((sum(batch.counts[k] for k in group), 0)),
            accepted=[batch.accepted[k] for k in group],
            counts=[batch.counts[k] for k in group],
            ids=[batch.ids[k] for k in group],
            times=[batch.times[k] for k in group],
        )
        unfit = _unserializable(runtime, outs)
        if unfit is not None:
            _reject_all(sub, UNSERIALIZABLE_OUTPUT, unfit)
        else:
            counts = BatchOutcome()
            failures = _evaluate(runtime, sub.rows, outs, sub, counts, ins)
            for vname, c in counts.check_failures.items():
                outcome.check_failures[vname] = outcome.check_failures.get(vname, 0) + c
            if sub.accepted:
                try:
                    _build_feeds(runtime, sub, ins, outs, failures, t0, outcome)
                except (TypeError, ValueError) as exc:
                    _reject_all(sub, UNSERIALIZABLE_OUTPUT, f"results cannot be written: {exc}")
        outcome.rejected.extend(sub.rejected)
    outcome.results.sort(key=lambda r: r[0])  # stable: rows stay in order within a message
    outcome.rejected.sort(key=lambda r: r.index)
    return outcome


def _build_feeds(
    runtime: PipelineRuntime,
    batch: DecodedBatch,
    ins: Mapping[str, list[np.ndarray]],
    outs: Mapping[str, list[np.ndarray]],
    failures: list[tuple[str, np.ndarray]],
    t0: int,
    outcome: BatchOutcome,
) -> None:
    """Result events of one group, one ``orjson.dumps`` per row.

    ``inputs`` is the row's flattened input as a list when the champion has one numeric
    input (as on the fast path), else an object of flattened inputs by name.
    """
    champion = runtime.models[0].name
    names = [s.name for s in runtime.inputs or ()]
    keep = runtime.recorded_inputs
    numeric = [a if a.dtype.kind == "O" else a.astype(np.float64) for a in ins[champion]]
    as_list = len(numeric) == 1 and numeric[0].dtype.kind != "O"
    wide: dict[str, list[Any]] = {
        m: [
            o.astype(np.float64)
            if o.dtype.kind == "f"
            else ([_json_row(row) for row in o] if o.dtype.kind in "OU" else o)
            for o in v
        ]
        for m, v in outs.items()
    }
    checks = _checks_json(failures, int(numeric[0].shape[0]))
    elapsed = time.perf_counter_ns() - t0
    option = orjson.OPT_SERIALIZE_NUMPY
    r = 0
    for k, count in enumerate(batch.counts):
        for row in range(count):
            event: dict[str, Any] = {
                "id": batch.ids[k],
                "row": row,
                "time": batch.times[k],
                "pipeline": runtime.name,
                "spec": runtime.version,
            }
            if runtime.record_inputs:
                event["inputs"] = (
                    numeric[0][r]
                    if as_list
                    else {
                        n: a[r].tolist()
                        for n, a in zip(names, numeric, strict=True)
                        if keep is None or n in keep
                    }
                )
            event["outputs"] = {m: [o[r] for o in v] for m, v in wide.items()}
            event["models"] = runtime.model_versions
            event["check_failures"] = orjson.Fragment(checks[r])
            event["elapsed_ns"] = elapsed
            outcome.results.append((batch.accepted[k], orjson.dumps(event, option=option)))
            r += 1
        outcome.ids[batch.accepted[k]] = batch.ids[k]
        outcome.times[batch.accepted[k]] = batch.times[k]
    outcome.rows += r


@dataclass
class WorkerStats:
    """Counts since start, for tests and the CLI's exit summary."""

    batches: int = 0
    messages: int = 0
    rows: int = 0
    dead_letters: int = 0
    aborts: int = 0
    producer_restarts: int = 0
    dead_letter_reasons: dict[str, int] = field(default_factory=lambda: defaultdict(int))
