"""A 100k-row baseline deploys: stored by hash beside the models; the control message is small."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest
import redis
from confluent_kafka import Consumer

from driftline import Client
from driftline.config import KafkaSettings, Settings
from driftline.detectors import Baseline
from driftline.errors import SpecError
from driftline.spec import load_baseline_values, spec_from_canonical, spec_from_dict
from driftline.streams.monitor import build_engine

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fraud"
ROWS = 100_000


def _control_messages(settings: Settings, name: str) -> list[bytes]:
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "group.id": f"read-{settings.kafka.topic_prefix}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([settings.kafka.topic("pipelines")])
    found: list[bytes] = []
    try:
        for _ in range(60):
            msg = consumer.poll(0.5)
            if msg is not None and not msg.error() and msg.key() == name.encode():
                found.append(msg.value())
                break
    finally:
        consumer.close()
    return found


def test_a_100k_row_baseline_deploys_by_hash_and_the_monitor_reads_it(
    topic_prefix: str, tmp_path: Path, redis_client: redis.Redis, redis_prefix: str
) -> None:
    rng = np.random.default_rng(7)
    scores = rng.beta(1, 20, size=ROWS)
    (tmp_path / "baseline.csv").write_text(
        "score\n" + "\n".join(f"{v:.17g}" for v in scores) + "\n"
    )
    settings = Settings(
        model_store=tmp_path / "store", kafka=KafkaSettings(topic_prefix=topic_prefix)
    )
    spec = spec_from_dict(
        {
            "name": "big",
            "models": [{"name": "ccfraud", "path": str(EXAMPLE / "models" / "ccfraud.onnx")}],
            "assays": {
                "score_drift": {
                    "iopath": "ccfraud.outputs[0][0]",
                    "baseline": {"file": "baseline.csv", "column": "score"},
                    "window": {"width": "1m"},
                }
            },
        },
        tmp_path,
    )
    Client(settings).deploy(spec)

    [message] = _control_messages(settings, "big")
    assert len(message) < 20_000  # the values would be ~2 MB of JSON, over Kafka's 1 MB default
    canonical = orjson.loads(message)
    stored = canonical["assays"]["score_drift"]["baseline"]
    assert stored["count"] == ROWS and len(stored["sha256"]) == 64

    rebuilt = spec_from_canonical(canonical)
    values = load_baseline_values(rebuilt.assays["score_drift"], store=settings.model_store)
    assert values is not None
    np.testing.assert_array_equal(values, scores)

    engine, _ = build_engine(settings, canonical, redis_client, key_prefix=redis_prefix)
    [plan] = engine.assays
    expected = Baseline.from_values(scores)
    window = rng.beta(1, 20, size=500)
    got = plan.baseline.compare_counts(
        np.bincount(plan.baseline.fine_index(window), minlength=plan.baseline.num_fine_bins)
    )
    assert got.score == pytest.approx(expected.compare(window).score)


def test_a_baseline_missing_from_the_store_is_a_clear_error(tmp_path: Path) -> None:
    canonical_baseline = {"sha256": "ab" * 32, "count": 20_000}
    spec = spec_from_dict(
        {
            "name": "gone",
            "models": [{"name": "ccfraud", "path": str(EXAMPLE / "models" / "ccfraud.onnx")}],
            "assays": {
                "score_drift": {
                    "iopath": "ccfraud.outputs[0][0]",
                    "baseline": canonical_baseline,
                    "window": {"width": "1m"},
                }
            },
        }
    )
    with pytest.raises(SpecError, match="not in the store") as info:
        load_baseline_values(spec.assays["score_drift"], store=tmp_path)
    assert info.value.field == "assays.score_drift.baseline"
