"""The monitor outlives its Kafka broker going away and coming back, and loses nothing.

The Kafka twin of ``test_redis_away_for_a_while_stalls_the_monitor_without_losing_anything``:
a private single-node KRaft broker (its own ports and data directory, see ``_private_kafka``)
is stopped for a while and started again, as in a broker restart or a rolling upgrade, while
a monitor subprocess consumes a pipeline's results from it and publishes assays and alerts to
it. The broker goes away with the monitor idle (its consumer, group coordinator and pending
offset commit lose the broker), or while it publishes the windows a batch it has just applied
closed (``Monitor.emit`` waits for delivery). The monitor must still be running afterwards,
and its windows in Redis, its alert transitions and its assay results must match an offline
recomputation from the results topic.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from driftline.detectors import Baseline
from driftline.streams.state import RedisState

from ._monitor_helpers import RUNNER, produce, result, start_monitor, stop, wait_for
from ._private_kafka import PrivateKafka
from .test_monitor_crash import SPAN_MS, N, _applied, _check, _config, _data, _done

pytestmark = pytest.mark.integration

OUTAGE_S = 8.0


@pytest.fixture
def world(tmp_path: Path, unique: str, redis_prefix: str) -> Iterator[dict[str, Any]]:
    """``test_monitor_crash``'s world, on a private broker (``broker``) that can be restarted."""
    prefix = f"t{unique}"
    with PrivateKafka(tmp_path) as broker:
        k = broker.settings(topic_prefix=prefix)
        broker.create_topics(
            {
                k.topic("fraud", "results"): 3,
                k.topic("fraud", "late"): 3,
                k.topic("fraud", "deadletter"): 3,
                k.topic("assays"): 1,
                k.topic("notifications"): 1,
            }
        )
        yield {
            "prefix": prefix,
            "k": k,
            "redis_prefix": redis_prefix,
            "tmp": tmp_path,
            "broker": broker,
        }


# The monitor of _monitor_proc.py, whose first emit after HOLD appears waits until HOLD is
# gone: the test stops the broker meanwhile, so the monitor meets the outage while publishing
# windows of a batch it has applied (Monitor.emit blocks its event loop just the same).
_HOLDING_RUNNER = """
import sys
import time
from pathlib import Path

sys.path.insert(0, sys.argv[3])
import _monitor_proc
from driftline.streams.monitor import Monitor

hold = Path(sys.argv[2])
emit = Monitor.emit

def held_emit(self, assays, notes):
    if not hold.exists():
        return emit(self, assays, notes)
    print(f"emit held: {len(assays)} assays, {len(notes)} notifications", flush=True)
    while hold.exists():
        time.sleep(0.05)
    start = time.monotonic()
    try:
        emit(self, assays, notes)
    except BaseException as exc:
        print(f"held emit raised after {time.monotonic() - start:.1f} s: {exc!r}", flush=True)
        raise
    print(f"held emit published after {time.monotonic() - start:.1f} s", flush=True)

Monitor.emit = held_emit
_monitor_proc.main(sys.argv[1])
"""


def _start_holding(
    config: Path, cwd: Path, log: Path, env_extra: dict[str, str], hold: Path
) -> subprocess.Popen[bytes]:
    script = cwd / "holding_monitor.py"
    script.write_text(_HOLDING_RUNNER)
    with log.open("ab") as fh:
        return subprocess.Popen(
            [sys.executable, str(script), str(config), str(hold), str(RUNNER.parent)],
            cwd=cwd,
            stdout=fh,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env_extra},
        )


def _note(log: Path, line: str) -> None:
    with log.open("a") as f:
        f.write(f"---- test {time.strftime('%H:%M:%S')}: {line}\n")


@pytest.mark.parametrize("when", ["idle", "publishing"])
def test_kafka_away_for_a_while_stalls_the_monitor_without_losing_anything(
    world: dict[str, Any], redis_client: redis.Redis, when: str
) -> None:
    """The broker restarts once the monitor applied a first part, with the monitor idle or
    publishing the windows of a second part it has just applied: it waits for the broker,
    goes on, and the windows, alerts and assays end exact."""
    broker: PrivateKafka = world["broker"]
    t0 = (int(time.time()) // 10 - 100) * 10_000
    rows, baseline = _data(t0, 8)
    base = Baseline.from_values(baseline)
    config = _config(world, baseline)
    k = world["k"]
    topic = k.topic("fraud", "results")
    tmp = world["tmp"]
    log = tmp / "monitor.log"
    hold = tmp / "hold"
    state = RedisState(redis_client, world["redis_prefix"], "fraud")

    def send(part: list[tuple[int, bytes]]) -> None:
        produce(k.client_config(), topic, part, txid=f"{world['prefix']}-p")

    def tail() -> str:
        return log.read_text(errors="replace")[-6000:]

    def until(what: str, done: Callable[[], bool], timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while not done() and time.monotonic() < deadline:
            assert proc.poll() is None, f"the monitor exited with {proc.returncode}:\n{tail()}"
            time.sleep(0.2)
        assert done(), f"{what}:\n{tail()}"

    first, second = N // 3, 2 * N // 3
    env = {"DRIFTLINE_BOOTSTRAP_SERVERS": broker.bootstrap}
    if when == "idle":
        proc = start_monitor(config, tmp, log, env)
    else:
        proc = _start_holding(config, tmp, log, env, hold)
    try:
        send(rows[:first])
        until("the first part was not applied", lambda: _applied(state) >= first)
        if when == "idle":
            send(rows[first:second])
            until("the second part was not applied", lambda: _applied(state) >= second)
        else:
            hold.touch()
            send(rows[first:second])
            until("no emit held", lambda: "emit held" in log.read_text(errors="replace"))

        broker.stop()
        _note(log, "broker stopped")
        hold.unlink(missing_ok=True)  # the held emit now meets the missing broker
        time.sleep(OUTAGE_S)
        assert proc.poll() is None, f"the monitor exited with {proc.returncode}:\n{tail()}"
        broker.start()
        _note(log, "broker started again")

        send(rows[second:])
        send([(p, result(t0 + 2 * SPAN_MS, 0.1, N + p)) for p in range(3)])
        got = wait_for(k.client_config(), k.topic("assays"), _done(t0), timeout=150)
        _note(log, "final assay window seen" if _done(t0)(got) else "final assay window missing")
        time.sleep(3)  # a duplicate would come after the original
        assert proc.poll() is None, f"the monitor exited with {proc.returncode}:\n{tail()}"
        assert _done(t0)(got), tail()
    finally:
        hold.unlink(missing_ok=True)
        stop(proc)
    _check(world, t0, base, redis_client)
