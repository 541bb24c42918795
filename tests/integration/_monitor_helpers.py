"""Shared helpers of the monitor integration tests: topics, producing results, monitor processes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition

RUNNER = Path(__file__).with_name("_monitor_proc.py")


def result(t: int, score: float, i: int) -> bytes:
    return orjson.dumps(
        {
            "id": f"r{i}",
            "row": 0,
            "time": t,
            "pipeline": "fraud",
            "spec": "s",
            "inputs": [score],
            "outputs": {"m": [[score]]},
            "models": {"m": "x"},
        }
    )


def produce(
    conf: dict[str, Any],
    topic: str,
    rows: Iterable[tuple[Any, ...]],
    abort: Iterable[tuple[int, bytes]] = (),
    txid: str = "t",
) -> None:
    """Produce ``(partition, value)`` rows in one transaction; ``abort`` rows in an aborted one.

    Batches are lz4-compressed, as librdkafka producers commonly send them, so the monitor's
    consumer is proven to read compressed topics.
    """
    p = Producer({**conf, "transactional.id": txid, "linger.ms": 20, "compression.type": "lz4"})
    p.init_transactions(30)
    bad = list(abort)
    if bad:
        p.begin_transaction()
        for part, v in bad:
            p.produce(topic, v, partition=part)
        p.flush(30)
        p.abort_transaction(30)
    p.begin_transaction()
    for n, row in enumerate(rows):
        part, v = row[0], row[1]
        ts = row[2] if len(row) > 2 else 0  # type: ignore[misc]
        p.produce(topic, v, partition=part, timestamp=ts)
        if n % 20000 == 19999:
            p.poll(0)
    p.commit_transaction(60)


def read_all(conf: dict[str, Any], topic: str, timeout: float = 30.0) -> list[dict[str, Any]]:
    """Every committed message of ``topic`` (all partitions), decoded."""
    # EOF on every partition ends the read; the timeout only bounds a broker too slow to
    # answer (a loaded machine), so it is generous rather than a guess at typical latency.
    c = Consumer(
        {
            **conf,
            "group.id": f"read-{time.monotonic_ns()}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
        }
    )
    try:
        md = c.list_topics(topic, timeout=10).topics[topic]
        parts = list(md.partitions)
        c.assign([TopicPartition(topic, p, 0) for p in parts])
        eof: set[int] = set()
        out: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while len(eof) < len(parts) and time.monotonic() < deadline:
            for m in c.consume(1000, 0.5):
                if m.error():
                    if m.error().code() == -191:
                        eof.add(m.partition())
                    continue
                out.append(orjson.loads(m.value()))
        return out
    finally:
        c.close()


def wait_for(
    conf: dict[str, Any], topic: str, done: Any, timeout: float = 120.0
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    got: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        got = read_all(conf, topic)
        if done(got):
            return got
        time.sleep(1.0)
    return got


def start_monitor(
    config_path: Path, cwd: Path, log: Path, env_extra: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    env = {**os.environ, **(env_extra or {})}
    with open(log, "ab") as fh:
        return subprocess.Popen(
            [sys.executable, str(RUNNER), str(config_path)],
            cwd=cwd,
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
        )


def wait_for_log(log: Path, pattern: str, timeout: float) -> None:
    """Wait until a line of a process's log file matches ``pattern`` (a regular expression)."""
    deadline = time.monotonic() + timeout
    while not re.search(pattern, log.read_text(errors="replace")):
        assert time.monotonic() < deadline, f"no {pattern!r} in {log.name} after {timeout} s"
        time.sleep(0.2)


def stop(proc: subprocess.Popen[bytes], kill: bool = False) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def start_watching(
    env: dict[str, str], cwd: Path, log: Path, topic: str
) -> subprocess.Popen[bytes]:
    """``driftline monitor`` as a user starts it, returned once it has been assigned the
    results ``topic`` (partition 0), so that the traffic a test sends next is read live."""
    with open(log, "ab") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "driftline", "monitor"],
            env=env,
            cwd=cwd,
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    try:
        # faust prints each assignment as a table: "| <topic> | {0} |".
        wait_for_log(log, re.escape(topic) + r"\s*\|\s*\{0", 90)
    except AssertionError:
        stop(proc)
        raise
    return proc
