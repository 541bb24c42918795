"""A single-node KRaft broker of one test alone, that can be stopped and started again.

It runs with :class:`driftline.services.Services` on two ports of its own (the broker's ``P``
and the controller's ``P + 1``) and a data directory under the test's ``tmp_path``, so a
restart keeps every topic, offset and transaction; the shared broker of the suite is never
touched. Use it as a context manager (or call :meth:`PrivateKafka.stop` in a ``finally``):
the broker is a detached process that would otherwise outlive the test::

    with PrivateKafka(tmp_path) as broker:
        kafka = broker.settings(topic_prefix="test.x")
        ...
        broker.stop()
        broker.start()
"""

from __future__ import annotations

import random
import socket
import time
import warnings
from pathlib import Path
from types import TracebackType

from confluent_kafka.admin import AdminClient, NewTopic

from driftline.config import KafkaSettings, Settings
from driftline.services import Services

__all__ = ["PrivateKafka", "free_port_pair"]


def _bindable(*ports: int) -> bool:
    socks: list[socket.socket] = []
    try:
        for port in ports:
            s = socket.socket()
            socks.append(s)
            s.bind(("127.0.0.1", port))
    except OSError:
        return False
    finally:
        for s in socks:
            s.close()
    return True


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port_pair() -> int:
    """A port ``P`` such that ``P`` and ``P + 1`` (the controller's) are both free now.

    Taken below the ephemeral range when there is room: a port the kernel hands out as the
    local end of outgoing connections could be taken by one of them while the broker is
    stopped (its clients keep reconnecting), and the restart would then fail.
    """
    low, _high = _ephemeral_range()
    if low > 12_000:
        rng = random.Random()
        for _ in range(200):
            port = rng.randrange(10_000, low - 2)
            if _bindable(port, port + 1):
                return port
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port < 65535 and _bindable(port, port + 1):
            return port
    raise RuntimeError("no two consecutive free ports")


class PrivateKafka:
    """A KRaft broker of one test: :meth:`start`, :meth:`stop`, :meth:`restart`, ``bootstrap``."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port_pair()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.services = Services(Settings(services_dir=tmp / "svc", kafka_port=self.port))

    def settings(self, topic_prefix: str = "driftline") -> KafkaSettings:
        """Client settings that reach this broker."""
        return KafkaSettings(bootstrap_servers=self.bootstrap, topic_prefix=topic_prefix)

    @property
    def log_file(self) -> Path:
        return self.services.kafka_dir / "server.log"

    def start(self) -> None:
        """Start the broker (formatting its storage the first time); returns once it answers."""
        # The broker is a detached child that outlives the Popen object kafka_up drops, whose
        # finaliser warns "subprocess ... is still running": expected here, not a leak.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            self.services.kafka_up()

    def stop(self) -> None:
        """Stop the broker (SIGTERM: a clean shutdown); nothing happens if it is not running."""
        self.services.kafka_down()

    def restart(self, down_s: float = 0.0) -> None:
        """Stop the broker, stay down for ``down_s`` seconds, start it again."""
        self.stop()
        time.sleep(down_s)
        self.start()

    def create_topics(self, topics: dict[str, int], config: dict[str, str] | None = None) -> None:
        """Create ``{name: partitions}`` and wait until every partition has a leader."""
        admin = AdminClient(self.settings().client_config())
        futures = admin.create_topics(
            [NewTopic(t, n, 1, config=config or {}) for t, n in topics.items()],
            operation_timeout=15,
        )
        for fut in futures.values():
            fut.result(30)
        # Every partition led before anyone produces.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            md = admin.list_topics(timeout=10).topics
            if all(
                t in md
                and md[t].error is None
                and len(md[t].partitions) == n
                and all(p.leader >= 0 for p in md[t].partitions.values())
                for t, n in topics.items()
            ):
                return
            time.sleep(0.2)
        raise AssertionError(f"topics not ready: {topics}")

    def __enter__(self) -> PrivateKafka:
        try:
            self.start()
        except BaseException:
            self.stop()  # kafka_up may have left a broker running that never answered
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
