"""Local Apache Kafka (KRaft, single node) and Redis for development, tests and the demo.

Kafka's jars come from Maven Central through the small Maven project in
``deploy/local/kafka/pom.xml`` and are cached under the services directory, outside the
repository, so only the first start downloads anything. Redis is Debian's ``redis-server``.

Both are plain child processes detached from the caller, with a pid file, a data directory
and a log file under ``DRIFTLINE_SERVICES_DIR`` (default ``~/.cache/driftline/services``).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from driftline.config import Settings
from driftline.errors import ServiceError

__all__ = ["ServiceStatus", "Services", "kafka_version"]

_DEPLOY_DIR = Path(__file__).resolve().parent.parent / "deploy" / "local"
_START_TIMEOUT_S = 90.0


def _deploy_dir() -> Path:
    env = os.environ.get("DRIFTLINE_DEPLOY_DIR")
    path = Path(env) if env else _DEPLOY_DIR
    if not (path / "kafka" / "pom.xml").is_file():
        raise ServiceError(
            f"cannot find deploy/local/kafka/pom.xml under {path}; run from a driftline checkout "
            "or set DRIFTLINE_DEPLOY_DIR to its deploy/local directory"
        )
    return path


def kafka_version(pom: Path | None = None) -> str:
    """The Kafka release pinned in ``deploy/local/kafka/pom.xml``."""
    text = (pom or _deploy_dir() / "kafka" / "pom.xml").read_text(encoding="utf-8")
    match = re.search(r"<kafka.version>([^<]+)</kafka.version>", text)
    if match is None:
        raise ServiceError("deploy/local/kafka/pom.xml: no <kafka.version> property")
    return match.group(1).strip()


@dataclass(frozen=True)
class ServiceStatus:
    """What ``driftline services status`` reports for one service."""

    name: str
    running: bool
    pid: int | None
    address: str
    data_dir: str
    log_file: str
    detail: str = ""

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def _pid_alive(pid: int | None, marker: str) -> bool:
    if pid is None:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return False
    state = ""
    with contextlib.suppress(OSError):
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    return marker in cmdline and state != "Z"


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _wait(predicate: Callable[[], bool], timeout: float, interval: float = 0.25) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


class Services:
    """Start, stop and inspect the local Kafka broker and Redis server.

    Parameters
    ----------
    settings:
        Where the services live (``services_dir``) and their ports.
    log:
        Receives one line per step, for the CLI to print.
    """

    def __init__(self, settings: Settings, log: Callable[[str], None] = lambda _: None):
        self.settings = settings
        self.log = log
        self.root = settings.services_dir.expanduser()
        self.kafka_dir = self.root / "kafka"
        self.redis_dir = self.root / "redis"

    # ------------------------------------------------------------------ Kafka
    @property
    def kafka_port(self) -> int:
        return self.settings.kafka_port

    @property
    def controller_port(self) -> int:
        return self.settings.kafka_port + 1

    def _kafka_pidfile(self) -> Path:
        return self.kafka_dir / "kafka.pid"

    def _jar_dir(self) -> Path:
        return self.settings.cache_dir.expanduser() / f"kafka-{kafka_version()}-jars"

    def _ensure_jars(self) -> Path:
        jars = self._jar_dir()
        if (jars / ".complete").exists():
            return jars
        mvn = shutil.which("mvn")
        if mvn is None:
            raise ServiceError(
                "Maven (mvn) is needed once to fetch Kafka's jars from Maven Central; "
                "install it with `apt-get install maven`"
            )
        self.log(f"fetching Apache Kafka {kafka_version()} jars from Maven Central into {jars}")
        jars.mkdir(parents=True, exist_ok=True)
        cmd = [
            mvn,
            "-q",
            "-B",
            "-f",
            str(_deploy_dir() / "kafka" / "pom.xml"),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={jars}",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise ServiceError(
                "mvn could not fetch Kafka's jars (is Maven Central reachable?):\n"
                + (proc.stdout + proc.stderr)[-2000:]
            )
        (jars / ".complete").touch()
        return jars

    def _java(self) -> str:
        java = shutil.which("java")
        if java is None:
            raise ServiceError(
                "Java 17 or newer is needed to run Kafka; install it with "
                "`apt-get install openjdk-17-jre-headless`"
            )
        return java

    def _write_kafka_config(self) -> Path:
        data = self.kafka_dir / "data"
        props = self.kafka_dir / "server.properties"
        host = "127.0.0.1"
        props.write_text(
            "\n".join(
                [
                    "# written by `driftline services up`; edits are overwritten",
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.voters=1@{host}:{self.controller_port}",
                    f"listeners=PLAINTEXT://{host}:{self.kafka_port},"
                    f"CONTROLLER://{host}:{self.controller_port}",
                    f"advertised.listeners=PLAINTEXT://{host}:{self.kafka_port}",
                    "controller.listener.names=CONTROLLER",
                    "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                    "inter.broker.listener.name=PLAINTEXT",
                    f"log.dirs={data}",
                    "num.partitions=1",
                    # A single node: internal topics must not ask for more replicas than exist,
                    # or transactions and consumer groups never become available.
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=3",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "transaction.state.log.num.partitions=3",
                    "share.coordinator.state.topic.replication.factor=1",
                    "share.coordinator.state.topic.min.isr=1",
                    "group.initial.rebalance.delay.ms=0",
                    "auto.create.topics.enable=false",
                    "delete.topic.enable=true",
                    "log.retention.hours=168",
                    "",
                ]
            )
        )
        log4j = self.kafka_dir / "log4j2.properties"
        log4j.write_text(
            "\n".join(
                [
                    "status = warn",
                    "appender.file.type = File",
                    "appender.file.name = FILE",
                    f"appender.file.fileName = {self.kafka_dir / 'server.log'}",
                    "appender.file.layout.type = PatternLayout",
                    "appender.file.layout.pattern = [%d] %p %m (%c)%n",
                    "rootLogger.level = INFO",
                    "rootLogger.appenderRef.file.ref = FILE",
                    "logger.kafka.name = kafka",
                    "logger.kafka.level = INFO",
                    "logger.clients.name = org.apache.kafka",
                    "logger.clients.level = WARN",
                    "",
                ]
            )
        )
        return props

    def _kafka_answers(self) -> bool:
        from confluent_kafka.admin import AdminClient

        if not _port_open(self.kafka_port):
            return False
        admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{self.kafka_port}", "log_level": 0})
        try:
            md = admin.list_topics(timeout=2)
        except Exception:
            return False
        return bool(md.brokers)

    def kafka_status(self) -> ServiceStatus:
        pid = _read_pid(self._kafka_pidfile())
        ours = _pid_alive(pid, "kafka.Kafka")
        running = ours and _port_open(self.kafka_port)
        detail = ""
        if not ours and _port_open(self.kafka_port):
            detail = f"port {self.kafka_port} is in use by a process driftline did not start"
        return ServiceStatus(
            name="kafka",
            running=running,
            pid=pid if ours else None,
            address=f"127.0.0.1:{self.kafka_port}",
            data_dir=str(self.kafka_dir / "data"),
            log_file=str(self.kafka_dir / "server.log"),
            detail=detail or (f"Apache Kafka {kafka_version()} (KRaft)" if running else ""),
        )

    def kafka_up(self) -> ServiceStatus:
        status = self.kafka_status()
        if status.running:
            self.log(f"kafka already running (pid {status.pid}) on {status.address}")
            return status
        for port in (self.kafka_port, self.controller_port):
            if _port_open(port):
                raise ServiceError(
                    f"port {port} is taken by another process; stop it or choose another "
                    "port with DRIFTLINE_KAFKA_PORT (the controller uses the port after it)"
                )
        java = self._java()
        jars = self._ensure_jars()
        self.kafka_dir.mkdir(parents=True, exist_ok=True)
        props = self._write_kafka_config()
        data = self.kafka_dir / "data"
        classpath = f"{jars}/*"
        if not (data / "meta.properties").exists():
            self.log(f"formatting KRaft storage in {data}")
            cluster_id = (
                subprocess.run(
                    [java, "-cp", classpath, "kafka.tools.StorageTool", "random-uuid"],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                .stdout.strip()
                .splitlines()
                or [uuid.uuid4().hex]
            )[-1]
            proc = subprocess.run(
                [
                    java,
                    "-cp",
                    classpath,
                    "kafka.tools.StorageTool",
                    "format",
                    "-t",
                    cluster_id,
                    "-c",
                    str(props),
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            if proc.returncode != 0:
                raise ServiceError(f"formatting Kafka storage failed:\n{proc.stdout}{proc.stderr}")
        log_file = self.kafka_dir / "server.log"
        stdout = open(self.kafka_dir / "stdout.log", "ab")  # noqa: SIM115 - the child owns it
        heap = os.environ.get("DRIFTLINE_KAFKA_HEAP", "-Xmx1g")
        proc_ = subprocess.Popen(
            [
                java,
                heap,
                "-XX:+UseG1GC",
                "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={self.kafka_dir / 'log4j2.properties'}",
                "-cp",
                classpath,
                "kafka.Kafka",
                str(props),
            ],
            stdout=stdout,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=self.kafka_dir,
        )
        stdout.close()
        self._kafka_pidfile().write_text(str(proc_.pid))
        self.log(f"starting kafka (pid {proc_.pid}), waiting for it to answer a metadata request")
        if not _wait(lambda: proc_.poll() is not None or self._kafka_answers(), _START_TIMEOUT_S):
            raise ServiceError(
                f"kafka did not answer within {_START_TIMEOUT_S:.0f}s; last log lines:\n"
                + _tail(log_file)
            )
        if proc_.poll() is not None:
            raise ServiceError(
                f"kafka exited with code {proc_.returncode}; last log lines:\n"
                + _tail(log_file)
                + "\n"
                + _tail(self.kafka_dir / "stdout.log")
            )
        return self.kafka_status()

    def kafka_down(self) -> None:
        pid = _read_pid(self._kafka_pidfile())
        if not _pid_alive(pid, "kafka.Kafka"):
            self.log("kafka is not running")
            self._kafka_pidfile().unlink(missing_ok=True)
            return
        assert pid is not None
        self.log(f"stopping kafka (pid {pid})")
        os.kill(pid, signal.SIGTERM)
        if not _wait(lambda: not _pid_alive(pid, "kafka.Kafka"), 60):
            self.log("kafka did not stop within 60s; killing it")
            os.kill(pid, signal.SIGKILL)
            _wait(lambda: not _pid_alive(pid, "kafka.Kafka"), 10)
        self._kafka_pidfile().unlink(missing_ok=True)

    # ------------------------------------------------------------------ Redis
    def _redis_pidfile(self) -> Path:
        return self.redis_dir / "redis.pid"

    def _redis_server(self) -> str:
        exe = shutil.which("redis-server")
        if exe is not None:
            return exe
        if os.geteuid() != 0:
            raise ServiceError(
                "redis-server is not installed; install Debian's package with "
                "`sudo apt-get install redis-server` and run `driftline services up` again"
            )
        self.log("installing Debian's redis-server package")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "redis-server"]
        proc = subprocess.run(install, capture_output=True, text=True, env=env, check=False)
        if proc.returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True, env=env, check=False)
            proc = subprocess.run(install, capture_output=True, text=True, env=env, check=False)
        exe = shutil.which("redis-server")
        if exe is None:
            raise ServiceError(f"installing redis-server failed:\n{proc.stdout}{proc.stderr}")
        return exe

    def _redis_answers(self) -> bool:
        import redis

        try:
            client = redis.Redis(host="127.0.0.1", port=self.settings.redis_port, socket_timeout=1)
            return bool(client.ping())
        except redis.RedisError:
            return False

    def redis_status(self) -> ServiceStatus:
        pid = _read_pid(self._redis_pidfile())
        ours = _pid_alive(pid, "redis-server")
        port = self.settings.redis_port
        running = ours and _port_open(port)
        detail = ""
        if not ours and _port_open(port):
            detail = f"port {port} is in use by a process driftline did not start"
        return ServiceStatus(
            name="redis",
            running=running,
            pid=pid if ours else None,
            address=f"127.0.0.1:{port}",
            data_dir=str(self.redis_dir / "data"),
            log_file=str(self.redis_dir / "redis.log"),
            detail=detail or ("appendonly everysec" if running else ""),
        )

    def redis_up(self) -> ServiceStatus:
        status = self.redis_status()
        if status.running:
            self.log(f"redis already running (pid {status.pid}) on {status.address}")
            return status
        port = self.settings.redis_port
        if _port_open(port):
            raise ServiceError(
                f"port {port} is taken by another process; stop it or choose another port "
                "with DRIFTLINE_REDIS_PORT (and point DRIFTLINE_REDIS_URL at it)"
            )
        exe = self._redis_server()
        data = self.redis_dir / "data"
        data.mkdir(parents=True, exist_ok=True)
        log_file = self.redis_dir / "redis.log"
        cmd = [
            exe,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(data),
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--daemonize",
            "yes",
            "--pidfile",
            str(self._redis_pidfile()),
            "--logfile",
            str(log_file),
            "--save",
            "",
        ]
        self.log(f"starting redis on 127.0.0.1:{port}")
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise ServiceError(f"redis-server failed to start:\n{proc.stderr}{_tail(log_file)}")
        if not _wait(self._redis_answers, 30):
            raise ServiceError("redis did not answer PING within 30s:\n" + _tail(log_file))
        _wait(lambda: _pid_alive(_read_pid(self._redis_pidfile()), "redis-server"), 5)
        return self.redis_status()

    def redis_down(self) -> None:
        pid = _read_pid(self._redis_pidfile())
        if not _pid_alive(pid, "redis-server"):
            self.log("redis is not running")
            return
        assert pid is not None
        self.log(f"stopping redis (pid {pid})")
        os.kill(pid, signal.SIGTERM)
        if not _wait(lambda: not _pid_alive(pid, "redis-server"), 30):
            os.kill(pid, signal.SIGKILL)
        self._redis_pidfile().unlink(missing_ok=True)

    # ------------------------------------------------------------------ both
    def up(self) -> list[ServiceStatus]:
        return [self.redis_up(), self.kafka_up()]

    def down(self) -> None:
        self.kafka_down()
        self.redis_down()

    def status(self) -> list[ServiceStatus]:
        return [self.kafka_status(), self.redis_status()]
