"""Reading feedback and result events into the join's batches; what gets dead-lettered."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from driftline.expressions import parse
from driftline.streams._feedback_io import (
    FEEDBACK_REASONS,
    Record,
    feedback_labels,
    parse_feedback,
    result_predictions,
)

pytestmark = pytest.mark.unit


def rec(value: object, offset: int = 0, partition: int = 0, raw: bytes | None = None) -> Record:
    data = raw if raw is not None else orjson.dumps(value)
    return Record("p.feedback", partition, offset, data, 1_000 + offset)


@pytest.mark.parametrize(
    ("value", "reason", "words"),
    [
        (None, "malformed_json", "not JSON"),
        ([1, 2], "malformed_json", "JSON object"),
        ({"label": 1}, "missing_id", "request id"),
        ({"id": "", "label": 1}, "missing_id", "request id"),
        ({"id": "a", "row": -1, "label": 1}, "bad_row", ">= 0"),
        ({"id": "a", "row": 1.5, "label": 1}, "bad_row", ">= 0"),
        ({"id": "a"}, "bad_label", "missing"),
        ({"id": "a", "label": "cow"}, "bad_label", "classes: ['cat', 'dog']"),
        ({"id": "a", "label": [1, 0]}, "bad_label", "set label_index in the performance entry"),
        ({"id": "a", "label": 1, "time": "noon"}, "bad_time", "epoch milliseconds"),
    ],
)
def test_malformed_feedback_names_its_reason(value: object, reason: str, words: str) -> None:
    raw = b"{nope" if value is None else orjson.dumps(value)
    with pytest.raises(ValueError) as err:
        parse_feedback(raw, 0, ("cat", "dog"))
    code, _, detail = str(err.value).partition(": ")
    assert code == reason and code in FEEDBACK_REASONS
    assert words in detail


def test_feedback_batch_keeps_good_rows_and_dead_letters_the_rest() -> None:
    records = [
        rec({"id": "a", "label": 1}, 0),
        rec(None, 1, raw=b"garbage"),
        rec({"id": 5, "row": 2, "label": False, "time": 77}, 2, partition=1),
        rec({"id": "c", "label": float("nan")}, 3, raw=b'{"id": "c", "label": NaN}'),
    ]
    labels, dead = feedback_labels(records)
    assert labels is not None
    assert labels.ids == ["a", "5"]
    assert labels.rows.tolist() == [0, 2] and labels.labels.tolist() == [1.0, 0.0]
    assert labels.times.tolist() == [1000, 77]  # the record timestamp when no time is given
    assert labels.partitions.tolist() == [0, 1] and labels.offsets.tolist() == [0, 2]
    assert [(d.record.offset, d.reason) for d in dead] == [
        (1, "malformed_json"),
        (3, "malformed_json"),
    ]
    headers = dict(dead[0].headers())
    assert headers["driftline-error"] == b"malformed_json"
    assert headers["driftline-source-topic"] == b"p.feedback"
    assert headers["driftline-source-partition"] == b"0"
    assert headers["driftline-source-offset"] == b"1"
    assert b"not JSON" in headers["driftline-detail"]


def result(i: int, score: float, probs: list[float] | None = None) -> bytes:
    outputs = {"m": [[score], probs or [0.1, 0.9]]}
    return orjson.dumps(
        {"id": f"r{i}", "row": i % 2, "time": 5_000 + i, "outputs": outputs, "inputs": [1.0, 2.0]}
    )


def test_predictions_from_results_evaluate_the_spec_expressions() -> None:
    records = [Record("p.results", i % 2, i, result(i, 0.1 * i), 0) for i in range(4)]
    records.append(Record("p.results", 0, 9, b"not json", 0))
    records.append(
        Record("p.results", 1, 10, orjson.dumps({"id": "x", "time": 1, "outputs": {}}), 0)
    )
    preds, skipped = result_predictions(records, [parse("m.outputs[0][0] * 2")])
    assert preds is not None and skipped == 2
    assert preds.ids == ["r0", "r1", "r2", "r3"]
    np.testing.assert_allclose(preds.values, [0.0, 0.2, 0.4, 0.6])
    assert preds.rows.tolist() == [0, 1, 0, 1] and preds.times.tolist() == [5000, 5001, 5002, 5003]
    assert preds.offsets.tolist() == [0, 1, 2, 3]
    probs, _ = result_predictions(records[:2], [parse("m.outputs[1][0]"), parse("m.outputs[1][1]")])
    assert probs is not None and probs.values.shape == (2, 2)
    assert result_predictions([records[4]], [parse("m.outputs[0][0]")]) == (None, 1)


@pytest.mark.parametrize(
    ("label", "index", "words"),
    [
        ([0, 1], None, "is a list; set label_index in performance entry 'quality'"),
        ([0, 1], 2, "has 2 elements, but performance entry 'quality' judges element 2"),
        (1, 0, "is one value, but performance entry 'quality' judges element 0"),
        ([[0, 1]], 0, "element 0 of label [[0, 1]] is [0, 1]; send a flat list"),
        ([0, None], 1, "element 1 of label [0, null] is None"),
        ([0, "cow"], 1, "label 'cow' is not a number or class name; classes: ['cat', 'dog']"),
    ],
)
def test_list_labels_need_the_entry_label_index(
    label: object, index: int | None, words: str
) -> None:
    raw = orjson.dumps({"id": "a", "label": label})
    with pytest.raises(ValueError) as err:
        parse_feedback(raw, 0, ("cat", "dog"), index, "quality")
    code, _, detail = str(err.value).partition(": ")
    assert code == "bad_label" and words in detail, detail


def test_label_index_picks_one_element_of_a_multi_output_label() -> None:
    records = [
        rec({"id": "a", "label": [0, 1, 0]}, 0),
        rec({"id": "b", "label": [True, False, 1.5]}, 1),
        rec({"id": "c", "label": ["cat", "dog", "cat"]}, 2),
        rec({"id": "d", "label": 1}, 3),  # one value: not what this entry judges
    ]
    picked = {}
    for k in range(3):
        labels, dead = feedback_labels(records, ("cat", "dog"), k, "quality")
        assert labels is not None and [(d.record.offset, d.reason) for d in dead] == [
            (3, "bad_label")
        ]
        picked[k] = labels.labels.tolist()
    assert picked == {0: [0.0, 1.0, 0.0], 1: [1.0, 0.0, 1.0], 2: [0.0, 1.5, 0.0]}
    # an entry without label_index takes the single label and dead-letters the lists
    labels, dead = feedback_labels(records, ("cat", "dog"))
    assert labels is not None and labels.ids == ["d"] and len(dead) == 3


def test_predictions_read_results_whose_model_also_has_string_and_variable_length_outputs() -> None:
    """A classifier's label output is strings and a detector's scores vary in length from
    row to row: neither makes its results unusable for a prediction."""

    def event(i: int, scores: list[float]) -> bytes:
        outputs = {"m": [["setosa" if i % 2 else "virginica"], [0.25, 0.75], scores]}
        return orjson.dumps({"id": f"r{i}", "time": 5_000 + i, "outputs": outputs})

    records = [
        Record("p.results", 0, i, event(i, s), 0)
        for i, s in enumerate([[0.5, 0.7], [], [0.9], [0.1, 0.2, 0.3]])
    ]
    mixed = orjson.dumps({"id": "x", "time": 1, "outputs": {"m": [[1, "a"]]}})
    records.append(Record("p.results", 0, 9, mixed, 0))
    preds, skipped = result_predictions(records, [parse("m.outputs[1][1]")])
    assert preds is not None and skipped == 1
    np.testing.assert_allclose(preds.values, [0.75] * 4)
    means, _ = result_predictions(
        records, [parse('len(m.outputs[2]) + (m.outputs[0][0] == "setosa")')]
    )
    assert means is not None and means.values.tolist() == [2.0, 1.0, 1.0, 4.0]
