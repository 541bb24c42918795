"""Drift reaches people: an assay's warning, alert and return to ok arrive in a real inbox, at a
real HTTP receiver and on the bridge's stdout, from `driftline monitor` and `driftline bridge` run
as a user runs them."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import orjson
import pytest
from confluent_kafka import Producer

from driftline import Client
from driftline.alerts.testing import HttpReceiver, always
from driftline.config import KafkaSettings, Settings
from driftline.demo import SmtpSink
from driftline.detectors import Baseline
from driftline.spec import spec_from_dict

from ._stack import Stack, fraud_result

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fraud"
MINUTE = 60_000
PER_WINDOW = 400


def _windows(rng: np.random.Generator, baseline: np.ndarray) -> list[np.ndarray]:
    """Minutes of scores: normal, mildly drifted (warning), strongly drifted (alert), normal."""

    def normal() -> np.ndarray:
        return rng.choice(baseline, PER_WINDOW)

    def mixed(share: float) -> np.ndarray:
        n = int(PER_WINDOW * share)
        return np.concatenate([rng.choice(baseline, PER_WINDOW - n), rng.uniform(0.6, 1.0, n)])

    return [normal(), normal(), mixed(0.2), mixed(0.5), mixed(0.5), normal(), normal()]


def _statuses(windows: list[np.ndarray], baseline: np.ndarray) -> list[str]:
    base = Baseline.from_values(baseline)
    out = []
    for w in windows:
        r = base.compare(w)
        out.append("alert" if r.score >= 0.25 else "warning" if r.score >= 0.1 else "ok")
    return out


def test_an_assay_notifies_email_webhook_and_stdout_of_warning_alert_and_ok(
    topic_prefix: str, redis_prefix: str, tmp_path: Path, unique: str
) -> None:
    baseline = np.loadtxt(EXAMPLE / "data" / "baseline.csv", delimiter=",", skiprows=1)
    rng = np.random.default_rng(11)
    windows = _windows(rng, baseline)
    expected = _statuses(windows, baseline)
    # The data must drive the lifecycle the test is about, whatever the seed.
    assert expected == ["ok", "ok", "warning", "alert", "alert", "ok", "ok"], expected

    settings = Settings(
        model_store=tmp_path / "store", kafka=KafkaSettings(topic_prefix=topic_prefix)
    )
    spec = spec_from_dict(
        {
            "name": "drift",
            "models": [{"name": "ccfraud", "path": str(EXAMPLE / "models" / "ccfraud.onnx")}],
            "assays": {
                "score_drift": {
                    "iopath": "ccfraud.outputs[0][0]",
                    "baseline": {"file": "data/baseline.csv", "column": "score"},
                    "window": {"width": "1m"},
                    "metric": "psi",
                    "thresholds": {"warning": 0.1, "alert": 0.25},
                    "notify": ["email:drift@example.com", "webhook:audit", "stdout"],
                }
            },
            "options": {"lateness": "0s", "partitions": 1},
        },
        EXAMPLE,
    )
    Client(settings).deploy(spec)

    smtp = SmtpSink().start()
    hook = HttpReceiver(always(200)).start()
    env = dict(
        os.environ,
        DRIFTLINE_TOPIC_PREFIX=topic_prefix,
        DRIFTLINE_KEY_PREFIX=redis_prefix,
        DRIFTLINE_MODEL_STORE=str(settings.model_store),
        DRIFTLINE_MONITOR_GROUP=f"monitor-{unique}",
        # no idle close: the window of the one closing event must stay open
        DRIFTLINE_MONITOR_IDLE_CLOSE_MS=str(3_600_000),
        DRIFTLINE_BRIDGE_GROUP=f"bridge-{unique}",
        DRIFTLINE_BRIDGE_GROUP_MS="200",
        DRIFTLINE_SMTP_URL=f"smtp://127.0.0.1:{smtp.port}",
        DRIFTLINE_SMTP_FROM="driftline@localhost",
        DRIFTLINE_WEBHOOKS=json.dumps({"audit": {"url": f"{hook.url}/audit", "secret": "k"}}),
    )
    env.pop("DRIFTLINE_METRICS_PORT", None)
    stack = Stack(env, tmp_path / "logs")
    try:
        stack.start("monitor", "monitor")
        stack.start("bridge", "bridge", "--channels", "email,webhook,stdout")
        # Event time an hour back, aligned to the minute: history the monitor must still window.
        t0 = (int(time.time() * 1000) - 60 * MINUTE) // MINUTE * MINUTE
        producer = Producer(settings.kafka.client_config())
        topic = settings.kafka.topic("drift", "results")
        i = 0
        for w, scores in enumerate(windows):
            times = t0 + w * MINUTE + np.sort(rng.integers(0, MINUTE, scores.size))
            for t, s in zip(times.tolist(), scores.tolist(), strict=True):
                producer.produce(topic, fraud_result("drift", i, t, s), partition=0, timestamp=t)
                i += 1
        # one event past the last window, so the watermark closes it
        end = t0 + len(windows) * MINUTE + 1
        producer.produce(
            topic, fraud_result("drift", i, end, float(baseline[0])), partition=0, timestamp=end
        )
        assert producer.flush(30) == 0

        stack.wait("three assay emails", lambda: len(smtp.snapshot()) >= 3)
        stack.wait("three webhook calls", lambda: len(hook.snapshot()) >= 3)
        time.sleep(2)  # anything beyond the three transitions would show now
        mails, posts = smtp.snapshot(), hook.snapshot()
        assert not stack.dead(), stack.tails()
    finally:
        stack.stop()
        smtp.stop()
        hook.stop()

    assert len(mails) == 3, [m["Subject"] for m in mails]
    assert [m["To"] for m in mails] == ["drift@example.com"] * 3
    bodies = [m.get_body(preferencelist=("plain",)).get_content() for m in mails]  # type: ignore[union-attr]
    for body in bodies:
        assert "score_drift" in body and "psi" in body.lower()
        assert "driftline replay drift" in body

    payloads = [orjson.loads(p.body) for p in posts]
    assert [p["kind"] for p in payloads] == ["assay"] * 3
    # one transition per call (grouping would put several in one body)
    notes = [n for p in payloads for n in p["notifications"]]
    assert [n["state"] for n in notes] == ["firing", "firing", "resolved"]
    assert [n["severity"] for n in notes[:2]] == ["warning", "critical"]
    details = [n["details"] for n in notes]
    assert [d["assay_status"] for d in details] == ["warning", "alert", "ok"]
    for d in details:
        assert d["metric"] == "psi"
        assert d["window_count"] == PER_WINDOW
        assert d["baseline_count"] == baseline.size
    windows_notified = [n["window"]["start"] for n in notes]
    assert windows_notified == [t0 + 2 * MINUTE, t0 + 3 * MINUTE, t0 + 5 * MINUTE]

    printed = stack.log("bridge").read_text()
    assert printed.count("score_drift") >= 3
