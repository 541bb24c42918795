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
