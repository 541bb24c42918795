"""Feedback in and performance out on the real broker: the command bodies and the SDK calls."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from driftline import Client
from driftline.config import KafkaSettings, Settings
from driftline.errors import ConfigError, DriftlineError
from driftline.performance import BinaryEstimator, BinaryLayout
from driftline.sdk import Pipeline
from driftline.streams._feedback_io import Record, feedback_labels
from driftline.streams._outcomes_cli import cmd_feedback, cmd_performance, send_feedback
from driftline.streams.control import ensure_topics
from driftline.streams.feedback import Labels, MemoryJoinState, PerformanceJoin, Predictions

pytestmark = pytest.mark.integration

T0 = 1_699_999_980_000  # a minute boundary
MIN = 60_000


def _read(k: KafkaSettings, topic: str, n: int) -> list[tuple[bytes | None, bytes, int, int, int]]:
    c = Consumer(k.client_config(**{"group.id": f"read-{time.monotonic_ns()}"}))
    try:
        parts = list(c.list_topics(topic, timeout=10).topics[topic].partitions)
        c.assign([TopicPartition(topic, p, 0) for p in parts])
        out: list[Any] = []
        deadline = time.monotonic() + 20
        while len(out) < n and time.monotonic() < deadline:
            for m in c.consume(1000, 0.5):
                if m.error() is None:
                    out.append((m.key(), m.value(), m.partition(), m.offset(), m.timestamp()[1]))
        return out
    finally:
        c.close()


def test_feedback_file_and_sdk_rows_reach_the_feedback_topic(
    topic_prefix: str, tmp_path: Path
) -> None:
    k = KafkaSettings(topic_prefix=topic_prefix)
    topic = k.topic("fraud", "feedback")
    ensure_topics(k, [topic], partitions=3)
    labels = tmp_path / "labels.jsonl"
    lines = [orjson.dumps({"id": f"r-{i}", "label": i % 2}) for i in range(250)]
    labels.write_bytes(b"\n".join([*lines, b"not json", b""]))
    assert cmd_feedback(k, "fraud", str(labels), rate=5000) == 251
    pipeline = Pipeline(Client(Settings(kafka=k)), "fraud", {"name": "fraud"})
    assert pipeline.send_feedback([{"id": "r-1", "row": 0, "label": 0}]) == 1
    array = tmp_path / "labels.json"
    array.write_bytes(orjson.dumps([{"id": "r-2", "label": 1, "time": T0}]))
    assert pipeline.feedback_from_file(array) == 1
    got = _read(k, topic, 253)
    assert len(got) == 253
    # keyed by id: both labels of r-1 sit in one partition, in the order sent
    r1 = [(p, off, v) for key, v, p, off, _ in got if key == b"r-1"]
    assert len({p for p, _, _ in r1}) == 1
    assert [orjson.loads(v)["label"] for _, _, v in sorted(r1)] == [1, 0]
    # the join's reader takes them as they are, dead-lettering the malformed line
    records = [Record(topic, p, off, v, ts) for _, v, p, off, ts in got]
    batch, dead = feedback_labels(records)
    assert batch is not None and len(batch.ids) == 252
    assert [d.reason for d in dead] == ["malformed_json"]
    with pytest.raises(DriftlineError, match="does not exist; is pipeline 'nope' deployed"):
        send_feedback(k, "nope", [{"id": "a", "label": 1}])
    with pytest.raises(ConfigError, match="--rate"):
        send_feedback(k, "fraud", [], rate=0)
    with pytest.raises(ConfigError, match="no such file"):
        cmd_feedback(k, "fraud", str(tmp_path / "missing.jsonl"))


def test_performance_lists_latest_revisions_and_history(topic_prefix: str, capsys: Any) -> None:
    k = KafkaSettings(topic_prefix=topic_prefix)
    topic = k.topic("performance")
    ensure_topics(k, [topic], partitions=1)
    join = PerformanceJoin(
        "fraud",
        "quality",
        "sha256:x",
        BinaryLayout(),
        BinaryEstimator(),
        MemoryJoinState(),
        width_ms=MIN,
        interval_ms=MIN,
        horizon_ms=10**9,
        partitions=1,
    )
    one = np.array([0])
    join.apply(
        Predictions(
            "r",
            ["a", "b"],
            np.zeros(2, int),
            np.array([T0, T0 + MIN]),
            np.array([0.9, 0.2]),
            np.zeros(2, int),
            np.array([0, 1]),
        ),
        None,
    )
    events = []
    closing = join.close(watermark=T0 + 2 * MIN)
    join.confirm(closing)
    events += closing.events
    join.apply(None, Labels("f", ["a"], one, np.array([0.0]), np.array([T0 + MIN]), one, one))
    closing = join.close(watermark=T0 + 2 * MIN)
    join.confirm(closing)
    events += closing.events
    assert [e["revision"] for e in events] == [0, 0, 1]
    p = Producer(k.client_config())
    # events[2] twice, as after a crash between produce and confirm: one revision
    for e in [*events, events[2], {**events[0], "pipeline": "other"}]:
        p.produce(topic, orjson.dumps(e), b"fraud/quality")
    assert p.flush(30) == 0

    latest = cmd_performance(k, "fraud", as_json=True)
    assert [(e["window_end"], e["revision"]) for e in latest] == [
        (events[0]["window_end"], 1),
        (events[1]["window_end"], 0),
    ]
    assert latest[0]["metrics"]["fp"] == 1 and latest[0]["labeled"] == 1
    printed = orjson.loads(capsys.readouterr().out)
    assert printed == latest
    assert len(cmd_performance(k, "fraud", history=True, as_json=True)) == 3
    capsys.readouterr()
    one_window = cmd_performance(k, "fraud", window=str(T0 + MIN + 5))
    assert [e["window_end"] for e in one_window] == [events[1]["window_end"]]
    assert "┏" in capsys.readouterr().out  # a table (its width follows the terminal)
    frame = Pipeline(Client(Settings(kafka=k)), "fraud", {"name": "fraud"}).performance()
    assert list(frame["revision"]) == [1, 0]
    assert {"accuracy", "roc_auc", "estimated_accuracy", "window_end"} <= set(frame.columns)
    assert cmd_performance(k, "nobody", as_json=True) == []
