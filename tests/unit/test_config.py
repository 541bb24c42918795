from __future__ import annotations

import pytest
from pydantic import ValidationError

from driftline.config import KafkaSettings, RedisSettings

pytestmark = pytest.mark.unit


def test_kafka_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTLINE_BOOTSTRAP_SERVERS", "broker:9093")
    monkeypatch.setenv("DRIFTLINE_TOPIC_PREFIX", "acme")
    monkeypatch.setenv(
        "DRIFTLINE_KAFKA_OPTIONS", '{"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN"}'
    )
    s = KafkaSettings()
    assert s.topic("fraud", "results") == "acme.fraud.results"
    conf = s.client_config(**{"group.id": "g"})
    assert conf == {
        "bootstrap.servers": "broker:9093",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "PLAIN",
        "group.id": "g",
    }


def test_bad_topic_prefix_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTLINE_TOPIC_PREFIX", "no spaces")
    with pytest.raises(ValidationError, match="DRIFTLINE_TOPIC_PREFIX"):
        KafkaSettings()


def test_redis_url_is_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTLINE_REDIS_URL", "redis://:hunter2@cache:6379/0")
    s = RedisSettings()
    assert "hunter2" not in repr(s)
    assert s.redis_url.get_secret_value().endswith("cache:6379/0")


def test_settings_are_frozen() -> None:
    s = KafkaSettings()
    with pytest.raises(ValidationError):
        s.topic_prefix = "other"  # type: ignore[misc]
