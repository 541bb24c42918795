"""A random stream of predictions and labels for join tests, with its offline answer."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np

from driftline.performance import fold
from driftline.streams.feedback import Labels, PerformanceJoin, Predictions

T0 = 1_700_000_000_000
MIN = 60_000
RESULTS, FEEDBACK = "p.results", "p.feedback"


class Stream:
    """Random predictions and labels with offsets, as two topics of 2 partitions."""

    def __init__(self, seed: int, n: int = 600):
        rng = np.random.default_rng(seed)
        self.rng = rng
        self.ids = [f"r-{i}" for i in range(n)]
        self.rows = rng.integers(0, 2, n)
        self.times = T0 + np.sort(rng.integers(0, 20 * MIN, n))
        self.scores = rng.uniform(size=n)
        self.parts = rng.integers(0, 2, n)
        # labels: 85 % get one, 10 % of those a second (the last wins), 5 % unknown ids
        labelled = np.flatnonzero(rng.uniform(size=n) < 0.85)
        lab_idx = list(labelled) + list(rng.choice(labelled, len(labelled) // 10))
        rng.shuffle(lab_idx)
        self.label_rows: list[tuple[str, int, float, int]] = []
        for i in lab_idx:
            y = float(rng.uniform() < self.scores[i])
            delay = int(rng.integers(-2 * MIN, 15 * MIN))  # some before their prediction
            self.label_rows.append((self.ids[i], int(self.rows[i]), y, int(self.times[i]) + delay))
        for k in range(n // 20):
            self.label_rows.append((f"ghost-{k}", 0, 1.0, T0 + int(rng.integers(0, 20 * MIN))))
        self.label_parts = np.array([hash(r[0]) % 2 for r in self.label_rows])
        self.pred_off = {0: 0, 1: 0}
        self.lab_off = {0: 0, 1: 0}

    def prediction_batches(self, size: int) -> Iterator[Predictions]:
        n = len(self.ids)
        for s in range(0, n, size):
            sl = slice(s, min(n, s + size))
            parts = self.parts[sl]
            offs = []
            for p in parts:
                offs.append(self.pred_off[int(p)])
                self.pred_off[int(p)] += 1
            yield Predictions(
                RESULTS,
                self.ids[sl],
                self.rows[sl],
                self.times[sl],
                self.scores[sl],
                parts,
                np.array(offs),
            )

    def label_batches(self, size: int) -> Iterator[Labels]:
        rows = self.label_rows
        for s in range(0, len(rows), size):
            chunk = rows[s : s + size]
            parts = self.label_parts[s : s + size]
            offs = []
            for p in parts:
                offs.append(self.lab_off[int(p)])
                self.lab_off[int(p)] += 1
            yield Labels(
                FEEDBACK,
                [c[0] for c in chunk],
                np.array([c[1] for c in chunk]),
                np.array([c[2] for c in chunk]),
                np.array([c[3] for c in chunk]),
                parts,
                np.array(offs),
            )

    def offline(self, join: PerformanceJoin, ends: list[int]) -> dict[int, dict[str, Any]]:
        """Every window's metrics from the final label of each prediction."""
        last: dict[tuple[str, int], tuple[float, int]] = {}
        for ident, row, y, t in self.label_rows:
            last[(ident, row)] = (y, t)
        lay = join.layout
        bucket = self.times - self.times % join.interval_ms
        pi, pw = lay.prediction_entries(self.scores)
        joined = [
            i for i, k in enumerate(zip(self.ids, self.rows.tolist(), strict=True)) if k in last
        ]
        y = np.array([last[(self.ids[i], int(self.rows[i]))][0] for i in joined])
        lt = np.array([last[(self.ids[i], int(self.rows[i]))][1] for i in joined])
        li, lw = lay.label_entries(self.scores[joined], y, lt - self.times[joined])
        out = {}
        for end in ends:
            lo = end - join.width_ms
            vec = lay.zeros()
            sel = (bucket >= lo) & (bucket < end)
            if sel.any():
                vec += fold(np.zeros(sel.sum()), pi[sel], pw[sel], lay.size)[1][0]
            jsel = np.array([lo <= bucket[i] < end for i in joined], dtype=bool)
            if jsel.any():
                vec += fold(np.zeros(jsel.sum()), li[jsel], lw[jsel], lay.size)[1][0]
            out[end] = lay.metrics(vec)
        return out


def same(a: Any, b: Any) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if a is None or (isinstance(a, float) and math.isnan(a)):
        return b is None or (isinstance(b, float) and math.isnan(b))
    if isinstance(a, float) or isinstance(b, float):
        return b is not None and abs(a - b) <= 1e-9 * max(1.0, abs(b))
    return bool(a == b)


def run(join: PerformanceJoin, stream: Stream, seed: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    preds = list(stream.prediction_batches(40))
    labels = list(stream.label_batches(35))
    events: list[dict[str, Any]] = []
    while preds or labels:
        p = preds.pop(0) if preds and (not labels or rng.uniform() < 0.5) else None
        lab = labels.pop(0) if labels and (p is None or rng.uniform() < 0.5) else None
        join.apply(p, lab)
        if rng.uniform() < 0.3:
            join.apply(p, lab)  # redelivered: skipped
        if rng.uniform() < 0.5:
            closing = join.close()
            events += closing.events
            join.confirm(closing)
    closing = join.close(watermark=int(stream.times.max()) + 10 * MIN)
    events += closing.events
    join.confirm(closing)
    return events


def check_final(events: list[dict[str, Any]], stream: Stream, join: PerformanceJoin) -> None:
    """Each (window, revision) published once; the last revision of every window is exact."""
    latest: dict[int, dict[str, Any]] = {}
    seen = set()
    for e in events:
        key = (e["window_end"], e["revision"])
        assert key not in seen, f"revision {key} published twice"
        seen.add(key)
        if e["window_end"] not in latest or latest[e["window_end"]]["revision"] < e["revision"]:
            latest[e["window_end"]] = e
    ends = sorted(latest)
    assert ends == list(range(ends[0], ends[-1] + 1, join.interval_ms))
    first = int(stream.times.min())
    assert ends[0] == first - first % join.interval_ms + join.interval_ms
    want = stream.offline(join, ends)
    for end in ends:
        assert same(latest[end]["metrics"], want[end]), end
