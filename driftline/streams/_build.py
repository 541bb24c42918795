"""Building a pipeline's monitor engine from its canonical spec, with its baselines.

What needs Kafka and Redis to compile a deployed spec into a running
:class:`~driftline.streams._engine.PipelineEngine`: the results topic's partition count and
a baseline taken from the pipeline's own history (``baseline: {from, to}``). The spec's
meaning itself comes from :mod:`driftline.compile`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import redis
from prometheus_client import Gauge

from driftline.compile import plans_from_spec
from driftline.config import Settings
from driftline.kafka.offsets import end_offsets, offsets_for_time, read_records, topic_partitions
from driftline.streams._batch import Batch
from driftline.streams._engine import PipelineEngine
from driftline.streams.state import RedisState

__all__ = ["build_engine", "history_baseline", "read_range", "version_of"]

ASSAY_SCORE = Gauge(
    "driftline_assay_score", "Score of the last closed window", ["pipeline", "assay"]
)
ASSAY_STATUS = Gauge("driftline_assay_status", "0 ok, 1 warning, 2 alert", ["pipeline", "assay"])


def _metric(name: str, value: float, labels: dict[str, str]) -> None:
    if name == "assay_score":
        ASSAY_SCORE.labels(**labels).set(value)
    elif name == "assay_status":
        ASSAY_STATUS.labels(**labels).set(value)


def read_range(
    settings: Settings,
    topic: str,
    start: Mapping[int, int],
    stop: Mapping[int, int],
    on_batch: Callable[[Batch], None],
    batch_size: int = 5000,
    timeout_s: float = 60.0,
    stop_at_ms: int | None = None,
) -> int:
    """:func:`~driftline.kafka.offsets.read_records` of a results topic, in engine batches."""

    def on_records(rows: list[tuple[int, int, bytes]]) -> None:
        on_batch(Batch.of(topic, rows))  # Batch.of puts each partition's offsets in order

    return read_records(settings, topic, start, stop, on_records, batch_size, timeout_s, stop_at_ms)


# ---------------------------------------------------------------------------- the monitor


def build_engine(
    settings: Settings,
    canonical: Mapping[str, Any],
    client: redis.Redis,
    key_prefix: str | None = None,
    base_dir: Path | None = None,
) -> tuple[PipelineEngine, Any]:
    """Engine for a deployed pipeline's canonical spec (plans, baselines, partition count)."""
    from driftline.spec import load_baseline_values, spec_from_canonical
    from driftline.streams.control import spec_version

    spec = spec_from_canonical(dict(canonical))
    version = spec_version(dict(canonical))
    results = settings.kafka.topic(spec.name, "results")
    prefix = key_prefix or settings.redis.key_prefix
    state = RedisState(client, prefix, spec.name)

    def baseline_values(assay: Any) -> np.ndarray:
        values = load_baseline_values(assay, base_dir or Path.cwd(), settings.model_store)
        if values is not None:
            return np.asarray(values, dtype=np.float64)
        return history_baseline(settings, spec, assay, state, version)

    alerts, assays = plans_from_spec(spec, baseline_values)
    lateness = int(getattr(spec.options, "lateness_ms", 5000))
    engine = PipelineEngine(
        spec.name,
        version,
        [m.name for m in spec.models],
        alerts,
        assays,
        state,
        topic_partitions(settings, results),
        lateness,
        on_metrics=_metric,
        tensor_names=spec.tensor_names(),
    )
    return engine, spec


def history_baseline(
    settings: Settings, spec: Any, assay: Any, state: RedisState, version: str
) -> np.ndarray:
    """Baseline values from ``{from, to}`` of the pipeline's results, cached per spec version."""
    import orjson

    from driftline.expressions import evaluate, variables
    from driftline.streams._decode import build_tensors, decode_results

    cache = ("baseline", assay.name, version)
    cached = state.get(*cache)
    if cached is not None:
        return np.asarray(orjson.loads(cached), dtype=np.float64)
    t1, t2 = _time_range(assay.baseline)
    topic = settings.kafka.topic(spec.name, "results")
    parts = range(topic_partitions(settings, topic))
    start = offsets_for_time(settings, topic, parts, t1)
    stop = end_offsets(settings, topic, parts)  # ended at t2 by record time, see read_range
    chunks: list[np.ndarray] = []
    needed = {(v.model, v.kind) for v in variables(assay.iopath)}
    names = spec.tensor_names()

    def on_batch(batch: Batch) -> None:
        docs, ok, _ = decode_results(batch.values, any(kind == "inputs" for _, kind in needed))
        rows = [d for d, good in zip(docs, ok, strict=True) if d and good and t1 <= d.time < t2]
        if rows:
            tensors = build_tensors(rows, needed, names)
            # tensor names (m.outputs["scores"]) resolve as in the live engine
            chunks.append(np.asarray(evaluate(assay.iopath, tensors, names), dtype=np.float64))

    read_range(settings, topic, start, stop, on_batch, stop_at_ms=t2)
    values = np.concatenate(chunks) if chunks else np.zeros(0)
    if values.size == 0:
        from driftline.errors import SpecError

        raise SpecError(
            f"assays.{assay.name}.baseline",
            f"no results of pipeline {spec.name!r} between {t1} and {t2}; "
            "pick a range with traffic or give a file",
        )
    state.set(orjson.dumps(values.tolist()), *cache, ttl_s=30 * 24 * 3600)
    return values


def version_of(canonical: Mapping[str, Any]) -> str:
    from driftline.streams.control import spec_version

    try:
        return spec_version(dict(canonical))
    except Exception:  # a spec too broken to hash is still named in the error event
        return "unknown"


def _time_range(baseline: Mapping[str, Any]) -> tuple[int, int]:
    from datetime import datetime

    def ms(x: Any) -> int:
        if isinstance(x, int | float):
            return int(x)
        return int(datetime.fromisoformat(str(x).replace("Z", "+00:00")).timestamp() * 1000)

    return ms(baseline["from"]), ms(baseline["to"])
