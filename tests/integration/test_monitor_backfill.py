"""History and intermittent sources: a pipeline's watermark comes from its own events.

A fresh pipeline whose monitor idles closes nothing; results 3 days and 1 hour old then get
every window, alert transition and assay result, and ``replay --audit`` over the range finds
no difference. An event dated in the year 3000 is refused (``time_out_of_range``) and neither
stops the monitor nor makes later events late; replay survives it too.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from driftline.config import KafkaSettings, MonitorSettings, RedisSettings, Settings
from driftline.kafka.offsets import end_offsets
from driftline.models import inspect_model
from driftline.spec import PipelineBuilder
from driftline.streams._build import read_range
from driftline.streams._engine import Batch
from driftline.streams.control import ensure_topics
from driftline.streams.monitor import Monitor
from driftline.streams.replay import audit, replay

from ._monitor_helpers import produce, read_all

pytestmark = pytest.mark.integration

MODEL = Path(__file__).resolve().parents[2] / "examples" / "fraud" / "models" / "ccfraud.onnx"
MINUTE = 60_000
YEAR_3000 = 32_503_680_000_000


def _canonical(name: str, partitions: int) -> dict[str, Any]:
    m = inspect_model(MODEL, "ccfraud")
    return (
        PipelineBuilder(name)
        .add_model_step(m)
        .add_alert("burst", "count(ccfraud.outputs[0][0] > 0.9, '1m', '1m') >= 3")
        .add_assay(
            "drift",
            "ccfraud.outputs[0][0]",
            baseline=list(np.linspace(0.0, 0.5, 200)),
            window={"width": "2m", "interval": "1m"},
            thresholds={"warning": 0.1, "alert": 0.25},
        )
        .set_options(partitions=partitions, lateness="5s")
        .build()
        .to_canonical()
    )


def _doc(t: int, v: float) -> bytes:
    return orjson.dumps({"time": t, "outputs": {"ccfraud": [[v]]}, "inputs": []})


def _stretch(start: int, partitions: int) -> list[tuple[int, bytes, int]]:
    """Five minutes of results from ``start``; minute 2 has five scores above 0.9."""
    rows = []
    for minute in range(5):
        for j in range(30):
            t = start + minute * MINUTE + j * 1000
            v = 0.97 if minute == 2 and j < 5 else 0.015 * j
            rows.append((j % partitions, _doc(t, v), t))
    return rows


def _feed(monitor: Monitor, settings: Settings, topic: str, start: dict[int, int]) -> None:
    """Read the topic from ``start`` to its end and hand it to the monitor, as faust would."""
    stop = end_offsets(settings, topic, start.keys())

    def on_batch(b: Batch) -> None:
        rows = list(zip(b.partitions.tolist(), b.offsets.tolist(), b.values, strict=True))
        monitor.handle(topic, rows)

    read_range(settings, topic, start, stop, on_batch)
    start.update(stop)


def _idle(monitor: Monitor, name: str, seconds: float) -> None:
    """Let the monitor see ``seconds`` of wall time pass without events."""
    w = monitor.pipelines[name]
    w.last_event_wall -= 3600
    monitor.tick()  # first look at Redis: progress, so not idle yet
    w.last_event_wall -= seconds
    monitor.tick()


def test_backfills_hours_and_days_old_get_every_window_and_replay_agrees(  # type: ignore[no-untyped-def]
    topic_prefix, redis_prefix
):
    k = KafkaSettings(topic_prefix=topic_prefix)
    results = k.topic("edge", "results")
    ensure_topics(k, [results], partitions=2)
    ensure_topics(k, [k.topic("assays"), k.topic("notifications")], partitions=1)
    settings = Settings(kafka=k, redis=RedisSettings(key_prefix=redis_prefix))
    monitor = Monitor(settings, MonitorSettings(monitor_idle_close_ms=100))
    conf = k.client_config()
    now = int(time.time() * 1000)
    days_old = now - 3 * 24 * 3600_000 - (now % MINUTE)
    hour_old = now - 3600_000 - (now % MINUTE)
    try:
        monitor.apply_spec("edge", _canonical("edge", 2))
        # a fresh pipeline idling for an hour closes nothing
        monitor.tick()
        _idle(monitor, "edge", 3600)
        assert read_all(conf, k.topic("assays"), timeout=2) == []
        offsets = {0: 0, 1: 0}
        old_rows = _stretch(days_old, 2)
        produce(conf, results, old_rows, txid=f"{topic_prefix}-a")
        _feed(monitor, settings, results, offsets)
        _idle(monitor, "edge", 600)  # ten quiet minutes close the three-day-old windows
        new_rows = _stretch(hour_old, 2)
        produce(conf, results, new_rows, txid=f"{topic_prefix}-b")
        _feed(monitor, settings, results, offsets)
        _idle(monitor, "edge", 600)

        assays = [a for a in read_all(conf, k.topic("assays")) if a["assay"] == "drift"]
        # every minute with data is in two 2-minute windows: 6 windows per 5-minute stretch
        per_window = Counter[int]()
        for _p, _v, t in old_rows + new_rows:
            end = t - t % MINUTE + MINUTE
            per_window[end] += 1
            per_window[end + MINUTE] += 1
        assert sorted((a["window_end"], a["count"]) for a in assays) == sorted(per_window.items())
        notes = read_all(conf, k.topic("notifications"))
        burst = [(n["state"], n["at"]) for n in notes if n["alert"] == "burst"]
        assert burst == [
            ("firing", days_old + 3 * MINUTE),
            ("resolved", days_old + 4 * MINUTE),
            ("firing", hour_old + 3 * MINUTE),
            ("resolved", hour_old + 4 * MINUTE),
        ]
        assert not read_all(conf, k.topic("edge", "late"), timeout=2)

        # from the start of the first window holding data to past the last one
        result = replay(settings, _canonical("edge", 2), days_old - MINUTE, hour_old + 7 * MINUTE)
        report = audit(settings, result)
        assert report.differences == [], [
            (d.key, d.what, d.live, d.replay) for d in report.differences
        ]
        assert report.compared_assays == len(assays)
        assert report.compared_notifications == len(notes)  # burst and drift transitions
    finally:
        monitor.close_all()


def test_an_event_in_the_year_3000_is_refused_and_changes_nothing(  # type: ignore[no-untyped-def]
    topic_prefix, redis_prefix
):
    k = KafkaSettings(topic_prefix=topic_prefix)
    results = k.topic("far", "results")
    ensure_topics(k, [results], partitions=1)
    ensure_topics(k, [k.topic("assays"), k.topic("notifications")], partitions=1)
    settings = Settings(kafka=k, redis=RedisSettings(key_prefix=redis_prefix))
    monitor = Monitor(settings, MonitorSettings(monitor_idle_close_ms=100))
    conf = k.client_config()
    now = int(time.time() * 1000)
    t0 = now - 20 * MINUTE - now % MINUTE
    try:
        monitor.apply_spec("far", _canonical("far", 1))
        rows = _stretch(t0, 1)
        # the poisoned event sits between two stretches (stamped like its neighbours, as a
        # worker stamps a result whose time it could not trust)
        poisoned = [(0, _doc(YEAR_3000, 0.1), t0 + 5 * MINUTE)]
        later = _stretch(t0 + 10 * MINUTE, 1)
        produce(conf, results, rows + poisoned + later, txid=f"{topic_prefix}-a")
        _feed(monitor, settings, results, {0: 0})
        _idle(monitor, "far", 600)
        dead = read_all(conf, k.topic("far", "deadletter"))
        assert [d["time"] for d in dead] == [YEAR_3000]
        assert not read_all(conf, k.topic("far", "late"), timeout=2)  # later events are on time
        assays = read_all(conf, k.topic("assays"))
        ends = sorted(a["window_end"] - t0 for a in assays)
        assert ends == [m * MINUTE for m in (1, 2, 3, 4, 5, 6, 11, 12, 13, 14, 15, 16)]
        # replay over a range holding the poisoned record survives it, and agrees
        result = replay(settings, _canonical("far", 1), t0, t0 + 17 * MINUTE)
        assert result.dead == 1
        assert audit(settings, result).differences == []
    finally:
        monitor.close_all()
