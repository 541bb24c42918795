"""No secret in any process: worker, monitor, bridge and CLI commands, each with every secret set.

A SASL password in ``DRIFTLINE_KAFKA_OPTIONS`` (librdkafka accepts it with the local PLAINTEXT
listener and does not use it), a Redis password (a private ``redis-server`` with
``requirepass``), an SMTP password and Slack and webhook URLs with tokens. The pipeline's
alert fires on the first result and its targets all fail (SMTP on a closed port, a receiver
answering 500 and quoting the request path), so every error path that could echo a secret
runs. Then the logs, ``/metrics`` pages, every topic the run wrote (dead letters included)
and the Redis keys are searched for each secret.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import redis
from confluent_kafka import Consumer, TopicPartition

from driftline.alerts.testing import HttpReceiver
from driftline.config import KafkaSettings

from ._private_redis import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
FRAUD = ROOT / "examples" / "fraud"
SPEC = """\
name: fraud
models:
  - {{name: ccfraud, path: {models}/ccfraud.onnx}}
validations:
  no_high_fraud: ccfraud.outputs[0][0] < 0.95
alerts:
  any_traffic:
    when: count(ccfraud.outputs[0][0] >= 0, "1s", "1s") > 0
    notify: [email:ops@example.com, slack:ops, webhook:pager, stdout]
options: {{lateness: 0s, partitions: 1}}
"""


class _Redis:
    """A private ``redis-server`` that requires a password."""

    def __init__(self, tmp: Path, password: str) -> None:
        self.port = free_port()
        self.password = password
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(tmp), "--requirepass", password],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis(port=self.port, password=password, socket_connect_timeout=1)
        deadline = time.monotonic() + 15
        while True:
            try:
                if client.ping():
                    break
            except redis.exceptions.ConnectionError:
                if time.monotonic() > deadline:
                    raise AssertionError("the private redis-server did not answer") from None
                time.sleep(0.05)
        client.close()

    def dump(self) -> str:
        client = redis.Redis(port=self.port, password=self.password)
        out = []
        for key in client.scan_iter(count=1000):
            kind = client.type(key)
            out.append(repr(key))
            if kind == b"string":
                out.append(repr(client.get(key)))
            elif kind == b"hash":
                out.append(repr(client.hgetall(key)))
        client.close()
        return "\n".join(out)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(15)


def _topic_dump(prefix: str) -> tuple[str, dict[str, int]]:
    """Keys, values and headers of every message on the topics under ``prefix``."""
    consumer = Consumer(
        KafkaSettings().client_config(
            **{"group.id": f"audit-{time.time_ns()}", "isolation.level": "read_uncommitted"}
        )
    )
    topics = [t for t in consumer.list_topics(timeout=10).topics if t.startswith(prefix + ".")]
    parts = []
    for t in topics:
        md = consumer.list_topics(t, timeout=10).topics[t]
        for p in md.partitions:
            _low, high = consumer.get_watermark_offsets(TopicPartition(t, p), timeout=10)
            if high > 0:
                parts.append((t, p, high))
    consumer.assign([TopicPartition(t, p, 0) for t, p, _ in parts])
    remaining = {(t, p): high for t, p, high in parts}
    counts: dict[str, int] = {}
    out: list[str] = []
    deadline = time.monotonic() + 60
    while remaining and time.monotonic() < deadline:
        for msg in consumer.consume(500, 0.5):
            if msg.error() is not None:
                continue
            tp = (msg.topic(), msg.partition())
            counts[tp[0]] = counts.get(tp[0], 0) + 1
            out.append(repr((msg.key(), msg.value(), msg.headers())))
            if msg.offset() + 1 >= remaining.get(tp, 0):
                remaining.pop(tp, None)
        for tp in consumer.position([TopicPartition(t, p) for t, p in remaining]):
            if tp.offset >= remaining.get((tp.topic, tp.partition), 1 << 62):
                remaining.pop((tp.topic, tp.partition), None)
    consumer.close()
    return "\n".join(out), counts


def _wait(predicate: Callable[[], bool], what: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


@pytest.mark.timeout(400)
def test_no_secret_in_worker_monitor_bridge_or_cli(
    topic_prefix: str, unique: str, tmp_path: Path
) -> None:
    kafka_pw = f"kafka-pw-{unique}"
    redis_pw = f"redis-pw-{unique}"
    smtp_pw = f"smtp-pw-{unique}"
    slack_token = f"T0/B0/slacktoken{unique}"
    hook_token = f"hooktoken{unique}"
    hook_secret = f"signing-key-{unique}"
    secrets = [kafka_pw, redis_pw, smtp_pw, slack_token, hook_token, hook_secret]
    spec = tmp_path / "pipeline.yaml"
    spec.write_text(SPEC.format(models=FRAUD / "models"))
    private = _Redis(tmp_path, redis_pw)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    logs: dict[str, Path] = {}
    ports = {name: free_port() for name in ("worker", "monitor", "bridge")}
    outputs: list[str] = []
    try:
        with HttpReceiver(lambda p, n: (500, {}, 0.0), echo_path=True) as rx:
            env = {
                **os.environ,
                "DRIFTLINE_TOPIC_PREFIX": topic_prefix,
                "DRIFTLINE_PARTITIONS": "1",
                "DRIFTLINE_MODEL_STORE": str(tmp_path / "store"),
                "DRIFTLINE_KAFKA_OPTIONS": json.dumps(
                    {
                        "sasl.mechanism": "PLAIN",
                        "sasl.username": "svc",
                        "sasl.password": kafka_pw,
                        "session.timeout.ms": 6000,
                    }
                ),
                "DRIFTLINE_REDIS_URL": f"redis://:{redis_pw}@127.0.0.1:{private.port}/0",
                "DRIFTLINE_KEY_PREFIX": f"test:{unique}",
                "DRIFTLINE_SMTP_URL": f"smtp://ops:{smtp_pw}@127.0.0.1:{free_port()}",
                "DRIFTLINE_SLACK_WEBHOOKS": json.dumps({"ops": f"{rx.url}/services/{slack_token}"}),
                "DRIFTLINE_WEBHOOKS": json.dumps(
                    {"pager": {"url": f"{rx.url}/hook?token={hook_token}", "secret": hook_secret}}
                ),
                "DRIFTLINE_WORKER_GROUP": f"w-{unique}",
                "DRIFTLINE_WORKER_ID": f"w-{unique}",
                "DRIFTLINE_MONITOR_GROUP": f"m-{unique}",
                "DRIFTLINE_MONITOR_DATADIR": str(tmp_path / "faust"),
                "DRIFTLINE_BRIDGE_GROUP": f"b-{unique}",
                "DRIFTLINE_BRIDGE_MAX_ATTEMPTS": "2",
                "DRIFTLINE_BRIDGE_BACKOFF_S": "0.05",
                "DRIFTLINE_BRIDGE_TIMEOUT_S": "2",
                "DRIFTLINE_BRIDGE_GROUP_MS": "0",
                "DRIFTLINE_LOG_LEVEL": "DEBUG",
                "COLUMNS": "200",
            }

            def cli(*args: str) -> subprocess.CompletedProcess[str]:
                done = subprocess.run(
                    [sys.executable, "-m", "driftline", *args],
                    env=env, cwd=tmp_path, capture_output=True, text=True, timeout=180,
                )  # fmt: skip
                outputs.append(f"$ driftline {' '.join(args)}\n{done.stdout}\n{done.stderr}")
                return done

            deployed = cli("deploy", str(spec))
            assert deployed.returncode == 0, deployed.stderr
            for name, extra in (
                ("worker", ["--pipeline", "fraud"]),
                ("monitor", []),
                ("bridge", []),
            ):
                logs[name] = tmp_path / f"{name}.log"
                with logs[name].open("wb") as out:
                    procs[name] = subprocess.Popen(
                        [sys.executable, "-m", "driftline", name, *extra,
                         "--metrics-port", str(ports[name])],
                        env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT,
                    )  # fmt: skip
            served = cli(
                "infer", "fraud", "--file", str(FRAUD / "data" / "smoke_test.json"),
                "--json", "--timeout", "90",
            )  # fmt: skip
            assert served.returncode in (0, 1), served.stderr
            deadletter = f"{topic_prefix}.notifications.deadletter"

            def dead_letters() -> int:
                for name, proc in procs.items():
                    assert proc.poll() is None, f"{name} exited:\n{logs[name].read_text()[-3000:]}"
                return _topic_dump(topic_prefix)[1].get(deadletter, 0)

            # email, Slack and webhook of the firing (and later the resolved) transition
            _wait(lambda: dead_letters() >= 3, "the failed deliveries' dead letters")
            _wait(lambda: "FIRING: any_traffic" in logs["bridge"].read_text(), "stdout delivery")
            metrics = {
                name: httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
                for name, port in ports.items()
            }
            for args in (
                ("pipelines",),
                ("logs", "fraud", "--limit", "5"),
                ("alerts", "--pipeline", "fraud"),
                ("alerts", "--json"),
                ("assays", "fraud"),
                ("replay", "fraud", "--from", "now-10m", "--to", "now", "--audit"),
                ("logs", "no-such-pipeline"),
                ("deploy", str(tmp_path / "missing.yaml")),
            ):
                cli(*args)
            requests = rx.snapshot()
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        redis_text = private.dump() if private.proc.poll() is None else ""
        private.stop()

    written, counts = _topic_dump(topic_prefix)
    process_logs = {name: path.read_text(errors="replace") for name, path in logs.items()}
    cli_text = "\n".join(outputs)
    # The run did what could have leaked: results served, the alert fired and every failing
    # target was tried with its secret and dead-lettered.
    assert counts.get(f"{topic_prefix}.fraud.results", 0) > 0
    assert counts.get(f"{topic_prefix}.notifications", 0) >= 1
    assert any(slack_token in r.path for r in requests)
    assert any(hook_token in r.path for r in requests)
    assert "http-500" in written and "smtp-connection" in written
    assert "driftline_bridge_notifications_deadlettered_total" in metrics["bridge"]
    assert all("driftline_" in text for text in metrics.values())
    assert "any_traffic" in cli_text and "fraud" in cli_text
    assert redis_text  # the monitor and bridge wrote state
    places = {
        **{f"{name} log": text for name, text in process_logs.items()},
        **{f"{name} /metrics": text for name, text in metrics.items()},
        "CLI output": cli_text,
        "topics": written,
        "redis": redis_text,
    }
    for secret in secrets:
        for where, text in places.items():
            assert secret not in text, f"{secret} found in {where}"
