"""Deploy the fraud example, run `driftline worker`, then infer, produce and read logs."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

pytestmark = pytest.mark.e2e

Cli = Callable[..., subprocess.CompletedProcess[str]]

ROOT = Path(__file__).resolve().parents[2]
FRAUD = ROOT / "examples" / "fraud"


@pytest.fixture
def env(cli_env: Callable[..., dict[str, str]]) -> dict[str, str]:
    return cli_env(partitions=2, columns=200)


def _direct(model: str, rows: list[list[float]]) -> list[float]:
    session = ort.InferenceSession(
        str(FRAUD / "models" / model), providers=["CPUExecutionProvider"]
    )
    name = session.get_inputs()[0].name
    out = session.run(None, {name: np.asarray(rows, dtype=np.float32)})[0]
    return np.asarray(out).reshape(len(rows), -1)[:, 0].tolist()


def test_worker_serves_infer_produce_and_logs(
    cli: Cli, env: dict[str, str], tmp_path: Path
) -> None:
    deployed = cli(env, "deploy", str(FRAUD / "pipeline.yaml"))
    assert deployed.returncode == 0, deployed.stderr
    worker = subprocess.Popen(
        [sys.executable, "-m", "driftline", "worker", "--pipeline", "fraud"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        smoke = json.loads((FRAUD / "data" / "smoke_test.json").read_text())
        ok = cli(
            env,
            "infer",
            "fraud",
            "--file",
            str(FRAUD / "data" / "smoke_test.json"),
            "--json",
            "--timeout",
            "60",
        )
        assert ok.returncode in (0, 1), ok.stderr
        results = json.loads(ok.stdout)
        assert [r["row"] for r in results] == list(range(len(smoke["tensor"])))
        champ = _direct("ccfraud.onnx", smoke["tensor"])
        base = _direct("fraud_base.onnx", smoke["tensor"])
        for r, c, b in zip(results, champ, base, strict=True):
            assert r["outputs"]["ccfraud"][0][0] == pytest.approx(c, rel=1e-6)
            assert r["outputs"]["fraud_base"][0][0] == pytest.approx(b, rel=1e-6)
            expected = [
                n
                for n, bad in (
                    ("no_high_fraud", not c < 0.95),
                    ("no_model_drift", not abs(c - b) <= 0.05),
                )
                if bad
            ]
            assert r["check_failures"] == expected
            assert set(r["models"]) == {"ccfraud", "fraud_base"}
        assert ok.returncode == (1 if any(r["check_failures"] for r in results) else 0)

        high = cli(env, "infer", "fraud", "--file", str(FRAUD / "data" / "high_fraud.json"))
        assert high.returncode == 1, high.stderr
        assert "no_high_fraud" in high.stdout

        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps({"tensor": [[1.0, 2.0]]}))
        rejected = cli(env, "infer", "fraud", "--file", str(bad))
        assert rejected.returncode == 2
        assert "wrong_width" in rejected.stderr

        rows = tmp_path / "rows.jsonl"
        rows.write_text("".join(json.dumps(smoke["tensor"][0]) + "\n" for _ in range(30)))
        produced = cli(env, "produce", "fraud", "--file", str(rows), "--rate", "200")
        assert produced.returncode == 0, produced.stderr
        assert "sent 30 requests" in produced.stdout

        # Each served request has committed by the time infer returned; produce's 30 follow.
        total = (
            len(smoke["tensor"])
            + len(json.loads((FRAUD / "data" / "high_fraud.json").read_text())["tensor"])
            + 30
        )
        import time

        deadline = time.monotonic() + 60
        listed: list[dict[str, object]] = []
        while time.monotonic() < deadline:
            logs = cli(env, "logs", "fraud", "--limit", str(total + 10), "--json")
            assert logs.returncode == 0, logs.stderr
            listed = json.loads(logs.stdout)
            if len(listed) >= total:
                break
            time.sleep(1)
        assert len(listed) == total
        failures = cli(env, "logs", "fraud", "--failures-only", "--json")
        failed = json.loads(failures.stdout)
        assert failed and all(r["check_failures"] for r in failed)
        assert any("no_high_fraud" in r["check_failures"] for r in failed)
        table = cli(env, "logs", "fraud", "--limit", "3")
        assert table.returncode == 0 and "anomalies" in table.stdout
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            _out, err = worker.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            worker.kill()
            _out, err = worker.communicate()
    assert worker.returncode == 0, err[-2000:]
    assert "stopped:" in err
