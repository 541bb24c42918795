"""Predictions and labels for the outcomes replay and crash tests, with their offline answer.

Labels come shuffled, some before their prediction, some twice (a wrong label first, then
the right one: the last one wins), some never; every label of an id is keyed by the id, so
it lands in one feedback partition, as ``driftline feedback`` sends it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from sklearn.metrics import accuracy_score, precision_recall_fscore_support

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fraud"
MINUTE = 60_000


def spec_dict(name: str, partitions: int) -> dict[str, Any]:
    """A pipeline with one binary performance entry on 1-minute windows, no lateness."""
    return {
        "name": name,
        "models": [{"name": "ccfraud", "path": str(EXAMPLE / "models" / "ccfraud.onnx")}],
        "performance": {
            "quality": {
                "task": "binary",
                "prediction": "ccfraud.outputs[0][0]",
                "threshold": 0.5,
                "window": {"width": "1m"},
            }
        },
        "options": {"lateness": "0s", "partitions": partitions},
    }


def result(pipeline: str, ident: str, t: int, score: float) -> bytes:
    return orjson.dumps(
        {
            "id": ident,
            "row": 0,
            "time": t,
            "pipeline": pipeline,
            "spec": "s",
            "inputs": [0.0] * 29,
            "outputs": {"ccfraud": [[score]]},
            "models": {"ccfraud": "x"},
        }
    )


@dataclass
class Outcomes:
    """``results``: (partition, timestamp, value) in production order; ``early`` and
    ``late``: (key, value) feedback sent before and after the predictions."""

    results: list[tuple[int, int, bytes]]
    early: list[tuple[bytes, bytes]]
    late: list[tuple[bytes, bytes]]
    expected: list[dict[str, Any]]  # per window: start, predictions, labeled, metrics
    end: int  # end of the last window


def outcomes(pipeline: str, n: int, t0: int, windows: int, partitions: int, seed: int) -> Outcomes:
    rng = np.random.default_rng(seed)
    scores = rng.uniform(0, 1, n)
    times = t0 + np.sort(rng.integers(0, windows * MINUTE, n))
    predicted = (scores >= 0.5).astype(int)
    truth = np.where(rng.uniform(size=n) < 0.8, predicted, 1 - predicted)
    fate = rng.uniform(size=n)  # < .1 never labeled, < .25 labeled early, < .35 twice
    results = [
        (i % partitions, int(t), result(pipeline, f"r{i}", int(t), float(s)))
        for i, (t, s) in enumerate(zip(times.tolist(), scores.tolist(), strict=True))
    ]
    end = t0 + windows * MINUTE
    # one prediction past the last window in every partition, so the watermark closes it
    results += [
        (p, end + 1, result(pipeline, f"closer{p}", end + 1, 0.1)) for p in range(partitions)
    ]

    def label(i: int, y: int) -> tuple[bytes, bytes]:
        return f"r{i}".encode(), orjson.dumps({"id": f"r{i}", "label": y})

    early: list[tuple[bytes, bytes]] = []
    late: list[tuple[bytes, bytes]] = []
    for i in rng.permutation(n).tolist():
        if fate[i] < 0.1:
            continue
        out = early if fate[i] < 0.25 else late
        if 0.25 <= fate[i] < 0.35:
            out.append(label(i, int(1 - truth[i])))  # wrong first, corrected below
        out.append(label(i, int(truth[i])))
    expected = []
    for w in range(windows):
        sel = (times >= t0 + w * MINUTE) & (times < t0 + (w + 1) * MINUTE)
        lab = sel & (fate >= 0.1)
        y, p = truth[lab], predicted[lab]
        precision, recall, f1, _ = precision_recall_fscore_support(
            y, p, average="binary", zero_division=0
        )
        expected.append(
            {
                "window_start": t0 + w * MINUTE,
                "predictions": int(sel.sum()),
                "labeled": int(lab.sum()),
                "metrics": {
                    "accuracy": float(accuracy_score(y, p)),
                    "precision": float(precision),
                    "recall": float(recall),
                    "f1": float(f1),
                    "tp": int(((y == 1) & (p == 1)).sum()),
                    "fn": int(((y == 1) & (p == 0)).sum()),
                },
            }
        )
    return Outcomes(results, early, late, expected, end)


def check_window(event: dict[str, Any], want: dict[str, Any]) -> None:
    """``event`` (a performance event) holds exactly the offline answer ``want``."""
    import pytest

    assert event["window_start"] == want["window_start"], event
    assert (event["predictions"], event["labeled"]) == (want["predictions"], want["labeled"])
    for metric, value in want["metrics"].items():
        assert event["metrics"][metric] == pytest.approx(value, abs=1e-9), (metric, event)


@dataclass
class Round:
    """What one round of a run sends: ``labels`` interleaved with ``results``, then ``tail``."""

    results: list[tuple[int, int, bytes]]
    labels: list[tuple[bytes, bytes]]
    tail: list[tuple[bytes, bytes]]


@dataclass
class Schedule:
    """``data``'s results in time order over rounds, its late labels spread over them.

    ``after_closed``: labels sent in a round after the one whose predictions close their
    prediction's window (or after the last window's closers); ``before_prediction``: labels
    sent before their prediction (the early ones and late ones sent in an earlier round).
    """

    rounds: list[Round]
    labels: int
    after_closed: int
    before_prediction: int


def schedule(data: Outcomes, rounds: int, after_closed: float, seed: int) -> Schedule:
    """Spread ``data.late`` over ``rounds`` rounds of ``data.results``: a share
    ``after_closed`` of the ids go to a round after their window closed, the others to any
    round (some before their prediction). The labels of one id go together, in order."""
    rng = np.random.default_rng(seed)
    n = len(data.results)
    cut = [n * k // rounds for k in range(rounds + 1)]
    round_of = np.searchsorted(np.array(cut[1:]), np.arange(n), side="right")
    times = np.array([ts for _, ts, _ in data.results], dtype=np.int64)
    t0 = int(times.min()) // MINUTE * MINUTE
    out = [Round(data.results[cut[k] : cut[k + 1]], [], []) for k in range(rounds)]
    by_id: dict[bytes, list[tuple[bytes, bytes]]] = {}
    for key, value in data.late:
        by_id.setdefault(key, []).append((key, value))
    after = before = 0
    for key, labels in by_id.items():
        i = int(key.decode()[1:])
        end = t0 + ((int(times[i]) - t0) // MINUTE + 1) * MINUTE
        closing = int(round_of[int(np.searchsorted(times, end, side="left"))])
        if rng.uniform() < after_closed:
            if closing + 1 < rounds:
                out[int(rng.integers(closing + 1, rounds))].labels.extend(labels)
            else:
                out[-1].tail.extend(labels)
            after += len(labels)
        else:
            k = int(rng.integers(0, rounds))
            out[k].labels.extend(labels)
            before += len(labels) if k < round_of[i] else 0
    total = len(data.early) + len(data.late)
    return Schedule(out, total, after, before + len(data.early))
