"""Bad arguments and poisoned data meet the CLI as a user runs it: one line, a meaningful exit.

Exit 2 is bad usage or input, 3 a service failure; no traceback ever reaches the terminal, and
a listing shows an event it cannot read as unreadable and goes on with the rest.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Producer

from driftline.config import load_settings

pytestmark = pytest.mark.e2e

Cli = Callable[..., subprocess.CompletedProcess[str]]

ROOT = Path(__file__).resolve().parents[2]
FRAUD = ROOT / "examples" / "fraud"


@pytest.fixture
def env(cli_env: Callable[..., dict[str, str]]) -> dict[str, str]:
    return cli_env(partitions=1, columns=200, fast_join=False)


def _one_line_error(proc: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    """The command failed with ``code`` and one line on stderr naming every word."""
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: "), proc.stderr
    for w in words:
        assert w in lines[0], (w, proc.stderr)


def test_bad_arguments_are_one_line_usage_errors(
    cli: Cli, env: dict[str, str], tmp_path: Path
) -> None:
    _one_line_error(cli(env, "infer", "fraud", "--file", str(tmp_path)), 2, "--file", "directory")
    _one_line_error(cli(env, "produce", "fraud", "--file", str(tmp_path)), 2, "--file", "directory")
    for command in ("worker", "monitor", "bridge"):
        _one_line_error(cli(env, command, "--metrics-port", "99999"), 2, "--metrics-port", "65535")
    _one_line_error(cli(env, "infer", "fraud"), 2, "--file")
    _one_line_error(cli(env, "no-such-command"), 2, "no-such-command")
    _one_line_error(cli(env, "logs", "nowhere"), 2, "nowhere", "does not exist")


def _deploy(cli: Cli, env: dict[str, str]) -> None:
    deployed = cli(env, "deploy", str(FRAUD / "pipeline.yaml"))
    assert deployed.returncode == 0, deployed.stderr


def test_replay_refuses_times_out_of_range_in_one_line(cli: Cli, env: dict[str, str]) -> None:
    _deploy(cli, env)
    _one_line_error(cli(env, "replay", "fraud", "--from", "0", "--to", "now"), 2, "--from", "'0'")
    _one_line_error(
        cli(env, "replay", "fraud", "--from", "now-999999999999d", "--to", "now"),
        2,
        "--from",
        "now-999999999999d",
    )
    _one_line_error(
        cli(env, "replay", "fraud", "--from", "now-1h", "--to", "99999999999999999999"),
        2,
        "--to",
    )
    # The same pipeline replays fine over a sane range: the refusals are about the times.
    ok = cli(env, "replay", "fraud", "--from", "now-1h", "--to", "now", "--json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["pipeline"] == "fraud"


def _produce(env: dict[str, str], topic: str, values: list[bytes]) -> None:
    producer = Producer(load_settings().kafka.client_config(**{"linger.ms": 0}))
    for v in values:
        producer.produce(topic, v, key=b"k")
    assert producer.flush(30) == 0


def test_listings_show_a_poisoned_event_as_unreadable_and_list_the_rest(
    cli: Cli, env: dict[str, str]
) -> None:
    _deploy(cli, env)
    prefix = env["DRIFTLINE_TOPIC_PREFIX"]
    now = int(time.time() * 1000)
    good_result = {
        "id": "r-good",
        "row": 0,
        "time": now,
        "pipeline": "fraud",
        "spec": "sha256:x",
        "inputs": [1.0],
        "outputs": {"ccfraud": [[0.5]]},
        "models": {},
        "check_failures": [],
        "elapsed_ns": 1,
    }
    poisoned_result = dict(good_result, id="r-poison", time=1e300)
    _produce(
        env,
        f"{prefix}.fraud.results",
        [json.dumps(good_result).encode(), json.dumps(poisoned_result).encode(), b"\xff{not json"],
    )
    good_assay = {
        "pipeline": "fraud",
        "assay": "score_drift",
        "iopath": "x",
        "window_start": now - 60_000,
        "window_end": now,
        "count": 5,
        "metric": "psi",
        "score": 0.01,
        "p_value": None,
        "status": "ok",
    }
    poisoned_assay = dict(good_assay, assay="[red]poison", window_end=9e18)
    _produce(
        env,
        f"{prefix}.assays",
        [json.dumps(good_assay).encode(), json.dumps(poisoned_assay).encode(), b"[1, 2"],
    )
    good_note = {
        "id": "n-good",
        "alert": "high_fraud_5m",
        "pipeline": "fraud",
        "state": "firing",
        "value": 11,
        "condition": "count > 10",
        "at": now,
        "severity": "warning",
    }
    poisoned_note = dict(good_note, id="n-poison", at=1e300)
    _produce(
        env,
        f"{prefix}.notifications",
        [json.dumps(good_note).encode(), json.dumps(poisoned_note).encode()],
    )

    for args, good, bad in (
        (("logs", "fraud"), "r-good", "r-poison"),
        (("assays", "fraud"), "score_drift", "[red]poison"),
        (("alerts", "--pipeline", "fraud"), "n-good", "n-poison"),
    ):
        table = cli(env, *args)
        assert table.returncode == 0, table.stderr
        assert "Traceback" not in table.stderr
        assert good in table.stdout
        assert "unreadable" in table.stdout
        assert bad in table.stdout, table.stdout
        assert "unreadable" in table.stderr  # the count, said once

        listed = cli(env, *args, "--json")
        assert listed.returncode == 0, listed.stderr
        assert good in listed.stdout and bad.split()[0] in listed.stdout

    assert "not JSON" in cli(env, "logs", "fraud").stdout
    logs = json.loads(cli(env, "logs", "fraud", "--json").stdout)
    assert [e.get("id") for e in logs[:2]] == ["r-good", "r-poison"]
    assert logs[2]["unreadable"].startswith("not JSON") and logs[2]["offset"] == 2


def _worker(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "driftline", "worker", *args],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _stop(worker: subprocess.Popen[str]) -> str:
    worker.send_signal(signal.SIGTERM)
    try:
        _out, err = worker.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        worker.kill()
        _out, err = worker.communicate()
    return err


def test_worker_collapses_a_repeated_pipeline_and_logs_lists_its_dead_letters(
    cli: Cli, env: dict[str, str], tmp_path: Path
) -> None:
    _deploy(cli, env)
    # Short sessions make the worker's group join fast (a consumer option: the CLI's own
    # producers would warn about it on stderr).
    fast = dict(env, DRIFTLINE_KAFKA_OPTIONS=json.dumps({"session.timeout.ms": 6000}))
    worker = _worker(fast, "--pipeline", "fraud", "--pipeline", "fraud")
    try:
        served = cli(
            env, "infer", "fraud", "--file", str(FRAUD / "data" / "smoke_test.json"), "--json"
        )
        assert served.returncode in (0, 1), served.stderr
        assert json.loads(served.stdout)[0]["pipeline"] == "fraud"

        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps({"id": "r-narrow", "tensor": [[1.0, 2.0]]}))
        rejected = cli(env, "infer", "fraud", "--file", str(bad))
        _one_line_error(rejected, 2, "wrong_width")
    finally:
        err = _stop(worker)
    assert worker.returncode == 0, err[-2000:]

    letters = cli(env, "logs", "fraud", "--dead-letters", "--json")
    assert letters.returncode == 0, letters.stderr
    [letter] = json.loads(letters.stdout)
    assert letter["reason"] == "wrong_width"
    assert letter["detail"]
    assert letter["key"] == "r-narrow"
    assert letter["source_topic"] == f"{env['DRIFTLINE_TOPIC_PREFIX']}.fraud.requests"
    assert letter["source_partition"] == 0 and isinstance(letter["source_offset"], int)
    assert "r-narrow" in letter["preview"]

    table = cli(env, "logs", "fraud", "--dead-letters")
    assert table.returncode == 0, table.stderr
    assert "wrong_width" in table.stdout and "r-narrow" in table.stdout

    # --failures-only still means results with check failures; with dead letters it is refused.
    _one_line_error(
        cli(env, "logs", "fraud", "--dead-letters", "--failures-only"), 2, "--failures-only"
    )


def test_worker_for_a_pipeline_that_is_not_deployed_is_a_usage_error(
    cli: Cli, env: dict[str, str]
) -> None:
    _deploy(cli, env)
    proc = cli(env, "worker", "--pipeline", "missing", timeout=120)
    _one_line_error(proc, 2, "missing")
