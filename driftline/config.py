"""Settings for every driftline component, read from the environment in one place.

Each component has one frozen settings object. All read variables with the ``DRIFTLINE_``
prefix; nested values use JSON. librdkafka options pass through unchanged in
``DRIFTLINE_KAFKA_OPTIONS`` (a JSON object), so security settings such as
``{"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN", ...}`` need no code.

A setting ``X`` may instead be read from a file named by ``X_FILE`` (for secrets mounted by an
orchestrator).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = [
    "KafkaSettings",
    "RedisSettings",
    "Settings",
    "load_settings",
    "read_file_overrides",
]

_PREFIX = "DRIFTLINE_"


def read_file_overrides(names: list[str], environ: dict[str, str] | None = None) -> dict[str, str]:
    """Return ``{NAME: contents}`` for every ``DRIFTLINE_NAME_FILE`` that is set.

    >>> import tempfile, os
    >>> with tempfile.NamedTemporaryFile("w", delete=False) as f:
    ...     _ = f.write("secret-value\\n")
    >>> read_file_overrides(["SMTP_URL"], {"DRIFTLINE_SMTP_URL_FILE": f.name})
    {'smtp_url': 'secret-value'}
    >>> os.unlink(f.name)
    """
    env = os.environ if environ is None else environ
    out: dict[str, str] = {}
    for name in names:
        path = env.get(f"{_PREFIX}{name}_FILE")
        if path:
            out[name.lower()] = Path(path).read_text(encoding="utf-8").strip()
    return out


class _Base(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=_PREFIX, frozen=True, extra="ignore", populate_by_name=True
    )


class KafkaSettings(_Base):
    """How to reach Kafka and how topics are named."""

    bootstrap_servers: str = Field(default="127.0.0.1:9092")
    kafka_options: dict[str, Any] = Field(
        default_factory=dict,
        description="librdkafka options passed through to every client (JSON object).",
    )
    topic_prefix: str = Field(default="driftline")
    partitions: int = Field(default=3, ge=1)
    replication_factor: int = Field(default=1, ge=1)

    @field_validator("topic_prefix")
    @classmethod
    def _check_prefix(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9._-]+", v):
            raise ValueError(
                f"DRIFTLINE_TOPIC_PREFIX={v!r}: use letters, digits, '.', '_' or '-' only"
            )
        return v

    def client_config(self, **extra: Any) -> dict[str, Any]:
        """librdkafka configuration: bootstrap servers, pass-through options, then ``extra``."""
        conf: dict[str, Any] = {"bootstrap.servers": self.bootstrap_servers}
        conf.update(self.kafka_options)
        conf.update(extra)
        return conf

    def topic(self, *parts: str) -> str:
        """Topic name under the prefix.

        >>> KafkaSettings(topic_prefix="driftline").topic("fraud", "results")
        'driftline.fraud.results'
        """
        return ".".join((self.topic_prefix, *parts))


class RedisSettings(_Base):
    """Where monitor state and delivery de-duplication live."""

    redis_url: SecretStr = Field(default=SecretStr("redis://127.0.0.1:6379/0"))
    key_prefix: str = Field(default="dl")


class Settings(_Base):
    """Everything a process needs; components take the part they use."""

    model_store: Path = Field(default=Path.home() / ".driftline" / "models")
    services_dir: Path = Field(default=Path.home() / ".cache" / "driftline" / "services")
    kafka_port: int = Field(default=9092, ge=1, le=65535)
    redis_port: int = Field(default=6379, ge=1, le=65535)
    metrics_port: int | None = Field(default=None)
    log_level: str = Field(default="INFO")

    @property
    def kafka(self) -> KafkaSettings:
        return KafkaSettings()

    @property
    def redis(self) -> RedisSettings:
        return RedisSettings()


def load_settings() -> Settings:
    """Read :class:`Settings` from the environment (the single place that does so)."""
    return Settings()
