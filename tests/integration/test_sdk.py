"""The SDK as the README shows it: upload, build, deploy, infer, logs, undeploy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from driftline import Client, fn, notify
from driftline.config import KafkaSettings, Settings

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fraud"


def test_notebook_flow(topic_prefix: str, tmp_path: Path, unique: str) -> None:
    settings = Settings(
        model_store=tmp_path / "models", kafka=KafkaSettings(topic_prefix=topic_prefix)
    )
    client = Client(settings)
    champion = client.upload_model("ccfraud", EXAMPLE / "models" / "ccfraud.onnx")
    challenger = client.upload_model("fraud_base", EXAMPLE / "models" / "fraud_base.onnx")
    pipeline = (
        client.build_pipeline("fraud")
        .add_model_step(champion)
        .add_shadow_deploy(champion, [challenger])
        .add_validation("no_high_fraud", champion.outputs[0][0] < 0.95)
        .add_validation(
            "no_model_drift", fn.abs(champion.outputs[0][0] - challenger.outputs[0][0]) <= 0.05
        )
        .add_alert(
            "high_fraud_5m",
            fn.count(champion.outputs[0][0] > 0.95, "5m", "1s") > 10,
            [notify.Email(to="ops@example.com"), notify.Slack(channel="fraud-alerts")],
        )
        .deploy()
    )
    assert [p.name for p in client.pipelines()] == ["fraud"]
    assert client.spec("fraud").alerts["high_fraud_5m"].notify == (
        "email:ops@example.com",
        "slack:fraud-alerts",
    )

    env = dict(
        os.environ,
        DRIFTLINE_TOPIC_PREFIX=topic_prefix,
        DRIFTLINE_MODEL_STORE=str(settings.model_store),
        DRIFTLINE_WORKER_ID=f"sdk-{unique}",
    )
    worker = subprocess.Popen(
        [sys.executable, "-m", "driftline", "worker"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        smoke = pipeline.infer_from_file(EXAMPLE / "data" / "smoke_test.json", timeout=60)
        high_rows = json.loads((EXAMPLE / "data" / "high_fraud.json").read_text())["tensor"]
        high = pipeline.infer(high_rows, timeout=30)
    finally:
        worker.terminate()
        worker.wait(30)
    assert [r["check_failures"] for r in smoke] == [[]]
    assert [r["check_failures"] for r in high] == [["no_high_fraud"]]
    assert set(high[0]["outputs"]) == {"ccfraud", "fraud_base"}

    frame = pipeline.logs(limit=10, dataframe=True)
    assert list(frame["anomalies"]) == [0, 1]
    assert frame["output"].iloc[1][0] > 0.95

    assert pipeline.undeploy() is True
    assert client.pipelines() == []
