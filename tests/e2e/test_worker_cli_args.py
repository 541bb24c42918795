"""`driftline worker` arguments a careless user may give: a pipeline named twice is served once,
a pipeline that is not deployed is a one-line error, never a traceback."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

Cli = Callable[..., subprocess.CompletedProcess[str]]

ROOT = Path(__file__).resolve().parents[2]
FRAUD = ROOT / "examples" / "fraud"


@pytest.fixture
def env(cli_env: Callable[..., dict[str, str]]) -> dict[str, str]:
    return cli_env(partitions=1, columns=300)


def test_a_pipeline_that_is_not_deployed_is_a_one_line_error(cli: Cli, env: dict[str, str]) -> None:
    # Without the test's consumer-only librdkafka option, which producers warn about.
    env = {k: v for k, v in env.items() if k != "DRIFTLINE_KAFKA_OPTIONS"}
    run = cli(env, "worker", "--pipeline", "nosuch", timeout=120)
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr and "SystemError" not in run.stderr
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, run.stderr
    assert "--pipeline nosuch: not deployed" in lines[0] and "driftline deploy" in lines[0]


def test_a_pipeline_named_twice_is_served_once(cli: Cli, env: dict[str, str]) -> None:
    deployed = cli(env, "deploy", str(FRAUD / "pipeline.yaml"))
    assert deployed.returncode == 0, deployed.stderr
    worker = subprocess.Popen(
        [sys.executable, "-m", "driftline", "worker", "--pipeline", "fraud", "--pipeline", "fraud"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ok = cli(
            env,
            "infer",
            "fraud",
            "--file",
            str(FRAUD / "data" / "smoke_test.json"),
            "--json",
            "--timeout",
            "90",
        )
        assert ok.returncode in (0, 1), ok.stderr
        smoke = json.loads((FRAUD / "data" / "smoke_test.json").read_text())
        results = json.loads(ok.stdout)
        assert [r["row"] for r in results] == list(range(len(smoke["tensor"])))
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            _out, err = worker.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            worker.kill()
            _out, err = worker.communicate()
    assert worker.returncode == 0, err[-2000:]
    assert "Traceback" not in err
