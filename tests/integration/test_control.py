"""Deploy, list, redeploy and undeploy through the compacted control topic."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import pytest

from driftline.config import KafkaSettings, Settings
from driftline.sdk import Client
from driftline.spec import load_spec
from driftline.streams.control import ControlPlane, Follower, spec_version

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fraud" / "pipeline.yaml"


@pytest.fixture
def settings(topic_prefix: str, tmp_path: Path) -> Settings:
    """Settings with a private topic prefix and model store."""
    return Settings(
        model_store=tmp_path / "models",
        kafka=KafkaSettings(topic_prefix=topic_prefix, partitions=1),
    )


def _changed_threshold(spec):  # type: ignore[no-untyped-def]
    # A different validation makes a different canonical spec, hence a new version.
    from driftline.expressions import parse

    validations = dict(spec.validations)
    validations["no_high_fraud"] = parse("ccfraud.outputs[0][0] < 0.9")
    return dataclasses.replace(spec, validations=validations)


def test_deploy_list_redeploy_undeploy_and_followers(settings: Settings) -> None:
    spec = load_spec(EXAMPLE)
    client = Client(settings)
    late_plane = ControlPlane(settings.kafka)
    late_plane.ensure_control_topics()
    live = Follower(settings.kafka)
    assert live.snapshot() == {}

    first = client.deploy(spec)
    assert first.version == spec.version == spec_version(spec.to_canonical())
    assert [p.name for p in client.pipelines()] == [spec.name]
    md = late_plane._admin.list_topics(timeout=10)
    for kind in ("requests", "results", "deadletter", "feedback"):
        assert settings.kafka.topic(spec.name, kind) in md.topics

    changed = _changed_threshold(spec)
    second = client.deploy(changed)
    assert second.version != first.version
    assert client.pipeline(spec.name).version == second.version

    # A follower started after the fact sees only the current state.
    after = Follower(settings.kafka)
    assert {n: spec_version(c) for n, c in after.snapshot().items()} == {spec.name: second.version}
    after.close()

    assert first.undeploy() is True
    assert client.pipelines() == []
    assert late_plane.undeploy(spec.name) is False

    # A follower running during the changes saw each one, in order.
    seen: list[tuple[str, str | None]] = []
    deadline = time.monotonic() + 20
    while len(seen) < 3 and time.monotonic() < deadline:
        seen += [(n, spec_version(c) if c else None) for n, c in live.poll(0.5)]
    live.close()
    assert seen == [
        (spec.name, first.version),
        (spec.name, second.version),
        (spec.name, None),
    ]


def test_models_are_recorded_with_versions(settings: Settings) -> None:
    spec = load_spec(EXAMPLE)
    client = Client(settings)
    for m in spec.models:
        client.upload_model(m.name, m.path)
    models = ControlPlane(settings.kafka).models()
    assert sorted(models) == sorted(m.name for m in spec.models)
    for m in spec.models:
        (version,) = models[m.name]
        assert version["sha256"] == m.sha256
        assert (settings.model_store / "sha256").exists()


def test_ensure_topics_creates_once_waits_for_leaders_and_counts_partitions(
    settings: Settings, unique: str
) -> None:
    from driftline.errors import DriftlineError
    from driftline.kafka.admin import ensure_topics, partition_count
    from driftline.streams import control

    # the control plane's name for it is the Kafka layer's function, not a copy
    assert control.ensure_topics is ensure_topics
    topics = [settings.kafka.topic("admin", unique, "a"), settings.kafka.topic("admin", unique)]
    ensure_topics(settings.kafka, topics, partitions=3)
    assert [partition_count(settings.kafka, t) for t in topics] == [3, 3]
    # existing topics are left as they are, whatever is asked now
    ensure_topics(settings.kafka, topics, partitions=5)
    assert partition_count(settings.kafka, topics[0]) == 3
    with pytest.raises(DriftlineError, match="does not exist"):
        partition_count(settings.kafka, settings.kafka.topic("admin", unique, "missing"))


def test_rebalance_tracks_a_real_group_assignment_and_revokes_on_close(
    settings: Settings, unique: str
) -> None:
    from confluent_kafka import Consumer

    from driftline.kafka.admin import ensure_topics
    from driftline.kafka.clientlog import with_logger
    from driftline.kafka.loop import Rebalance

    topic = settings.kafka.topic("rebalance", unique)
    ensure_topics(settings.kafka, [topic], partitions=2)
    revoked: list[tuple[str, int]] = []
    rebalance = Rebalance(
        on_revoke=lambda _c, parts: revoked.extend((p.topic, p.partition) for p in parts)
    )
    consumer = Consumer(
        with_logger(
            settings.kafka.client_config(**{"group.id": f"g-{unique}", "session.timeout.ms": 6000})
        )
    )
    rebalance.subscribe(consumer, [topic])
    deadline = time.monotonic() + 60
    while not rebalance.assigned and time.monotonic() < deadline:
        consumer.poll(0.2)
    assert rebalance.assigned == {(topic, 0), (topic, 1)}
    consumer.close()  # leaving the group revokes through the same hook
    assert sorted(revoked) == [(topic, 0), (topic, 1)]
    assert rebalance.assigned == set()


def test_unreadable_control_records_are_skipped_by_followers(settings: Settings) -> None:
    spec = load_spec(EXAMPLE)
    client = Client(settings)
    client.deploy(spec)
    live = Follower(settings.kafka)
    plane = ControlPlane(settings.kafka)
    for key, value in [
        ("garbage", b"\xff\xfe not json"),
        ("empty", b""),
        ("a-list", b"[1, 2]"),
        ("number", b"12345"),
    ]:
        plane._produce(plane.pipelines_topic, key, value)
    # a follower starting now reads them from the start; one running gets them as changes
    fresh = Follower(settings.kafka)
    assert set(fresh.snapshot()) == {spec.name}
    fresh.close()
    seen: list[tuple[str, Any]] = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        seen += live.poll(0.5)
    live.close()
    assert seen == []  # nothing readable changed
    assert [p.name for p in client.pipelines()] == [spec.name]
