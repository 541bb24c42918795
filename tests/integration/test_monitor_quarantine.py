"""One pipeline's fault never stops the others: quarantine, error event, resume on redeploy.

Two pipelines on one monitor (real Kafka and Redis): one whose baseline raises in the
detector. The healthy one's windows and alerts are exact, the failing one emits one ``error``
event and one ``kind="error"`` notification to its targets, its later batches are skipped
until a fixed spec version is deployed, and then it resumes.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import REGISTRY

from driftline import compile as compile_mod
from driftline.config import KafkaSettings, MonitorSettings, RedisSettings, Settings
from driftline.models import inspect_model
from driftline.spec import PipelineBuilder
from driftline.streams._engine import DetectorBaseline
from driftline.streams.control import ensure_topics
from driftline.streams.monitor import Monitor

from ._monitor_helpers import read_all

pytestmark = pytest.mark.integration

MODEL = Path(__file__).resolve().parents[2] / "examples" / "fraud" / "models" / "ccfraud.onnx"
BROKEN_WARNING = 0.123  # the assay threshold that marks the broken spec version


def _canonical(name: str, warning: float, baseline: Any = None) -> dict[str, Any]:
    m = inspect_model(MODEL, "ccfraud")
    b = (
        PipelineBuilder(name)
        .add_model_step(m)
        .add_alert(
            "burst",
            "count(ccfraud.outputs[0][0] > 0.9, '2s', '1s') >= 3",
            ["email:ops@example.com"],
        )
        .add_assay(
            "drift",
            "ccfraud.outputs[0][0]",
            baseline=baseline or list(np.linspace(0.0, 0.5, 200)),
            window={"width": "1s", "interval": "1s"},
            thresholds={"warning": warning, "alert": 0.5},
            notify=["webhook:pager"],
        )
        .set_options(partitions=1, lateness="0s")
    )
    return b.build().to_canonical()


class _Raising(DetectorBaseline):
    def compare_counts(self, fine_counts: np.ndarray) -> Any:
        raise FloatingPointError("the detector met a baseline it cannot use")


@pytest.fixture
def broken_baselines(monkeypatch):  # type: ignore[no-untyped-def]
    """Assays of the broken version get a baseline that raises in compare (a detector bug)."""
    real = compile_mod._baseline_for

    def baseline_for(assay: Any, values: np.ndarray) -> DetectorBaseline:
        b = real(assay, values)
        if (getattr(assay, "thresholds", None) or {}).get("warning") == BROKEN_WARNING:
            return _Raising(b.baseline, b.metric, b.thresholds)
        return b

    monkeypatch.setattr(compile_mod, "_baseline_for", baseline_for)


def _rows(t0: int, seconds: range, first: int = 0) -> list[tuple[int, int, bytes]]:
    import orjson

    rows = []
    for s in seconds:
        for j in range(10):
            v = 0.95 if s == 3 and j < 4 else 0.05 * (j % 10)
            doc = {"time": t0 + 1000 * s + 10 * j, "outputs": {"ccfraud": [[v]]}, "inputs": []}
            rows.append((0, first + len(rows), orjson.dumps(doc)))
    return rows


def _sample(name: str, pipeline: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"pipeline": pipeline})


def test_a_failing_pipeline_is_quarantined_and_the_other_stays_exact(  # type: ignore[no-untyped-def]
    topic_prefix, redis_prefix, broken_baselines
):
    k = KafkaSettings(topic_prefix=topic_prefix)
    ensure_topics(k, [k.topic("good", "results"), k.topic("bad", "results")], partitions=1)
    ensure_topics(k, [k.topic("assays"), k.topic("notifications")], partitions=1)
    settings = Settings(kafka=k, redis=RedisSettings(key_prefix=redis_prefix))
    monitor = Monitor(settings, MonitorSettings(monitor_idle_close_ms=3_600_000))
    conf = k.client_config()
    t0 = (int(time.time()) - 600) * 1000
    try:
        monitor.apply_spec("good", _canonical("good", 0.1))
        monitor.apply_spec("bad", _canonical("bad", BROKEN_WARNING))
        assert set(monitor.pipelines) == {"good", "bad"}
        good, bad = k.topic("good", "results"), k.topic("bad", "results")
        errors_before = _sample("driftline_monitor_pipeline_errors_total", "bad") or 0.0

        # the bad pipeline meets its error on its first close; the good one goes on
        assert monitor.handle(bad, _rows(t0, range(0, 6))) is None
        first = _rows(t0, range(0, 6))
        closed = monitor.handle(good, first)
        assert closed is not None
        assert [(a.window_end - t0, a.count) for a in closed.assays] == [
            (1000 * s, 10) for s in range(1, 6)
        ]
        # later batches: bad skipped, good exact
        assert monitor.handle(bad, _rows(t0, range(6, 10), first=60)) is None
        closed = monitor.handle(good, _rows(t0, range(6, 10), first=60))
        assert closed is not None
        assert [a.window_end - t0 for a in closed.assays] == [6000, 7000, 8000, 9000]
        assert "bad" in monitor.quarantined and "bad" not in monitor.pipelines
        assert bad in monitor.topics  # still read, and committed, so nothing piles up

        assays = read_all(conf, k.topic("assays"))
        errors = [a for a in assays if a["status"] == "error"]
        assert len(errors) == 1
        [err] = errors
        assert (err["pipeline"], err["assay"]) == ("bad", "drift")
        assert "pipeline 'bad', assay 'drift'" in err["detail"]
        assert "FloatingPointError: the detector met a baseline" in err["detail"]
        assert not [a for a in assays if a["pipeline"] == "bad" and a["status"] != "error"]
        good_windows = sorted(a["window_end"] - t0 for a in assays if a["pipeline"] == "good")
        assert good_windows == [1000 * s for s in range(1, 10)]

        notes = read_all(conf, k.topic("notifications"))
        [err_note] = [n for n in notes if n["kind"] == "error"]
        assert err_note["pipeline"] == "bad" and err_note["severity"] == "critical"
        assert err_note["notify"] == ["email:ops@example.com", "webhook:pager"]
        burst = [(n["state"], n["at"] - t0) for n in notes if n["kind"] == "alert"]
        assert burst == [("firing", 4000), ("resolved", 6000)]  # the good pipeline's alert

        assert _sample("driftline_monitor_pipeline_errors_total", "bad") == errors_before + 1
        assert _sample("driftline_monitor_quarantined", "bad") == 1.0

        # a fixed version resumes it, from the next batch on
        monitor.apply_spec("bad", _canonical("bad", 0.1))
        assert "bad" in monitor.pipelines and "bad" not in monitor.quarantined
        assert _sample("driftline_monitor_quarantined", "bad") == 0.0
        closed = monitor.handle(bad, _rows(t0, range(10, 13), first=100))
        assert closed is not None and closed.assays
        assert {a.status for a in closed.assays} <= {"ok", "warning", "alert"}
    finally:
        monitor.close_all()


def test_a_spec_whose_baseline_cannot_be_built_is_quarantined_at_deploy(  # type: ignore[no-untyped-def]
    topic_prefix, redis_prefix
):
    k = KafkaSettings(topic_prefix=topic_prefix)
    ensure_topics(k, [k.topic("hist", "results")], partitions=1)
    ensure_topics(k, [k.topic("assays"), k.topic("notifications")], partitions=1)
    settings = Settings(kafka=k, redis=RedisSettings(key_prefix=redis_prefix))
    monitor = Monitor(settings, MonitorSettings())
    try:
        # a history baseline over a range without traffic: the monitor cannot build it
        empty = {"from": 1_600_000_000_000, "to": 1_600_000_060_000}
        monitor.apply_spec("hist", _canonical("hist", 0.1, baseline=empty))
        assert "hist" in monitor.quarantined and "hist" not in monitor.pipelines
        assert k.topic("hist", "results") in monitor.topics
        [err] = read_all(k.client_config(), k.topic("assays"))
        assert err["status"] == "error" and err["pipeline"] == "hist"
        assert "no results of pipeline 'hist'" in err["detail"]
        # undeploying ends the quarantine and the topic is no longer read
        monitor.apply_spec("hist", None)
        assert not monitor.quarantined and k.topic("hist", "results") not in monitor.topics
    finally:
        monitor.close_all()


def test_the_faust_monitor_keeps_reading_and_committing_past_a_quarantined_pipeline(  # type: ignore[no-untyped-def]
    topic_prefix, redis_prefix, tmp_path
):
    import orjson
    from confluent_kafka import Consumer, TopicPartition

    from ._monitor_helpers import produce, result, start_monitor, stop, wait_for

    k = KafkaSettings(topic_prefix=topic_prefix)
    good, bad = k.topic("good", "results"), k.topic("bad", "results")
    ensure_topics(k, [good, bad], partitions=2)
    ensure_topics(k, [k.topic("assays"), k.topic("notifications")], partitions=1)
    baseline = np.linspace(0.0, 1.0, 200).tolist()

    def pipe(name: str, broken: bool) -> dict[str, Any]:
        return {
            "name": name,
            "partitions": 2,
            "alerts": [{"name": "burst", "when": "count(m.outputs[0][0] > 0.9, '1s', '1s') >= 3"}],
            "assays": [
                {"name": "drift", "iopath": "m.outputs[0][0]", "baseline": baseline,
                 "width_ms": 1000, "interval_ms": 1000, "metric": "psi",
                 "thresholds": {"warning": 0.1, "alert": 0.25}, "raise_in_compare": broken}
            ],
        }  # fmt: skip

    group = f"{topic_prefix}-monitor"
    config = tmp_path / "monitor.json"
    config.write_bytes(
        orjson.dumps(
            {"topic_prefix": topic_prefix, "key_prefix": redis_prefix, "group": group,
             "datadir": str(tmp_path / "faust"),
             "pipelines": [pipe("good", False), pipe("bad", True)]}
        )
    )  # fmt: skip
    t0 = (int(time.time()) // 10 - 60) * 10_000

    def rows(first_sec: int, secs: int) -> list[tuple[int, bytes]]:
        out = []
        for s in range(first_sec, first_sec + secs):
            for j in range(10):
                v = 0.95 if s == first_sec + 1 and j < 4 else 0.05 * j
                out.append((j % 2, result(t0 + 1000 * s + 10 * j, v, 100 * s + j)))
        return out

    conf = k.client_config()
    log = tmp_path / "monitor.log"
    proc = start_monitor(config, tmp_path, log)
    try:
        for part, secs in ((0, 5), (5, 5)):  # a second round after the quarantine
            for topic in (bad, good):
                produce(conf, topic, rows(part, secs), txid=f"{topic_prefix}-{topic}")
            last = t0 + 1000 * (part + secs - 1)
            wait_for(
                conf,
                k.topic("assays"),
                lambda got, last=last: any(
                    a["pipeline"] == "good" and a["window_end"] >= last for a in got
                ),
            )
        time.sleep(3)  # commits run once a second
    finally:
        stop(proc)
    text = log.read_text(errors="replace")
    assert proc.returncode in (0, -15), text  # stopped by us, never exited on its own
    assays = wait_for(conf, k.topic("assays"), lambda got: True, timeout=5)
    errors = [a for a in assays if a["status"] == "error"]
    assert [(a["pipeline"], a["assay"]) for a in errors] == [("bad", "drift")], text
    good_ends = sorted(a["window_end"] - t0 for a in assays if a["pipeline"] == "good")
    assert good_ends == [1000 * s for s in range(1, 10)]
    notes = wait_for(conf, k.topic("notifications"), lambda got: True, timeout=5)
    burst = sorted((n["pipeline"], n["state"], n["at"] - t0) for n in notes if n["kind"] == "alert")
    assert burst == [
        ("good", "firing", 2000), ("good", "firing", 7000),
        ("good", "resolved", 3000), ("good", "resolved", 8000),
    ]  # fmt: skip
    assert [n["pipeline"] for n in notes if n["kind"] == "error"] == ["bad"]
    assert text.count("is not monitored") == 1, text
    # the quarantined pipeline's offsets were committed past all of its records, like the
    # healthy one's: a restarted monitor reads nothing of either again
    c = Consumer({**conf, "group.id": group, "isolation.level": "read_committed"})
    try:
        for topic in (bad, good):
            committed = c.committed([TopicPartition(topic, p) for p in (0, 1)], timeout=10)
            assert all(tp.offset >= 50 for tp in committed), (topic, committed)
            c.assign(committed)
            assert sum(not m.error() for m in c.consume(1000, 3.0)) == 0, topic
    finally:
        c.close()
