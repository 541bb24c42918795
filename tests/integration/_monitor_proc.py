"""Run the faust monitor in a process of its own, on pipelines given as JSON (no control plane).

``python _monitor_proc.py CONFIG.json`` where the config holds ``topic_prefix``, ``key_prefix``,
``group``, ``pipelines``: ``[{name, partitions, lateness_ms, alerts: [{name, when, for_ms,
repeat_ms}], assays: [{name, iopath, baseline, width_ms, interval_ms, metric, thresholds,
raise_in_compare}]}]``,
and optionally ``fail_first_batch`` or ``fail_first_tick`` (raise on the first batch or
housekeeping tick, as a bug would), ``resume_flow_after_first_batch`` (faust resumes its flow
right after the first fetch of a results topic is handed over, as its recovery does when a
fetch lands at the end of a rebalance) and ``metrics_port`` (serve ``/metrics`` there).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from driftline.config import KafkaSettings, MonitorSettings, RedisSettings, Settings
from driftline.detectors import Baseline
from driftline.expressions import alert_condition, parse
from driftline.streams._engine import AlertPlan, AssayPlan, DetectorBaseline, PipelineEngine
from driftline.streams._faust_app import create_app
from driftline.streams.monitor import Monitor
from driftline.streams.state import RedisState


class _NoControl:
    def snapshot(self) -> dict[str, Any]:
        return {}

    def poll(self, timeout: float = 0.0) -> list[Any]:
        return []


class _RaisingBaseline(DetectorBaseline):
    """Stands for a detector bug: compare raises on every window."""

    def compare_counts(self, fine_counts: Any) -> Any:
        raise FloatingPointError("injected detector failure")


def engine_from(conf: dict[str, Any], pipe: dict[str, Any], monitor: Monitor) -> PipelineEngine:
    alerts = [
        AlertPlan(
            a["name"],
            alert_condition(parse(a["when"])),
            a.get("for_ms", 0),
            a.get("repeat_ms", 0),
            "critical",
            ("stdout",),
        )
        for a in pipe.get("alerts", [])
    ]
    assays = [
        AssayPlan(
            y["name"],
            parse(y["iopath"]),
            (_RaisingBaseline if y.get("raise_in_compare") else DetectorBaseline)(
                Baseline.from_values(np.asarray(y["baseline"], dtype=float)),
                y["metric"],
                y.get("thresholds"),
            ),
            y["width_ms"],
            y["interval_ms"],
            y["metric"],
        )
        for y in pipe.get("assays", [])
    ]
    state = RedisState(monitor.client, conf["key_prefix"], pipe["name"])
    return PipelineEngine(
        pipe["name"],
        "sha256:test",
        ["m"],
        alerts,
        assays,
        state,
        pipe["partitions"],
        pipe.get("lateness_ms", 0),
    )


def main(path: str) -> None:
    import faust

    conf = orjson.loads(Path(path).read_bytes())
    settings = Settings(
        kafka=KafkaSettings(topic_prefix=conf["topic_prefix"]),
        redis=RedisSettings(key_prefix=conf["key_prefix"]),
    )
    ms = MonitorSettings(
        monitor_group=conf["group"],
        monitor_datadir=Path(conf["datadir"]),
        monitor_idle_close_ms=conf.get("idle_close_ms", 3_600_000),
        monitor_rebuild_lookback_ms=conf.get("lookback_ms"),
        monitor_batch_size=conf.get("batch_size", 5000),
    )
    if conf.get("metrics_port"):
        from driftline.metrics import start_metrics_server

        start_metrics_server(int(conf["metrics_port"]), "127.0.0.1")
    monitor = Monitor(settings, ms)
    for pipe in conf["pipelines"]:
        monitor.watch(engine_from(conf, pipe, monitor))
    handle, seen = monitor.handle, set()

    fail = [bool(conf.get("fail_first_batch"))]

    def traced(topic: str, records: Any) -> Any:
        for p in {r[0] for r in records} - seen:
            seen.add(p)
            print(f"handling partition {p}", flush=True)
        if fail[0]:  # stands for a bug met on one batch
            fail[0] = False
            raise RuntimeError("injected failure")
        return handle(topic, records)

    monitor.handle = traced  # type: ignore[method-assign]
    if conf.get("fail_first_tick"):
        tick = monitor.tick
        ticks = [0]

        def failing_tick() -> None:
            ticks[0] += 1
            if ticks[0] == 1:  # stands for a bug met in housekeeping
                raise RuntimeError("injected failure in housekeeping")
            tick()

        monitor.tick = failing_tick  # type: ignore[method-assign]
    app = create_app(monitor, follower=_NoControl())
    if conf.get("resume_flow_after_first_batch"):
        sink, resumed = app.consumer.batch_sink, [False]

        async def sink_then_resume(batch: Any) -> None:
            await sink(batch)
            if not resumed[0] and any(t in monitor.by_topic for t in batch.rows):
                resumed[0] = True
                app.flow_control.resume()
                print("flow resumed after the first batch", flush=True)

        app.consumer.batch_sink = sink_then_resume

    def assigned(_app: Any, assigned: Any, **_: Any) -> None:
        mine = sorted(tp.partition for tp in assigned if tp.topic in monitor.by_topic)
        print(f"assigned results partitions {mine}", flush=True)

    app.on_partitions_assigned.connect(assigned)
    faust.Worker(app, loglevel="warning").execute_from_commandline()


if __name__ == "__main__":
    main(sys.argv[1])
