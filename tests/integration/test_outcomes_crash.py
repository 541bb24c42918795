"""``driftline monitor`` SIGKILLed five times while it joins labels to predictions: the final
revision of every window equals the offline answer (scikit-learn), no (window, revision) was
published with two different contents, and replay's audit finds no difference."""

from __future__ import annotations

import os
import signal
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

from ._outcomes_data import EXAMPLE, MINUTE, check_window, outcomes, spec_dict
from ._stack import Stack

pytestmark = pytest.mark.integration

N = 3000
WINDOWS = 10
PARTITIONS = 3
KILLS = 5


def _pairs(events: list[dict[str, Any]]) -> set[tuple[int, int]]:
    return {(int(e["window_end"]), int(e["revision"])) for e in events}


def test_sigkilled_monitor_mid_join_ends_with_exact_windows_and_one_content_per_revision(
    topic_prefix: str, redis_prefix: str, tmp_path: Path, unique: str
) -> None:
    settings = Settings(
        model_store=tmp_path / "store", kafka=KafkaSettings(topic_prefix=topic_prefix)
    )
    spec = spec_from_dict(spec_dict("crashy", PARTITIONS), EXAMPLE)
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
    t0 = (int(time.time() * 1000) - 60 * MINUTE) // MINUTE * MINUTE
    data = outcomes("crashy", N, t0, WINDOWS, PARTITIONS, seed=11)
    k = settings.kafka
    results, feedback = k.topic("crashy", "results"), k.topic("crashy", "feedback")
    producer = Producer(k.client_config())

    # Six rounds, each a slice of the predictions (in time order, so windows keep closing)
    # and of the shuffled labels (some for predictions not sent yet); early labels go first.
    rounds = KILLS + 1
    cut_r = [len(data.results) * i // rounds for i in range(rounds + 1)]
    cut_l = [len(data.late) * i // rounds for i in range(rounds + 1)]

    def send(i: int) -> None:
        if i == 0:
            for key, value in data.early:
                producer.produce(feedback, value, key)
        for part, ts, value in data.results[cut_r[i] : cut_r[i + 1]]:
            producer.produce(results, value, partition=part, timestamp=ts)
        for key, value in data.late[cut_l[i] : cut_l[i + 1]]:
            producer.produce(feedback, value, key)
        assert producer.flush(30) == 0

    stack = Stack(env, tmp_path / "logs")
    kills, published = 0, _pairs(read_performance(k, "crashy"))
    try:
        proc = stack.start("monitor0", "monitor")
        for i in range(rounds):
            send(i)
            if i == rounds - 1:
                break
            # kill only a monitor that has published a revision of its own since it started:
            # one killed while still starting up would prove nothing
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and proc.poll() is None:
                now = _pairs(read_performance(k, "crashy"))
                if now - published:
                    break
                time.sleep(0.2)
            else:
                break  # no progress (or the monitor died): the assertions below say so
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
            kills += 1
            stack.procs.pop(f"monitor{i}")
            published = _pairs(read_performance(k, "crashy"))
            proc = stack.start(f"monitor{i + 1}", "monitor")

        def caught_up() -> list[dict[str, Any]] | None:
            latest = latest_revisions(read_performance(k, "crashy"))
            rows = [e for e in latest if e["window_end"] <= data.end]
            got = [(e["window_start"], e["labeled"]) for e in rows]
            want = [(w["window_start"], w["labeled"]) for w in data.expected]
            return rows if got == want else None

        final = stack.wait("every window's labels joined", caught_up, timeout_s=240)
        time.sleep(2)  # a tick more: nothing else may come out
        history = read_performance(k, "crashy")
        assert not stack.dead(), stack.tails()
    finally:
        stack.stop()
    assert kills == KILLS, stack.tails()
    for event, want in zip(final, data.expected, strict=True):
        check_window(event, want)
    contents: dict[tuple[int, int], set[bytes]] = {}
    for e in history:
        body = {f: e[f] for f in ("predictions", "labeled", "metrics", "estimated")}
        contents.setdefault((e["window_end"], e["revision"]), set()).add(
            orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
        )
    assert {pair: len(c) for pair, c in contents.items() if len(c) > 1} == {}
    latest = {e["window_end"]: e["revision"] for e in latest_revisions(history)}
    for end, top in latest.items():
        assert {r for w, r in contents if w == end} == set(range(top + 1)), end
    report = audit(settings, replay(settings, spec.to_canonical(), t0, data.end, base_dir=EXAMPLE))
    assert report.differences == [] and report.compared_performance == WINDOWS
