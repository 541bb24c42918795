"""Deploying the example pipeline with the CLI, as a user does from a fresh clone."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

Cli = Callable[..., subprocess.CompletedProcess[str]]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def env(topic_prefix: str, tmp_path: Path) -> dict[str, str]:
    return dict(
        os.environ,
        DRIFTLINE_TOPIC_PREFIX=topic_prefix,
        DRIFTLINE_MODEL_STORE=str(tmp_path / "store"),
        DRIFTLINE_PARTITIONS="1",
        COLUMNS="200",
    )


def test_version(cli: Cli) -> None:
    proc = cli(dict(os.environ), "--version")
    assert proc.returncode == 0
    assert proc.stdout.startswith("driftline ")


def test_deploy_list_undeploy_the_example(cli: Cli, env: dict[str, str], tmp_path: Path) -> None:
    deployed = cli(env, "deploy", "examples/fraud/pipeline.yaml")
    assert deployed.returncode == 0, deployed.stderr
    assert f"{env['DRIFTLINE_TOPIC_PREFIX']}.fraud.requests" in deployed.stdout

    listed = json.loads(cli(env, "pipelines", "--json").stdout)
    assert [p["name"] for p in listed] == ["fraud"]
    assert listed[0]["models"] == ["ccfraud", "fraud_base"]
    assert listed[0]["version"].startswith("sha256:")
    assert listed[0]["version"] in deployed.stdout.replace("\n", "")

    models = json.loads(cli(env, "model", "list", "--json").stdout)
    assert sorted(models) == ["ccfraud", "fraud_base"]
    stored = list((tmp_path / "store").rglob("*.onnx"))
    assert len(stored) == 2

    assert cli(env, "undeploy", "fraud").returncode == 0
    assert json.loads(cli(env, "pipelines", "--json").stdout) == []
    again = cli(env, "undeploy", "fraud")
    assert again.returncode == 2
    assert "not deployed" in again.stderr


def test_invalid_spec_is_a_usage_error_naming_the_field(
    cli: Cli, env: dict[str, str], tmp_path: Path
) -> None:
    spec = (ROOT / "examples/fraud/pipeline.yaml").read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        spec.replace("models/", str(ROOT / "examples/fraud/models") + "/")
        .replace("data/baseline.csv", str(ROOT / "examples/fraud/data/baseline.csv"))
        .replace('"5m", "1s"', '"5 minutes", "1s"')
    )
    proc = cli(env, "deploy", str(bad))
    assert proc.returncode == 2
    assert "alerts.high_fraud_5m" in proc.stderr
    assert "5 minutes" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_model_upload_refuses_a_file_that_is_not_onnx(
    cli: Cli, env: dict[str, str], tmp_path: Path
) -> None:
    fake = tmp_path / "model.onnx"
    fake.write_bytes(b"not a model")
    proc = cli(env, "model", "upload", "fake", str(fake))
    assert proc.returncode == 2
    assert "model.onnx" in proc.stderr
    assert "Traceback" not in proc.stderr

    ok = cli(env, "model", "upload", "ccfraud", "examples/fraud/models/ccfraud.onnx")
    assert ok.returncode == 0, ok.stderr
    assert "output probability" in ok.stdout
    listed = json.loads(cli(env, "model", "list", "--json").stdout)
    assert list(listed) == ["ccfraud"]


def test_infer_on_a_pipeline_without_models_says_where_requests_go(
    cli: Cli, env: dict[str, str], tmp_path: Path
) -> None:
    spec = tmp_path / "external.yaml"
    spec.write_text(
        "name: external-fraud\n"
        "models: []\n"
        "source: {topic: mlserver-responses, format: v2-pairs, requests: mlserver-requests,"
        " model: ccfraud}\n"
        "inputs: [{name: tensor, shape: [29], dtype: float32}]\n"
        "outputs: [{name: probability, shape: [1], dtype: float32}]\n"
    )
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"tensor": [[0.0] * 29]}))
    deployed = cli(env, "deploy", str(spec))
    assert deployed.returncode == 0, deployed.stderr
    sent = cli(env, "infer", "external-fraud", "--file", str(request), "--timeout", "5")
    assert sent.returncode == 2, (sent.stdout, sent.stderr)
    message = " ".join(sent.stderr.split())
    assert "'mlserver-requests'" in message and "not to driftline infer" in message
