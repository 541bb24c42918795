"""A ``redis-server`` of one test alone, on a fixed port, that can be stopped and restarted."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import redis

__all__ = ["PrivateRedis", "free_port"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateRedis:
    """A ``redis-server`` of this test alone on a fixed port, that can be stopped and restarted."""

    def __init__(self, tmp: Path, durable: bool = False) -> None:
        self.port = free_port()
        # durable: every write fsynced to an append-only file, so a restart keeps all state
        self.durable = durable
        self.dir = tmp / "redis"
        self.dir.mkdir()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert self._proc is None
        with (self.dir / "redis.log").open("ab") as out:
            self._proc = subprocess.Popen(
                ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                 "--dir", str(self.dir), "--save", "",
                 *(["--appendonly", "yes", "--appendfsync", "always"] if self.durable
                   else ["--appendonly", "no"])],
                stdout=out,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        client = redis.Redis(port=self.port, socket_connect_timeout=1, socket_timeout=1)
        try:
            deadline = time.monotonic() + 15
            while True:
                try:
                    if client.ping():
                        return
                except redis.exceptions.ConnectionError:
                    pass
                if time.monotonic() > deadline or self._proc.poll() is not None:
                    raise AssertionError("the private redis-server did not answer PING")
                time.sleep(0.05)
        finally:
            client.close()

    def stop(self) -> None:
        if self._proc is None:
            return
        self._proc.terminate()
        self._proc.wait(15)
        self._proc = None

    def exists(self, key: str) -> bool:
        client = redis.Redis(port=self.port, socket_connect_timeout=1, socket_timeout=1)
        try:
            return bool(client.exists(key))
        finally:
            client.close()
