"""``driftline replay --audit`` of performance: a live ``driftline monitor`` joins labels sent
before and after their predictions (some twice, some never); replay recomputes every window
from the results and feedback topics and the audit finds the latest live revision of each
identical, then finds the revisions forged on ``driftline.performance`` afterwards."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer

from driftline import Client
from driftline.config import KafkaSettings, Settings
from driftline.spec import spec_from_dict
from driftline.streams._outcomes_cli import latest_revisions, read_performance
from driftline.streams.replay import audit, replay

from ._outcomes_data import EXAMPLE, MINUTE, check_window, outcomes, result, spec_dict
from ._stack import Stack

pytestmark = pytest.mark.integration

WINDOWS = 4
PARTITIONS = 2


def test_replay_audits_the_latest_revision_of_every_performance_window(
    topic_prefix: str, redis_prefix: str, tmp_path: Path, unique: str
) -> None:
    settings = Settings(
        model_store=tmp_path / "store", kafka=KafkaSettings(topic_prefix=topic_prefix)
    )
    spec = spec_from_dict(spec_dict("quality", PARTITIONS), EXAMPLE)
    Client(settings).deploy(spec)
    env = dict(
        os.environ,
        DRIFTLINE_TOPIC_PREFIX=topic_prefix,
        DRIFTLINE_KEY_PREFIX=redis_prefix,
        DRIFTLINE_MODEL_STORE=str(settings.model_store),
        DRIFTLINE_MONITOR_GROUP=f"monitor-{unique}",
    )
    env.pop("DRIFTLINE_METRICS_PORT", None)
    t0 = (int(time.time() * 1000) - 30 * MINUTE) // MINUTE * MINUTE
    data = outcomes("quality", 1200, t0, WINDOWS, PARTITIONS, seed=5)
    k = settings.kafka
    producer = Producer(k.client_config())

    def send(topic: str, rows: list[tuple[bytes, bytes]]) -> None:
        for key, value in rows:
            producer.produce(topic, value, key)
        assert producer.flush(30) == 0

    stack = Stack(env, tmp_path / "logs")
    try:
        stack.start("monitor", "monitor")
        send(k.topic("quality", "feedback"), data.early)
        for part, ts, value in data.results:
            producer.produce(k.topic("quality", "results"), value, partition=part, timestamp=ts)
        assert producer.flush(30) == 0
        send(k.topic("quality", "feedback"), data.late)

        def caught_up() -> list[dict[str, Any]] | None:
            rows = [
                e
                for e in latest_revisions(read_performance(k, "quality"))
                if e["window_end"] <= data.end
            ]
            got = [(e["window_start"], e["labeled"]) for e in rows]
            want = [(w["window_start"], w["labeled"]) for w in data.expected]
            return rows if got == want else None

        live = stack.wait("every window's labels joined live", caught_up, timeout_s=180)
        assert not stack.dead(), stack.tails()
    finally:
        stack.stop()
    for event, want in zip(live, data.expected, strict=True):
        check_window(event, want)

    proc = subprocess.run(
        [sys.executable, "-m", "driftline", "replay", "quality", "--from", str(t0), "--to",
         str(data.end), "--audit", "--json"],
        env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads(proc.stdout)
    assert doc["audit"]["differences"] == []
    assert doc["audit"]["compared_performance"] == WINDOWS
    replayed = doc["performance"]
    assert [e["revision"] for e in replayed] == [0] * WINDOWS
    for event, want in zip(replayed, data.expected, strict=True):
        check_window(event, want)
    assert doc["labels"] == len(data.early) + len(data.late)

    # Forged on the topic: window 1's revision 0 again with another count, and window 2 a
    # revision past the next one (a gap) with another accuracy, which is now its latest.
    topic = k.topic("performance")
    first = {e["window_end"]: e for e in read_performance(k, "quality") if e["revision"] == 0}
    w1, w2 = live[1], live[2]
    changed = dict(first[w1["window_end"]], labeled=first[w1["window_end"]]["labeled"] + 1)
    later = dict(w2, revision=w2["revision"] + 2)
    later["metrics"] = dict(w2["metrics"], accuracy=w2["metrics"]["accuracy"] / 2)
    for e in (changed, later):
        producer.produce(topic, orjson.dumps(e), b"quality/quality", timestamp=e["window_end"])
    assert producer.flush(30) == 0

    report = audit(settings, replay(settings, spec.to_canonical(), t0, data.end, base_dir=EXAMPLE))
    found = {(d.key, d.what) for d in report.differences}
    assert found == {
        (f"quality@{w1['window_end']}#0", "republished labeled"),
        (f"quality@{w2['window_end']}", "revisions"),
        (f"quality@{w2['window_end']}", "metrics.accuracy"),
    }, report.differences


def test_replay_closes_the_windows_a_quiet_partition_let_close_live(
    topic_prefix: str, tmp_path: Path
) -> None:
    # Partition 1 is quiet from the first minute until 5 minutes past the range: live, that
    # later record moves its watermark past every window of the range, so replay, which
    # stops reading at it, closes them all too.
    settings = Settings(
        model_store=tmp_path / "store", kafka=KafkaSettings(topic_prefix=topic_prefix)
    )
    spec = spec_from_dict(spec_dict("quiet", PARTITIONS), EXAMPLE)
    Client(settings).deploy(spec)
    t0 = (int(time.time() * 1000) - 30 * MINUTE) // MINUTE * MINUTE
    end = t0 + WINDOWS * MINUTE
    rows = [(0, t0 + w * MINUTE + 10_000) for w in range(WINDOWS)] + [(1, t0 + 10_000)]
    rows += [(p, end + 5 * MINUTE) for p in range(PARTITIONS)]
    producer = Producer(settings.kafka.client_config())
    topic = settings.kafka.topic("quiet", "results")
    for i, (part, t) in enumerate(rows):
        producer.produce(topic, result("quiet", f"r{i}", t, 0.9), partition=part, timestamp=t)
    assert producer.flush(30) == 0
    got = replay(settings, spec.to_canonical(), t0, end, base_dir=EXAMPLE)
    assert [(e["window_end"], e["predictions"]) for e in got.performance] == [
        (t0 + (w + 1) * MINUTE, 2 if w == 0 else 1) for w in range(WINDOWS)
    ]
