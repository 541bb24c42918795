"""Run alibi-detect and Evidently on the benchmark's windows; print JSON on stdout.

Runs inside the separate peers environment (its dependencies clash with driftline's), so it
imports nothing from driftline. Usage: ``run_peers.py [--only=alibi|evidently] draw0.npz
[draw1.npz ...]``, one .npz per independent draw, each written by bench/detection.py with, per
scenario, ``base__<scenario>`` (baseline values) and ``win__<scenario>__<size>`` (windows as
rows), plus ``kinds`` (JSON: scenario -> "numeric" | "categorical"). Output: ``{"results":
{peer: {scenario: {size: {"alerts": [[bool per window] per draw], "seconds": mean per
window}}}}, "errors": {peer: reason}}``.
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
warnings.filterwarnings("ignore")


def _record(res, scenario, size, flags, seconds):
    rec = res.setdefault(scenario, {}).setdefault(size, {"alerts": [], "seconds": []})
    rec["alerts"].append(flags)
    rec["seconds"].append(seconds)


def _alibi(draws, kinds, out, errors):
    try:
        from alibi_detect.cd import ChiSquareDrift, KSDrift
    except Exception as exc:  # report, never hide
        errors["alibi-detect"] = f"import failed: {exc!r}"
        return
    for p_val in (0.05, 0.001):
        name = f"alibi KSDrift/ChiSquareDrift p_val={p_val}"
        res = out.setdefault(name, {})
        for data in draws:
            for scenario, kind in kinds.items():
                base = data[f"base__{scenario}"].reshape(-1, 1)
                cls = ChiSquareDrift if kind == "categorical" else KSDrift
                det = cls(base.astype("float64"), p_val=p_val)
                for key in data.files:
                    if not key.startswith(f"win__{scenario}__"):
                        continue
                    windows = data[key]
                    t0 = time.perf_counter()
                    flags = [
                        bool(det.predict(w.reshape(-1, 1))["data"]["is_drift"]) for w in windows
                    ]
                    dt = (time.perf_counter() - t0) / len(windows)
                    _record(res, scenario, key.rsplit("__", 1)[1], flags, dt)


def _evidently(draws, kinds, out, errors):
    try:
        import pandas as pd
        from evidently import DataDefinition, Dataset, Report
        from evidently.metrics import ValueDrift
    except Exception as exc:
        errors["evidently"] = f"import failed: {exc!r}"
        return
    name = "evidently ValueDrift (default test)"
    res = out.setdefault(name, {})
    for data in draws:
        for scenario, kind in kinds.items():
            definition = (
                DataDefinition(categorical_columns=["x"])
                if kind == "categorical"
                else DataDefinition(numerical_columns=["x"])
            )
            ref = Dataset.from_pandas(pd.DataFrame({"x": data[f"base__{scenario}"]}), definition)
            for key in data.files:
                if not key.startswith(f"win__{scenario}__"):
                    continue
                windows = data[key]
                flags = []
                t0 = time.perf_counter()
                for w in windows:
                    cur = Dataset.from_pandas(pd.DataFrame({"x": w}), definition)
                    snap = Report([ValueDrift(column="x")]).run(cur, ref)
                    metric = snap.dict()["metrics"][0]
                    method = str(metric["config"].get("method", ""))
                    threshold = float(metric["config"].get("threshold", 0.05))
                    value = float(metric["value"])
                    # p-value tests alert below their threshold, distances at or above it
                    is_p = "p_value" in method
                    flags.append(value < threshold if is_p else value >= threshold)
                dt = (time.perf_counter() - t0) / len(windows)
                _record(res, scenario, key.rsplit("__", 1)[1], flags, dt)


def main() -> None:
    import numpy as np

    args = sys.argv[1:]
    only = None
    if args and args[0].startswith("--only="):
        only = args.pop(0).split("=", 1)[1]
    runners = {"alibi": _alibi, "evidently": _evidently}
    if only is not None and only not in runners:
        sys.exit(f"--only: {only!r} is not one of {', '.join(runners)}")
    draws = [np.load(path) for path in args]
    if not draws:
        sys.exit("usage: run_peers.py [--only=alibi|evidently] draw0.npz [draw1.npz ...]")
    kinds = json.loads(str(draws[0]["kinds"]))
    out: dict = {}
    errors: dict = {}
    for group, run in runners.items():
        if only in (None, group):
            run(draws, kinds, out, errors)
    for per_scenario in out.values():
        for per_size in per_scenario.values():
            for rec in per_size.values():
                rec["seconds"] = sum(rec["seconds"]) / len(rec["seconds"])
    json.dump({"results": out, "errors": errors}, sys.stdout)


if __name__ == "__main__":
    main()
