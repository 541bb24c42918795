"""A champion with a string and a numeric input (scikit-learn's ``ColumnTransformer`` exported
by skl2onnx with its defaults), monitored on its inputs by name on the real broker and Redis:
a validation on ``price.inputs["age"][0]`` runs in the worker, and ``driftline monitor`` windows
the same input for an assay and a count alert; the scores equal the detector's on the ages
sent, and replay's audit agrees."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from confluent_kafka import Producer

from driftline.config import KafkaSettings
from driftline.detectors import Baseline

from ._models_serve import Served, deploy
from ._monitor_helpers import start_watching, stop, wait_for
from .test_worker import _read

pytestmark = pytest.mark.integration

MINUTE = 60_000
CITIES = ["paris", "nice", "lyon"]


def _model(tmp: Path) -> Path:
    import pandas as pd
    from skl2onnx import to_onnx
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    rng = np.random.default_rng(2)
    frame = pd.DataFrame({"city": rng.choice(CITIES, 60), "age": rng.uniform(18, 80, 60)})
    pipe = make_pipeline(
        ColumnTransformer([("c", OneHotEncoder(), ["city"]), ("n", StandardScaler(), ["age"])]),
        LinearRegression(),
    ).fit(frame, frame["age"] * 10.0)
    path = tmp / "price.onnx"
    path.write_bytes(to_onnx(pipe, frame[:1], target_opset=17).SerializeToString())
    return path


def test_the_monitor_windows_a_named_numeric_input_of_a_two_input_champion(
    cli: Any,
    topic_prefix: str,
    redis_prefix: str,
    tmp_path: Path,
    unique: str,
    request: pytest.FixtureRequest,
) -> None:
    rng = np.random.default_rng(8)
    baseline = rng.uniform(18, 80, 300).round(2).tolist()
    kafka = KafkaSettings(topic_prefix=topic_prefix)
    store = tmp_path / "store"
    deploy(
        kafka,
        store,
        {
            "name": "price",
            "models": [{"name": "price", "path": str(_model(tmp_path))}],
            "validations": {"adult": 'price.inputs["age"][0] >= 18'},
            "alerts": {
                "minors": {
                    "when": 'count(price.inputs["age"][0] < 18, "1m", "1m") > 10',
                    "notify": ["stdout"],
                }
            },
            "assays": {
                "age_drift": {
                    "iopath": 'price.inputs["age"][0]',
                    "baseline": {"values": baseline},
                    "window": {"width": "1m"},
                    "metric": "psi",
                    "thresholds": {"warning": 0.1, "alert": 0.25},
                }
            },
            "options": {"lateness": "0s", "partitions": 1},
        },
    )
    t0 = (int(time.time() * 1000) - 30 * MINUTE) // MINUTE * MINUTE
    ages = {t0: rng.uniform(18, 80, 60).round(2), t0 + MINUTE: rng.uniform(5, 17, 60).round(2)}
    requests = []
    for start, values in ages.items():
        for i in range(0, values.size, 3):  # three rows per request, named inputs
            requests.append(
                {
                    "id": f"q{start}-{i}",
                    "time": start + i * 500,
                    "inputs": {
                        "city": rng.choice(CITIES, 3).tolist(),
                        "age": values[i : i + 3].tolist(),
                    },
                }
            )
    requests.append(
        {"id": "closer", "time": t0 + 2 * MINUTE + 1, "inputs": {"city": ["nice"], "age": [40.0]}}
    )
    env = dict(
        os.environ,
        DRIFTLINE_TOPIC_PREFIX=topic_prefix,
        DRIFTLINE_KEY_PREFIX=redis_prefix,
        DRIFTLINE_MODEL_STORE=str(store),
        DRIFTLINE_MONITOR_GROUP=f"monitor-{unique}",
        DRIFTLINE_MONITOR_DATADIR=str(tmp_path / "faust"),
        DRIFTLINE_MONITOR_IDLE_CLOSE_MS="3600000",
    )
    env.pop("DRIFTLINE_METRICS_PORT", None)
    log = tmp_path / "monitor.log"
    served = Served(kafka, store, unique)
    try:
        producer = Producer(kafka.client_config())
        for r in requests:
            producer.produce(kafka.topic("price", "requests"), orjson.dumps(r), r["id"].encode())
        assert producer.flush(30) == 0
        results = [
            orjson.loads(m.value()) for m in _read(kafka, kafka.topic("price", "results"), 121)
        ]
    finally:
        served.stop()
    assert len(results) == 121
    for e in results:
        age = e["inputs"]["age"][0]
        assert e["inputs"]["city"][0] in CITIES
        assert e["check_failures"] == ([] if age >= 18 else ["adult"])

    # The monitor starts once every result is written: a fetch of them read as faust resumed
    # its flow after the rebalance used to be dropped, and the monitor then read nothing more.
    proc = start_watching(env, tmp_path, log, kafka.topic("price", "results"))
    request.addfinalizer(lambda: stop(proc))  # also when an assertion below fails
    conf = kafka.client_config()
    try:
        assays = wait_for(
            conf,
            kafka.topic("assays"),
            lambda got: (
                {a["window_start"] for a in got if a["pipeline"] == "price"} >= {t0, t0 + MINUTE}
            ),
            timeout=120,
        )
        notes = wait_for(
            conf,
            kafka.topic("notifications"),
            lambda got: any(n["pipeline"] == "price" for n in got),
            timeout=60,
        )
    finally:
        stop(proc)
    text = log.read_text(errors="replace")
    windows = {a["window_start"]: a for a in assays if a["pipeline"] == "price"}
    base = Baseline.from_values(np.array(baseline))
    for start, values in ages.items():
        assert start in windows, text
        assert windows[start]["count"] == values.size
        assert windows[start]["score"] == pytest.approx(base.compare(values).score)
    assert windows[t0 + MINUTE]["status"] == "alert"
    firing = [
        (n["alert"], n["state"], n["window"]["start"]) for n in notes if n["pipeline"] == "price"
    ]
    assert ("minors", "firing", t0 + MINUTE) in firing, notes

    r = cli(
        env, "replay", "price", "--from", str(t0), "--to", str(t0 + 2 * MINUTE), "--audit", "--json"
    )
    assert r.returncode == 0, r.stdout + r.stderr
    audit = json.loads(r.stdout)["audit"]
    assert audit["differences"] == [] and audit["compared_assays"] >= 2, audit
