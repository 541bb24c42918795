"""List labels of a multi-output model through ``driftline monitor``: each performance entry
judges the element its ``label_index`` names, and a single label sent to a pipeline whose
entries all expect lists is dead-lettered with a reason that names the field."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from driftline import Client
from driftline.config import KafkaSettings, Settings
from driftline.spec import spec_from_dict
from driftline.streams._outcomes_cli import latest_revisions, read_performance

from ._outcomes_data import EXAMPLE, MINUTE, result
from ._stack import Stack

pytestmark = pytest.mark.integration

N = 200
WINDOWS = 2


def _entry(index: int) -> dict[str, Any]:
    return {
        "task": "binary",
        "prediction": "ccfraud.outputs[0][0]",
        "window": {"width": "1m"},
        "label_index": index,
    }


def _dead_letters(kafka: KafkaSettings, topic: str) -> list[tuple[bytes, dict[str, bytes]]]:
    c = Consumer(
        kafka.client_config(
            **{"group.id": f"dl-{time.monotonic_ns()}", "enable.partition.eof": True}
        )
    )
    try:
        parts = list(c.list_topics(topic, timeout=10).topics[topic].partitions)
        c.assign([TopicPartition(topic, p, 0) for p in parts])
        out: list[tuple[bytes, dict[str, bytes]]] = []
        eof: set[int] = set()
        deadline = time.monotonic() + 20
        while len(eof) < len(parts) and time.monotonic() < deadline:
            for m in c.consume(1000, 0.5):
                if m.error() is not None:
                    eof.add(m.partition())
                else:
                    out.append((m.value() or b"", dict(m.headers() or [])))
        return out
    finally:
        c.close()


def test_each_entry_judges_its_element_of_a_list_label_and_a_single_label_is_dead_lettered(
    topic_prefix: str, redis_prefix: str, tmp_path: Path, unique: str
) -> None:
    settings = Settings(
        model_store=tmp_path / "store", kafka=KafkaSettings(topic_prefix=topic_prefix)
    )
    spec = spec_from_dict(
        {
            "name": "heads",
            "models": [{"name": "ccfraud", "path": str(EXAMPLE / "models" / "ccfraud.onnx")}],
            "performance": {"head0": _entry(0), "head1": _entry(1)},
            "options": {"lateness": "0s", "partitions": 1},
        },
        EXAMPLE,
    )
    Client(settings).deploy(spec)
    env = dict(
        os.environ,
        DRIFTLINE_TOPIC_PREFIX=topic_prefix,
        DRIFTLINE_KEY_PREFIX=redis_prefix,
        DRIFTLINE_MODEL_STORE=str(settings.model_store),
        DRIFTLINE_MONITOR_GROUP=f"monitor-{unique}",
        DRIFTLINE_MONITOR_DATADIR=str(tmp_path / "faust"),
    )
    env.pop("DRIFTLINE_METRICS_PORT", None)
    rng = np.random.default_rng(7)
    t0 = (int(time.time() * 1000) - 30 * MINUTE) // MINUTE * MINUTE
    times = t0 + np.sort(rng.integers(0, WINDOWS * MINUTE, N))
    scores = rng.uniform(size=N)
    predicted = (scores >= 0.5).astype(int)
    # element 0 agrees with the model; element 1 disagrees on about a third
    head1 = np.where(rng.uniform(size=N) < 0.35, 1 - predicted, predicted)
    k = settings.kafka
    p = Producer(k.client_config())
    for i in range(N):
        t = int(times[i])
        p.produce(k.topic("heads", "results"), result("heads", f"r{i}", t, float(scores[i])),
                  partition=0, timestamp=t)  # fmt: skip
    end = t0 + WINDOWS * MINUTE
    p.produce(k.topic("heads", "results"), result("heads", "closer", end + 1, 0.1),
              partition=0, timestamp=end + 1)  # fmt: skip
    feedback = k.topic("heads", "feedback")
    for i in range(N):
        label = [int(predicted[i]), int(head1[i]), 0]
        p.produce(feedback, orjson.dumps({"id": f"r{i}", "label": label}), f"r{i}".encode())
    p.produce(feedback, orjson.dumps({"id": "r0", "label": 1}), b"r0")  # not a list
    assert p.flush(30) == 0

    stack = Stack(env, tmp_path / "logs")

    def done() -> list[dict[str, Any]] | None:
        latest = latest_revisions(read_performance(k, "heads"))
        rows = [e for e in latest if e["window_end"] <= end]
        full = all(e["labeled"] == e["predictions"] > 0 for e in rows)
        return rows if len(rows) == 2 * WINDOWS and full else None

    try:
        stack.start("monitor", "monitor")
        final = stack.wait("both entries' windows with their labels", done, timeout_s=120)
        dead = stack.wait(
            "the single label dead-lettered",
            lambda: _dead_letters(k, k.topic("heads", "deadletter")),
            timeout_s=60,
        )
        assert not stack.dead(), stack.tails()
    finally:
        stack.stop()
    for e in final:
        w = (times >= e["window_start"]) & (times < e["window_end"])
        truth = predicted if e["name"] == "head0" else head1
        assert (e["predictions"], e["labeled"]) == (int(w.sum()), int(w.sum())), e
        want = float(np.mean(truth[w] == predicted[w]))
        assert e["metrics"]["accuracy"] == pytest.approx(want, abs=1e-12), e
    assert {e["name"] for e in final} == {"head0", "head1"}
    assert len(dead) == 1
    value, headers = dead[0]
    assert orjson.loads(value) == {"id": "r0", "label": 1}
    assert headers["driftline-error"] == b"bad_label"
    assert b"label_index" in headers["driftline-detail"], headers
