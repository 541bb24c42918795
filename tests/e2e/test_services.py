"""`driftline services` as a user runs it, on a private instance (own ports and directories)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

DRIFTLINE = [sys.executable, "-m", "driftline"]


def _free_port_pair() -> int:
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        with socket.socket() as s2:
            try:
                s2.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return int(port)
    raise RuntimeError("no free port pair")


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*DRIFTLINE, "services", *args], env=env, capture_output=True, text=True, timeout=240
    )


def _status(env: dict[str, str]) -> dict[str, dict[str, object]]:
    proc = _run(env, "status", "--json")
    return {s["name"]: s for s in json.loads(proc.stdout)}


def test_up_twice_status_kill_recover_down(tmp_path: Path) -> None:
    env = dict(
        os.environ,
        DRIFTLINE_SERVICES_DIR=str(tmp_path / "svc"),
        DRIFTLINE_KAFKA_PORT=str(_free_port_pair()),
        DRIFTLINE_REDIS_PORT=str(_free_port_pair()),
        COLUMNS="200",
    )
    try:
        first = _run(env, "up")
        assert first.returncode == 0, first.stderr
        assert "starting kafka" in first.stderr
        status = _status(env)
        assert status["kafka"]["running"] and status["redis"]["running"]
        assert str(tmp_path / "svc") in str(status["kafka"]["data_dir"])

        second = _run(env, "up")
        assert second.returncode == 0, second.stderr
        assert "kafka already running" in second.stderr
        assert "redis already running" in second.stderr
        assert _status(env)["kafka"]["pid"] == status["kafka"]["pid"]

        # Killing the broker by hand: status says so, and `up` recovers on the same data.
        os.kill(int(status["kafka"]["pid"]), signal.SIGKILL)  # type: ignore[call-overload]
        deadline = time.monotonic() + 20
        while _status(env)["kafka"]["running"] and time.monotonic() < deadline:
            time.sleep(0.5)
        stopped = _run(env, "status")
        assert stopped.returncode == 1
        recovered = _run(env, "up")
        assert recovered.returncode == 0, recovered.stderr
        assert "formatting" not in recovered.stderr  # same storage, not re-formatted
        assert _status(env)["kafka"]["running"]
    finally:
        down = _run(env, "down")
    assert down.returncode == 0, down.stderr
    final = _status(env)
    assert not final["kafka"]["running"] and not final["redis"]["running"]


def test_port_taken_by_a_stranger_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        env = dict(
            os.environ,
            DRIFTLINE_SERVICES_DIR=str(tmp_path / "svc"),
            DRIFTLINE_REDIS_PORT=str(port),
        )
        proc = _run(env, "up")
    assert proc.returncode == 3
    assert f"port {port} is taken" in proc.stderr
    assert "Traceback" not in proc.stderr
