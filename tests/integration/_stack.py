"""driftline processes as a user starts them (`python -m driftline ROLE`), for end-to-end tests."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson


class Stack:
    """Worker, monitor and bridge subprocesses with their logs under ``log_dir``."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        log_dir.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        with self.log(name).open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "driftline", *args],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def dead(self) -> dict[str, int]:
        """``{name: exit code}`` of every process that has exited."""
        return {n: p.returncode for n, p in self.procs.items() if p.poll() is not None}

    def tails(self, chars: int = 2500) -> str:
        return "\n".join(
            f"--- {n} (exit {p.poll()})\n{self.log(n).read_text(errors='replace')[-chars:]}"
            for n, p in self.procs.items()
        )

    def wait(self, what: str, predicate: Callable[[], Any], timeout_s: float = 120.0) -> Any:
        """Poll ``predicate`` until it returns something truthy; fail if a process exits."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            got = predicate()
            if got:
                return got
            if self.dead():
                raise AssertionError(f"a process exited while waiting for {what}\n{self.tails()}")
            time.sleep(0.5)
        raise AssertionError(f"timed out waiting for {what}\n{self.tails()}")

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def fraud_result(pipeline: str, i: int, t: int, score: float) -> bytes:
    """A result event of the fraud example's champion (``ccfraud``) scoring ``score`` at ``t``."""
    return orjson.dumps(
        {
            "id": f"r{i}",
            "row": 0,
            "time": t,
            "pipeline": pipeline,
            "spec": "s",
            "inputs": [0.0] * 29,
            "outputs": {"ccfraud": [[score]]},
            "models": {"ccfraud": "x"},
        }
    )
