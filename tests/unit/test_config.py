from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from driftline.config import KafkaSettings, RedisSettings, Settings

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


def test_any_setting_can_come_from_a_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    url = tmp_path / "redis-url"
    url.write_text("redis://:s3cret@cache:6379/1\n")
    options = tmp_path / "kafka-options.json"
    options.write_text('{"security.protocol": "SSL"}')
    monkeypatch.setenv("DRIFTLINE_REDIS_URL_FILE", str(url))
    monkeypatch.setenv("DRIFTLINE_KAFKA_OPTIONS_FILE", str(options))
    assert RedisSettings().redis_url.get_secret_value() == "redis://:s3cret@cache:6379/1"
    assert KafkaSettings().kafka_options == {"security.protocol": "SSL"}


def test_a_setting_and_its_file_together_are_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    f = tmp_path / "prefix"
    f.write_text("other")
    monkeypatch.setenv("DRIFTLINE_TOPIC_PREFIX", "acme")
    monkeypatch.setenv("DRIFTLINE_TOPIC_PREFIX_FILE", str(f))
    with pytest.raises(ValidationError, match="DRIFTLINE_TOPIC_PREFIX_FILE"):
        KafkaSettings()


def test_kafka_secrets_are_hidden_until_a_client_is_configured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    options = {
        "security.protocol": "SASL_SSL",
        "sasl.username": "svc",
        "sasl.password": "kafka-pw-1",
        "ssl.key.password": "key-pw-2",
        "ssl.keystore.password": "store-pw-3",
        "sasl.oauthbearer.client.secret": "oauth-4",
        "ssl.key.pem": "-----BEGIN PRIVATE KEY-----pem-5",
    }
    monkeypatch.setenv("DRIFTLINE_KAFKA_OPTIONS", json.dumps(options))
    s = KafkaSettings()
    shown = repr(s) + str(s) + repr(Settings()) + str(s.model_dump()) + s.model_dump_json()
    for secret in ("kafka-pw-1", "key-pw-2", "store-pw-3", "oauth-4", "pem-5"):
        assert secret not in shown
    assert "svc" in repr(s) and "SASL_SSL" in repr(s)
    assert s.client_config() == {"bootstrap.servers": "127.0.0.1:9092", **options}
    # Passing the options on (as the demo does) keeps them hidden and usable.
    copy = KafkaSettings(kafka_options=s.kafka_options)
    assert "kafka-pw-1" not in repr(copy)
    assert copy.client_config()["sasl.password"] == "kafka-pw-1"


def test_a_refused_setting_never_echoes_its_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTLINE_KAFKA_OPTIONS", '["sasl.password", "hunter2"]')
    with pytest.raises(ValidationError) as info:
        KafkaSettings()
    assert "hunter2" not in str(info.value)
