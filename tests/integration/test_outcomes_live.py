"""Outcomes where users look: labels sent with `driftline feedback` after their predictions are
joined by `driftline monitor`; `driftline performance` lists each window's realized accuracy
exactly, and the accuracy alert's email reaches a real SMTP server through `driftline bridge`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from confluent_kafka import Producer

from driftline import Client
from driftline.config import KafkaSettings, Settings
from driftline.demo import SmtpSink
from driftline.spec import spec_from_dict

from ._stack import Stack, fraud_result

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fraud"
MINUTE = 60_000
PER_WINDOW = 100
WINDOWS = 4


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "driftline", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_late_labels_revise_windows_listed_by_driftline_performance_and_alert_by_email(
    topic_prefix: str, redis_prefix: str, tmp_path: Path, unique: str
) -> None:
    settings = Settings(
        model_store=tmp_path / "store", kafka=KafkaSettings(topic_prefix=topic_prefix)
    )
    spec = spec_from_dict(
        {
            "name": "quality",
            "models": [{"name": "ccfraud", "path": str(EXAMPLE / "models" / "ccfraud.onnx")}],
            "performance": {
                "fraud_quality": {
                    "task": "binary",
                    "prediction": "ccfraud.outputs[0][0]",
                    "threshold": 0.5,
                    "window": {"width": "1m"},
                    "alerts": {
                        "accuracy_drop": {
                            "when": "accuracy < 0.8",
                            "min_labeled": 50,
                            "notify": ["email:quality@example.com"],
                        }
                    },
                }
            },
            "options": {"lateness": "0s", "partitions": 1},
        },
        EXAMPLE,
    )
    Client(settings).deploy(spec)
    smtp = SmtpSink().start()
    env = dict(
        os.environ,
        DRIFTLINE_TOPIC_PREFIX=topic_prefix,
        DRIFTLINE_KEY_PREFIX=redis_prefix,
        DRIFTLINE_MODEL_STORE=str(settings.model_store),
        DRIFTLINE_MONITOR_GROUP=f"monitor-{unique}",
        DRIFTLINE_BRIDGE_GROUP=f"bridge-{unique}",
        DRIFTLINE_BRIDGE_GROUP_MS="200",
        DRIFTLINE_SMTP_URL=f"smtp://127.0.0.1:{smtp.port}",
        DRIFTLINE_SMTP_FROM="driftline@localhost",
    )
    env.pop("DRIFTLINE_METRICS_PORT", None)

    rng = np.random.default_rng(3)
    t0 = (int(time.time() * 1000) - 30 * MINUTE) // MINUTE * MINUTE
    scores = rng.uniform(0, 1, WINDOWS * PER_WINDOW)
    predicted = (scores >= 0.5).astype(int)
    # the first two windows' labels agree with the model; later ones disagree on 40 %
    wrong = np.zeros_like(predicted, dtype=bool)
    wrong[2 * PER_WINDOW :] = rng.uniform(size=(WINDOWS - 2) * PER_WINDOW) < 0.4
    labels = np.where(wrong, 1 - predicted, predicted)
    times = np.concatenate(
        [t0 + w * MINUTE + np.sort(rng.integers(0, MINUTE, PER_WINDOW)) for w in range(WINDOWS)]
    )
    expected = [
        float(
            np.mean(
                labels[w * PER_WINDOW : (w + 1) * PER_WINDOW]
                == predicted[w * PER_WINDOW : (w + 1) * PER_WINDOW]
            )
        )
        for w in range(WINDOWS)
    ]
    assert expected[0] == 1.0 and expected[3] < 0.8

    stack = Stack(env, tmp_path / "logs")
    try:
        stack.start("monitor", "monitor")
        stack.start("bridge", "bridge", "--channels", "email")
        producer = Producer(settings.kafka.client_config())
        topic = settings.kafka.topic("quality", "results")
        for i, (t, s) in enumerate(zip(times.tolist(), scores.tolist(), strict=True)):
            producer.produce(topic, fraud_result("quality", i, t, s), partition=0, timestamp=t)
        # one prediction past the last window, so the join's watermark closes it
        end = t0 + WINDOWS * MINUTE + 1
        producer.produce(
            topic, fraud_result("quality", 10**6, end, 0.1), partition=0, timestamp=end
        )
        assert producer.flush(30) == 0

        def performance() -> list[dict[str, Any]]:
            proc = _cli(env, "performance", "quality", "--json")
            assert proc.returncode == 0, proc.stderr
            return list(json.loads(proc.stdout))

        # windows close with their predictions, before any label: revision 0, nothing labeled
        first = stack.wait("the closed windows", lambda: len(p := performance()) >= WINDOWS and p)
        assert all(e["labeled"] == 0 for e in first[:WINDOWS])

        # labels arrive late, shuffled, a few twice (the last one wins; both are the same here)
        order = rng.permutation(len(labels))
        lines = [{"id": f"r{i}", "label": int(labels[i])} for i in order]
        lines += [{"id": f"r{i}", "label": int(labels[i])} for i in order[:20]]
        (tmp_path / "labels.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
        sent = _cli(env, "feedback", "quality", "--file", str(tmp_path / "labels.jsonl"))
        assert sent.returncode == 0, sent.stderr

        final = stack.wait(
            "every window revised with its labels",
            lambda: (
                (p := performance()) and all(e["labeled"] == PER_WINDOW for e in p[:WINDOWS]) and p
            ),
        )
        mail = stack.wait(
            "the accuracy_drop email",
            lambda: [m for m in smtp.snapshot() if "accuracy_drop" in str(m["Subject"])],
        )
        assert not stack.dead(), stack.tails()
    finally:
        stack.stop()
        smtp.stop()

    windows = sorted(final, key=lambda e: e["window_end"])[:WINDOWS]
    assert [e["window_start"] for e in windows] == [t0 + w * MINUTE for w in range(WINDOWS)]
    for e, acc in zip(windows, expected, strict=True):
        assert e["metrics"]["accuracy"] == pytest.approx(acc), e
        assert e["revision"] >= 1 and e["predictions"] == PER_WINDOW
    assert mail[0]["To"] == "quality@example.com"
    assert "FIRING" in str(mail[0]["Subject"])
