r"""Reading the performance join's inputs: feedback events and result events of a batch.

Feedback that cannot be used is returned as :class:`DeadLetter`\s carrying the worker's
header contract (``driftline-error`` reason code, ``driftline-detail``, source topic,
partition and offset), for ``<p>.deadletter``.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from driftline.streams._decode import read_result
from driftline.streams.feedback import Labels, Predictions

__all__ = [
    "FEEDBACK_REASONS",
    "DeadLetter",
    "PipelinePerformance",
    "Record",
    "feedback_labels",
    "parse_feedback",
    "result_predictions",
]


#: Reason codes of dead-lettered feedback (``driftline-error`` header).
FEEDBACK_REASONS = ("malformed_json", "missing_id", "bad_row", "bad_label", "bad_time")


@dataclass(frozen=True)
class Record:
    """One consumed Kafka message, whatever the client (confluent-kafka, aiokafka)."""

    topic: str
    partition: int
    offset: int
    value: bytes | None
    timestamp: int
    key: bytes | None = None


@dataclass(frozen=True)
class DeadLetter:
    """A feedback message that cannot be used, with the worker's header contract."""

    record: Record
    reason: str
    detail: str

    def headers(self) -> list[tuple[str, bytes]]:
        return self.record_out().headers

    def record_out(self) -> Any:
        """The dead-letter record (:func:`driftline.kafka.deadletter.dead_letter`)."""
        from driftline.kafka.deadletter import dead_letter

        r = self.record
        return dead_letter(
            r.value, reason=self.reason, detail=self.detail, topic=r.topic,
            partition=r.partition, offset=r.offset, key=r.key,
        )  # fmt: skip


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def parse_feedback(
    value: bytes | str | None,
    timestamp: int,
    classes: Sequence[str] = (),
    label_index: int | None = None,
    entry: str = "",
) -> tuple[str, int, float, int]:
    """``(id, row, label, time)`` of one feedback event, or ``ValueError("<reason>: <detail>")``.

    ``label`` is a number, true/false, or a class name of ``classes``; ``row`` defaults to
    0 and ``time`` to the record's timestamp. A performance entry with ``label_index: k``
    (``entry`` names it in the reasons) judges element ``k`` of a list label — the labels of
    a multi-output model, one per output — and refuses a single label; one without it
    refuses list labels, since its ``prediction`` addresses one output value.

    >>> parse_feedback(b'{"id": "r-1", "label": 1}', 1000)
    ('r-1', 0, 1.0, 1000)
    >>> parse_feedback(b'{"id": 7, "row": 2, "label": "dog", "time": 5}', 0, ("cat", "dog"))
    ('7', 2, 1.0, 5)
    >>> parse_feedback(b'{"id": "r-1"}', 0)
    Traceback (most recent call last):
    ...
    ValueError: bad_label: missing "label": send {"id": ..., "label": ...}
    >>> parse_feedback(b'{"id": "r-1", "label": [0, 1, 0]}', 0, label_index=1)
    ('r-1', 0, 1.0, 0)
    >>> parse_feedback(b'{"id": "r-1", "label": [0, 1, 0]}', 0, entry="quality")
    Traceback (most recent call last):
    ...
    ValueError: bad_label: label [0, 1, 0] is a list; set label_index in performance entry
    'quality' to the element it judges (label_index: 0 for the first output), or send ...
    """
    try:
        doc = orjson.loads(value or b"")
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"malformed_json: not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise ValueError(f"malformed_json: expected a JSON object, got {type(doc).__name__}")
    ident = doc.get("id")
    if ident is None or isinstance(ident, bool) or not isinstance(ident, str | int) or ident == "":
        raise ValueError(f'missing_id: "id" must be the request id (text), got {ident!r}')
    row = doc.get("row", 0)
    if not _is_int(row) or row < 0:
        raise ValueError(f'bad_row: "row" must be an integer >= 0, got {row!r}')
    if "label" not in doc or doc["label"] is None:
        raise ValueError('bad_label: missing "label": send {"id": ..., "label": ...}')
    label = _pick(doc["label"], label_index, entry)
    if isinstance(label, bool):
        y = float(label)
    elif isinstance(label, int | float):
        y = float(label)
        if not math.isfinite(y):
            raise ValueError(f"bad_label: label {label!r} is not a finite number")
    elif isinstance(label, str) and label in classes:
        y = float(list(classes).index(label))
    elif isinstance(label, str):
        known = f"; classes: {list(classes)}" if classes else ""
        raise ValueError(f"bad_label: label {label!r} is not a number or class name{known}")
    else:
        raise ValueError(f"bad_label: label {label!r} is not a number or class name")
    t = doc.get("time", timestamp)
    if not _is_int(t) or t < 0:
        raise ValueError(f'bad_time: "time" must be epoch milliseconds, got {t!r}')
    return str(ident), int(row), y, int(t)


def _pick(label: Any, index: int | None, entry: str) -> Any:
    """The label an entry judges: ``label`` itself, or its element ``index``."""
    where = f"performance entry {entry!r}" if entry else "the performance entry"
    if isinstance(label, list):
        if index is None:
            raise ValueError(
                f"bad_label: label {_short(label)} is a list; set label_index in {where} to "
                "the element it judges (label_index: 0 for the first output), or send one "
                "label per row"
            )
        if index >= len(label):
            raise ValueError(
                f"bad_label: label {_short(label)} has {len(label)} elements, but {where} "
                f"judges element {index} (label_index: {index}); send {index + 1} or more, "
                "or fix label_index"
            )
        if isinstance(label[index], list | dict) or label[index] is None:
            raise ValueError(
                f"bad_label: element {index} of label {_short(label)} is "
                f"{label[index]!r}; send a flat list of numbers or class names"
            )
        return label[index]
    if index is not None:
        raise ValueError(
            f"bad_label: label {_short(label)} is one value, but {where} judges element "
            f"{index} of a list label (label_index: {index}); send the list of every "
            "output's label"
        )
    return label


def _short(x: Any) -> str:
    text = orjson.dumps(x).decode().replace(",", ", ")
    return text if len(text) <= 80 else text[:77] + "..."


def feedback_labels(
    records: Sequence[Record],
    classes: Sequence[str] = (),
    label_index: int | None = None,
    entry: str = "",
) -> tuple[Labels | None, list[DeadLetter]]:
    """Labels of a batch of feedback records (one topic), and the ones to dead-letter."""
    good: list[tuple[Record, tuple[str, int, float, int]]] = []
    dead: list[DeadLetter] = []
    for r in records:
        try:
            good.append((r, parse_feedback(r.value, r.timestamp, classes, label_index, entry)))
        except ValueError as exc:
            reason, _, detail = str(exc).partition(": ")
            dead.append(DeadLetter(r, reason, detail))
    if not good:
        return None, dead
    return (
        Labels(
            good[0][0].topic,
            [g[1][0] for g in good],
            np.array([g[1][1] for g in good], dtype=np.int64),
            np.array([g[1][2] for g in good], dtype=np.float64),
            np.array([g[1][3] for g in good], dtype=np.int64),
            np.array([g[0].partition for g in good], dtype=np.int64),
            np.array([g[0].offset for g in good], dtype=np.int64),
        ),
        dead,
    )


def result_predictions(
    records: Sequence[Record],
    prediction: Sequence[Any],
    names: Mapping[tuple[str, str], Sequence[str]] | None = None,
) -> tuple[Predictions | None, int]:
    """Predictions of a batch of result records (one topic), and how many were unusable.

    ``prediction`` holds the performance entry's expressions (one, or one per class).
    Results the monitor would reject (not JSON, no id or time, another number of tensors
    than the batch's first, strings mixed with numbers) are skipped here and counted; the
    monitor dead-letters them. Tensors may differ in length from row to row
    (variable-length outputs) and hold strings (labels), as the monitor reads them.
    """
    from driftline.expressions import evaluate, variables
    from driftline.streams._decode import output_column, output_signature

    needed = sorted({(v.model, v.kind) for e in prediction for v in variables(e)})
    docs: list[dict[str, Any]] = []
    keep: list[Record] = []
    for r in records:
        try:
            doc = read_result(r.value or b"")
            if not isinstance(doc, dict) or doc.get("id") is None or not _is_int(doc.get("time")):
                continue
        except ValueError:  # not JSON, or a V2 response without driftline's fields
            continue
        docs.append(doc)
        keep.append(r)
    skipped = len(records) - len(keep)
    if not docs:
        return None, skipped
    ok = np.ones(len(docs), dtype=bool)
    given: dict[tuple[str, str], tuple[list[Any], int]] = {}
    for model, kind in needed:
        rows: list[Any] = []
        for i, d in enumerate(docs):
            try:
                t = [d["inputs"]] if kind == "inputs" else d["outputs"][model]
                output_signature(t)  # lists of numbers (any length) or of strings
            except (KeyError, TypeError):
                ok[i] = False
                t = None
            rows.append(t)
        first = next((t for t in rows if t is not None), None)
        count = 0 if first is None else len(first)
        for i, got in enumerate(rows):
            if got is None or len(got) != count:
                ok[i] = False
        given[(model, kind)] = rows, count
    sel = np.flatnonzero(ok)
    skipped += len(docs) - sel.size
    if not sel.size:
        return None, skipped
    try:
        tensors = {
            key: [output_column([rows[i][j] for i in sel]) for j in range(count)]
            for key, (rows, count) in given.items()
        }
    except TypeError:  # a tensor holding strings in some rows and numbers in others
        return None, skipped + sel.size
    cols = [
        np.asarray(evaluate(e, tensors, names, n_rows=sel.size), dtype=np.float64)
        for e in prediction
    ]
    values = cols[0] if len(cols) == 1 else np.stack(cols, axis=1)
    return (
        Predictions(
            keep[0].topic,
            [str(docs[i]["id"]) for i in sel],
            np.array([int(docs[i].get("row", 0)) for i in sel], dtype=np.int64),
            np.array([int(docs[i]["time"]) for i in sel], dtype=np.int64),
            values,
            np.array([keep[i].partition for i in sel], dtype=np.int64),
            np.array([keep[i].offset for i in sel], dtype=np.int64),
        ),
        skipped,
    )


class PipelinePerformance:
    """Every performance entry of one pipeline spec, fed the records of both topics.

    What a monitor calls: :meth:`apply` with each micro-batch of records from the results
    and feedback topics (it returns the feedback to dead-letter), :meth:`close` on its
    housekeeping tick (and once at start, before the first batch), produce what it returns,
    then :meth:`confirm`.

    Parameters
    ----------
    spec:
        A :class:`driftline.spec.PipelineSpec`.
    state:
        ``state(name, digest, horizon_ms)`` gives the state of one entry, e.g.
        ``lambda n, d, h: RedisJoinState(client, "dl", spec.name, n, d, h)``; ``digest``
        changes with the entry's canonical form, so a redeployed entry starts afresh.
    results_topic, feedback_topic:
        The pipeline's topics (``<p>.results``, ``<p>.feedback``).
    partitions:
        Of the results topic (the watermark's minimum runs over all of them).
    """

    def __init__(
        self,
        spec: Any,
        state: Callable[[str, str, int], Any],
        results_topic: str,
        feedback_topic: str,
        partitions: int | None = None,
    ):
        from driftline.streams.feedback import PerformanceJoin

        self.spec = spec
        self.results_topic, self.feedback_topic = results_topic, feedback_topic
        self.joins: dict[str, PerformanceJoin] = {}
        for name, p in spec.performance.items():
            digest = hashlib.sha256(
                orjson.dumps(p.to_canonical(), option=orjson.OPT_SORT_KEYS)
            ).hexdigest()[:12]
            self.joins[name] = PerformanceJoin.from_spec(
                spec, name, state(name, digest, p.horizon_ms), partitions
            )

    def apply(self, records: Sequence[Record]) -> list[DeadLetter]:
        """Apply one micro-batch to every entry; returns the feedback to dead-letter."""
        results = [r for r in records if r.topic == self.results_topic]
        feedback = [r for r in records if r.topic == self.feedback_topic]
        rejected: dict[tuple[int, int], DeadLetter] = {}
        accepted: set[tuple[int, int]] = set()
        for name, join in self.joins.items():
            p = self.spec.performance[name]
            preds, _ = result_predictions(results, p.prediction, self.spec.tensor_names())
            labels, dead = feedback_labels(feedback, p.classes, p.label_index, name)
            if labels is not None:
                accepted.update(
                    zip(labels.partitions.tolist(), labels.offsets.tolist(), strict=True)
                )
            for d in dead:
                rejected.setdefault((d.record.partition, d.record.offset), d)
            join.apply(preds, labels)
        # dead-lettered once, and only when no entry could use it
        return [d for k, d in sorted(rejected.items()) if k not in accepted]

    def close(self, watermark: int | None = None) -> dict[str, Any]:
        """``{entry: Closing}``: events for ``driftline.performance`` (key ``pipeline/name``),
        labels for ``<p>.unmatched`` and notifications for ``driftline.notifications``."""
        return {name: join.close(watermark) for name, join in self.joins.items()}

    def confirm(self, closings: Mapping[str, Any]) -> None:
        """Record what :meth:`close` returned, once produced."""
        for name, closing in closings.items():
            self.joins[name].confirm(closing)
