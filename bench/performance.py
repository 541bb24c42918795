"""Performance join and estimate: throughput, Redis memory, CBPE accuracy, side by side.

(a) join throughput   labels applied per second by ``PerformanceJoin`` on the real Redis,
                      micro-batches of ``--batch`` events (one MGET plus one script call per
                      batch) against the same engine fed one event at a time (two round trips
                      per event), on the same predictions, labels shuffled;
(b) Redis memory      bytes of every key of the join (``MEMORY USAGE``) after ``--pending``
                      predictions wait for their labels, scaled to 1 million;
(c) CBPE              a calibrated classifier (logistic in one feature) under covariate shift
                      (the feature's mean moves from 0 to 2 over the run), windows of
                      ``--window-rows`` predictions: mean absolute error of the estimated
                      accuracy against the realized one per window, for driftline's live
                      windowed estimate (calibrator fitted on a labelled reference) and for
                      NannyML's CBPE on the same reference and windows when it is installed
                      (in its own environment: ``--nannyml-python PATH``; nannyml 0.13
                      also needs ``statsmodels`` installed beside it); once with calibrated
                      scores, once with monotone miscalibrated ones (``p ** 3``).

Usage::

    python bench/performance.py                          # small sizes, well under a minute
    python bench/performance.py --labels 200000 --pending 1000000
    python bench/performance.py --nannyml-python /opt/nml/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import redis

from driftline.config import RedisSettings
from driftline.performance import BinaryEstimator, BinaryLayout, Calibrator
from driftline.streams.feedback import (
    Labels,
    MemoryJoinState,
    PerformanceJoin,
    Predictions,
    RedisJoinState,
)

T0 = 1_699_999_980_000
MIN = 60_000


def _join(state: Any, width_ms: int = 5 * MIN, horizon_ms: int = 7 * 86_400_000) -> PerformanceJoin:
    return PerformanceJoin(
        "bench",
        "quality",
        "sha256:bench",
        BinaryLayout(),
        BinaryEstimator(),
        state,
        width_ms=width_ms,
        interval_ms=width_ms,
        horizon_ms=horizon_ms,
        partitions=1,
        lateness_ms=0,
    )


def _predictions(n: int, rng: np.random.Generator, start: int = 0) -> Predictions:
    return Predictions(
        "bench.results",
        [f"r-{i}" for i in range(start, start + n)],
        np.zeros(n, dtype=np.int64),
        T0 + np.sort(rng.integers(0, 60 * MIN, n)),
        rng.uniform(size=n),
        np.zeros(n, dtype=np.int64),
        np.arange(start, start + n, dtype=np.int64),
    )


def _labels(ids: list[str], rng: np.random.Generator, offset0: int) -> Labels:
    n = len(ids)
    return Labels(
        "bench.feedback",
        ids,
        np.zeros(n, dtype=np.int64),
        rng.integers(0, 2, n).astype(np.float64),
        np.full(n, T0 + 90 * MIN, dtype=np.int64),
        np.zeros(n, dtype=np.int64),
        np.arange(offset0, offset0 + n, dtype=np.int64),
    )


def _slice(b: Any, lo: int, hi: int) -> Any:
    fields = {k: (v if k == "topic" else v[lo:hi]) for k, v in b.__dict__.items()}
    return type(b)(**fields)


def bench_join(client: redis.Redis, n: int, batch: int, per_event: int) -> dict[str, float]:
    rng = np.random.default_rng(1)
    out: dict[str, float] = {}
    for mode, size, count in (("batched", batch, n), ("per-event", 1, per_event)):
        prefix = f"bench:{uuid.uuid4().hex[:8]}"
        state = RedisJoinState(client, prefix, "bench", "quality", "b", 7 * 86_400_000)
        try:
            join = _join(state)
            preds = _predictions(count, rng)
            for lo in range(0, count, 5000):
                join.apply(_slice(preds, lo, min(count, lo + 5000)), None)
            ids = list(preds.ids)
            rng.shuffle(ids)
            labels = _labels(ids, rng, 0)
            t = time.perf_counter()
            for lo in range(0, count, size):
                join.apply(None, _slice(labels, lo, min(count, lo + size)))
            elapsed = time.perf_counter() - t
            assert join.counters()["joined"] == count
            out[mode] = count / elapsed
        finally:
            state.clear()
    return out


def bench_memory(client: redis.Redis, pending: int) -> tuple[float, int]:
    rng = np.random.default_rng(2)
    prefix = f"bench:{uuid.uuid4().hex[:8]}"
    state = RedisJoinState(client, prefix, "bench", "quality", "b", 7 * 86_400_000)
    try:
        join = _join(state)
        for lo in range(0, pending, 10_000):
            join.apply(_predictions(min(10_000, pending - lo), rng, lo), None)
        keys = list(client.scan_iter(match=state.base + ":*", count=5000))
        total = 0
        for lo in range(0, len(keys), 5000):
            pipe = client.pipeline(transaction=False)
            for k in keys[lo : lo + 5000]:
                pipe.memory_usage(k, samples=0)
            total += sum(int(x or 0) for x in pipe.execute())
        return total / pending, len(keys)
    finally:
        state.clear()


def _shifted_stream(
    n_ref: int, windows: int, rows: int, rng: np.random.Generator, power: float = 1.0
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    def draw(mean: np.ndarray) -> dict[str, np.ndarray]:
        x = rng.normal(mean, 1.0)
        p = 1.0 / (1.0 + np.exp(-(2.0 * x - 1.0)))  # the true probability
        y = (rng.uniform(size=x.size) < p).astype(np.float64)
        # power 1: calibrated scores; otherwise monotone but miscalibrated (p ** power)
        return {"x": x, "score": p**power, "y": y}

    ref = draw(np.zeros(n_ref))
    means = np.repeat(np.linspace(0.0, 2.0, windows), rows)
    live = draw(means)
    live["window"] = np.repeat(np.arange(windows), rows)
    return ref, live


def bench_cbpe(
    windows: int, rows: int, nannyml_python: str | None, power: float = 1.0
) -> tuple[float, float | None, str]:
    rng = np.random.default_rng(3)
    ref, live = _shifted_stream(5000, windows, rows, rng, power)
    threshold = 0.5**power
    cal = Calibrator.fit(ref["score"], ref["y"])
    join = PerformanceJoin(
        "bench",
        "quality",
        "sha256:bench",
        BinaryLayout(threshold=threshold),
        BinaryEstimator(threshold, cal),
        MemoryJoinState(),
        width_ms=MIN,
        interval_ms=MIN,
        horizon_ms=10**9,
        partitions=1,
        lateness_ms=0,
    )
    n = live["score"].size
    times = T0 + live["window"] * MIN + (np.arange(n) % rows) * (MIN // rows)
    ids = [f"r-{i}" for i in range(n)]
    zeros = np.zeros(n, dtype=np.int64)
    offs = np.arange(n, dtype=np.int64)
    join.apply(Predictions("r", ids, zeros, times, live["score"], zeros, offs), None)
    first = join.close(watermark=T0 + windows * MIN)  # the estimate, before any label
    join.confirm(first)
    join.apply(None, Labels("f", ids, zeros, live["y"], times + MIN, zeros, offs))
    final = join.close(watermark=T0 + windows * MIN)
    est = {e["window_end"]: e["estimated"]["accuracy"] for e in first.events}
    real = {e["window_end"]: e["metrics"]["accuracy"] for e in final.events}
    ends = sorted(real)
    ours = float(np.mean([abs(est[e] - real[e]) for e in ends]))
    if not nannyml_python:
        return ours, None, "not run (pass --nannyml-python PATH of an environment with nannyml)"
    theirs, note = _nannyml(nannyml_python, ref, live, rows, threshold, [real[e] for e in ends])
    return ours, theirs, note


_NANNYML = """
import json, sys, warnings
warnings.filterwarnings("ignore")
import numpy as np, pandas as pd, nannyml as nml
d = np.load(sys.argv[1])
thr = float(d["thr"])
ref = pd.DataFrame({"y_pred_proba": d["ref_score"], "y_pred": (d["ref_score"] >= thr).astype(int),
                    "y_true": d["ref_y"].astype(int)})
ana = pd.DataFrame({"y_pred_proba": d["score"], "y_pred": (d["score"] >= thr).astype(int)})
est = nml.CBPE(y_pred_proba="y_pred_proba", y_pred="y_pred", y_true="y_true",
               problem_type="classification_binary", metrics=["accuracy"],
               chunk_size=int(d["rows"])).fit(ref)
res = est.estimate(ana).filter(period="analysis").to_df()
print(json.dumps({"version": nml.__version__,
                  "acc": [float(v) for v in res[("accuracy", "value")].tolist()]}))
"""


def _nannyml(
    python: str,
    ref: dict[str, np.ndarray],
    live: dict[str, np.ndarray],
    rows: int,
    threshold: float,
    realized: list[float],
) -> tuple[float | None, str]:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data.npz"
        np.savez(
            data,
            ref_score=ref["score"],
            ref_y=ref["y"],
            score=live["score"],
            thr=threshold,
            rows=rows,
        )
        script = Path(tmp) / "nml.py"
        script.write_text(_NANNYML)
        proc = subprocess.run(
            [python, str(script), str(data)], capture_output=True, text=True, timeout=600
        )
    if proc.returncode != 0:
        return None, f"failed: {proc.stderr.strip().splitlines()[-1:]}"
    doc = json.loads(proc.stdout.strip().splitlines()[-1])
    acc = doc["acc"][: len(realized)]
    if len(acc) != len(realized):
        return None, f"nannyml returned {len(acc)} chunks for {len(realized)} windows"
    return float(np.mean(np.abs(np.array(acc) - np.array(realized)))), f"nannyml {doc['version']}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--labels", type=int, default=20_000, help="labels applied in (a)")
    ap.add_argument("--batch", type=int, default=1000, help="micro-batch size in (a)")
    ap.add_argument("--per-event", type=int, default=2_000, help="labels of the per-event run")
    ap.add_argument("--pending", type=int, default=50_000, help="pending predictions in (b)")
    ap.add_argument("--windows", type=int, default=30, help="windows in (c)")
    ap.add_argument("--window-rows", type=int, default=2_000, help="predictions per window in (c)")
    ap.add_argument(
        "--nannyml-python",
        default=os.environ.get("NANNYML_PYTHON"),
        help="python of an environment with nannyml installed (or $NANNYML_PYTHON)",
    )
    a = ap.parse_args(argv)
    client = redis.Redis.from_url(RedisSettings().redis_url.get_secret_value())
    client.ping()

    rates = bench_join(client, a.labels, a.batch, a.per_event)
    print(
        f"(a) join: {rates['batched']:,.0f} labels/s in batches of {a.batch} "
        f"(one script call each) vs {rates['per-event']:,.0f}/s one at a time"
    )
    per, keys = bench_memory(client, a.pending)
    print(
        f"(b) memory: {per:.0f} bytes per pending prediction ({keys:,} keys for {a.pending:,}), "
        f"{per * 1e6 / 2**20:,.0f} MiB per 1,000,000"
    )
    cbpe = {}
    for label, power in (("calibrated", 1.0), ("miscalibrated (score = p^3)", 3.0)):
        ours, theirs, note = bench_cbpe(a.windows, a.window_rows, a.nannyml_python, power)
        cbpe[label] = (ours, theirs)
        print(
            f"(c) cbpe, {label}: MAE of estimated vs realized accuracy over {a.windows} "
            f"windows of {a.window_rows:,}: driftline {ours:.5f}; NannyML "
            + ("-" if theirs is None else f"{theirs:.5f}")
            + f" ({note})"
        )
    ratio = rates["batched"] / rates["per-event"]
    print(f"goal join batched/per-event: {ratio:.1f} (target >= 10)")
    print(f"goal join throughput: {rates['batched']:,.0f} labels/s (target >= 20,000)")
    mib = per * 1e6 / 2**20
    print(f"goal redis memory per 1M pending predictions: {mib:,.0f} MiB (target <= 256)")
    for label, (ours, theirs) in cbpe.items():
        if theirs is not None:
            print(
                f"goal cbpe MAE {label} vs NannyML: {ours:.5f} vs {theirs:.5f} "
                "(target <= NannyML's)"
            )
        else:
            print(f"goal cbpe MAE {label}: {ours:.5f} (target <= 0.02; NannyML not run)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
