"""Settings for every driftline component, read from the environment in one place.

Each component has one frozen settings object. All read variables with the ``DRIFTLINE_``
prefix; nested values use JSON. librdkafka options pass through unchanged in
``DRIFTLINE_KAFKA_OPTIONS`` (a JSON object), so security settings such as
``{"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN", ...}`` need no code.

A setting ``X`` may instead be read from a file named by ``X_FILE`` (for secrets mounted by an
orchestrator).
"""

from __future__ import annotations

import json
import os
import re
import socket
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from driftline.notify import TargetError, parse_target

__all__ = [
    "SYSTEM_TOPICS",
    "BridgeSettings",
    "KafkaSettings",
    "RedisSettings",
    "Settings",
    "WorkerSettings",
    "is_secret_option",
    "load_settings",
    "read_file_overrides",
]

_PREFIX = "DRIFTLINE_"

#: The first name part of every topic driftline itself creates under the prefix
#: (``driftline.notifications``, ``driftline.notifications.deadletter``, ...). A pipeline's
#: topics are ``<prefix>.<pipeline>.<kind>``, so a pipeline named like one of these would share
#: its topics; specs refuse such names. Add any new system topic here.
SYSTEM_TOPICS: tuple[str, ...] = ("assays", "models", "notifications", "performance", "pipelines")


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
    # hide_input_in_errors: a refused value (a password in the wrong shape) is never echoed.
    model_config = SettingsConfigDict(
        env_prefix=_PREFIX,
        frozen=True,
        extra="ignore",
        populate_by_name=True,
        hide_input_in_errors=True,
    )

    @model_validator(mode="before")
    @classmethod
    def _read_files(cls, data: Any) -> Any:
        # Any setting may come from a file (DRIFTLINE_X_FILE), for secrets mounted by an
        # orchestrator; JSON-valued settings (dicts) are parsed like their variables are.
        if not isinstance(data, dict):
            return data
        for key, value in read_file_overrides([f.upper() for f in cls.model_fields]).items():
            if data.get(key) is not None:
                raise ValueError(
                    f"both DRIFTLINE_{key.upper()} and DRIFTLINE_{key.upper()}_FILE are set;"
                    " set only one"
                )
            annotation = str(cls.model_fields[key].annotation)
            data[key] = json.loads(value) if annotation.startswith("dict") else value
        return data


def is_secret_option(name: str) -> bool:
    """Whether a librdkafka option carries a secret (its value is then held as ``SecretStr``).

    >>> [is_secret_option(k) for k in ("sasl.password", "ssl.keystore.password",
    ...  "sasl.oauthbearer.client.secret", "ssl.key.pem", "sasl.username")]
    [True, True, True, True, False]
    """
    key = name.lower()
    return "password" in key or "secret" in key or key in _SECRET_OPTIONS


# Options whose values are secrets without saying so in their names.
_SECRET_OPTIONS = frozenset({"ssl.key.pem", "sasl.oauthbearer.config", "ssl_key"})


class KafkaSettings(_Base):
    """How to reach Kafka and how topics are named.

    Options that carry secrets (any name containing ``password`` or ``secret``, and
    ``ssl.key.pem``, ``sasl.oauthbearer.config``) are held as ``SecretStr``: ``repr``, logs and
    errors show ``**********``; only :meth:`client_config` reveals them, to the client.
    """

    bootstrap_servers: str = Field(default="127.0.0.1:9092")
    kafka_options: dict[str, Any] = Field(
        default_factory=dict,
        description="librdkafka options passed through to every client (JSON object).",
    )

    @field_validator("kafka_options")
    @classmethod
    def _hide_secrets(cls, v: dict[str, Any]) -> dict[str, Any]:
        return {
            k: SecretStr(str(val))
            if is_secret_option(k) and not isinstance(val, SecretStr)
            else val
            for k, val in v.items()
        }

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
        conf.update(
            {
                k: v.get_secret_value() if isinstance(v, SecretStr) else v
                for k, v in self.kafka_options.items()
            }
        )
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
    redis_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="How long a Redis call may wait for its reply before it is tried again.",
    )

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``redis.Redis.from_url`` (options in the URL win).

        A reply that never comes (a partition, a paused server) must end in an error the
        caller retries, not in a call that waits forever.

        >>> RedisSettings(redis_timeout_s=10).client_kwargs()
        {'socket_timeout': 10.0, 'socket_connect_timeout': 5.0}
        """
        return {
            "socket_timeout": self.redis_timeout_s,
            "socket_connect_timeout": min(5.0, self.redis_timeout_s),
        }


class Settings(_Base):
    """Everything a process needs; components take the part they use."""

    model_store: Path = Field(default=Path.home() / ".driftline" / "models")
    services_dir: Path = Field(default=Path.home() / ".cache" / "driftline" / "services")
    cache_dir: Path = Field(default=Path.home() / ".cache" / "driftline")
    kafka_port: int = Field(default=9092, ge=1, le=65535)
    redis_port: int = Field(default=6379, ge=1, le=65535)
    metrics_port: int | None = Field(default=None)
    log_level: str = Field(default="INFO")
    # Nested components read their own variables (DRIFTLINE_BOOTSTRAP_SERVERS, ...); tests and
    # embedding applications pass them explicitly.
    kafka: KafkaSettings = Field(default_factory=lambda: KafkaSettings())
    redis: RedisSettings = Field(default_factory=lambda: RedisSettings())


def load_settings() -> Settings:
    """Read :class:`Settings` from the environment (the single place that does so)."""
    return Settings()


class BridgeSettings(_Base):
    """How ``driftline bridge`` delivers notifications (DESIGN §8).

    The secret-bearing variables keep the exact names operators set: ``DRIFTLINE_SMTP_URL``
    (``smtp://user:password@host:port?starttls=true``), ``DRIFTLINE_SMTP_FROM``,
    ``DRIFTLINE_SLACK_WEBHOOKS`` (JSON ``{"channel": "https://hooks.slack.com/..."}``) and
    ``DRIFTLINE_WEBHOOKS`` (JSON ``{"name": {"url": "...", "secret": "..."}}``). Each may be
    read from a file named by the same variable with a ``_FILE`` suffix instead.
    ``bridge_rate_limits`` is messages per second per target, by channel kind.

    A notification is delivered only to targets a deployed spec of its pipeline declares
    for that alert or assay, or to ``DRIFTLINE_BRIDGE_ALLOWED_TARGETS`` (targets separated by
    commas, or a JSON list: ``stdout,email:oncall@example.com``).
    """

    smtp_url: SecretStr | None = Field(default=None)
    smtp_from: str = Field(default="driftline@localhost")
    slack_webhooks: dict[str, SecretStr] = Field(default_factory=dict)
    webhooks: dict[str, dict[str, SecretStr]] = Field(default_factory=dict)
    bridge_topic: str | None = Field(default=None, description="Default: <prefix>.notifications")
    bridge_deadletter_topic: str | None = Field(
        default=None, description="Default: <prefix>.notifications.deadletter"
    )
    bridge_group: str = Field(default="driftline-bridge")
    bridge_max_attempts: int = Field(default=5, ge=1)
    bridge_backoff_s: float = Field(default=0.5, gt=0)
    bridge_backoff_max_s: float = Field(default=60.0, gt=0)
    bridge_retry_after_max_s: float = Field(default=300.0, ge=0)
    bridge_timeout_s: float = Field(default=10.0, gt=0)
    bridge_rate_limits: dict[str, float] = Field(
        default_factory=lambda: {"slack": 1.0, "webhook": 10.0, "email": 10.0}
    )
    bridge_group_ms: int = Field(default=2000, ge=0)
    bridge_dedup_ttl_s: int = Field(default=7 * 24 * 3600, ge=1)
    bridge_max_in_flight: int = Field(default=256, ge=1)
    bridge_allowed_targets: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="Targets any notification may reach besides those its spec declares.",
    )
    bridge_pipelines_topic: str | None = Field(
        default=None, description="Default: <prefix>.pipelines (the deployed specs)."
    )

    @field_validator("bridge_allowed_targets", mode="before")
    @classmethod
    def _parse_allowed(cls, v: Any) -> Any:
        if isinstance(v, bytes):
            v = v.decode()
        if isinstance(v, str):
            text = v.strip()
            if text.startswith("["):
                try:
                    v = json.loads(text)
                except ValueError:
                    raise ValueError(
                        "DRIFTLINE_BRIDGE_ALLOWED_TARGETS is not a JSON list; write targets "
                        'separated by commas or a list such as ["stdout", "slack:ops"]'
                    ) from None
            else:
                v = [part.strip() for part in text.split(",") if part.strip()]
        if not isinstance(v, list | tuple):
            raise ValueError("DRIFTLINE_BRIDGE_ALLOWED_TARGETS: give targets separated by commas")
        out = []
        for item in v:
            try:
                out.append(str(parse_target(item)))
            except TargetError as exc:
                raise ValueError(f"DRIFTLINE_BRIDGE_ALLOWED_TARGETS: {exc}") from None
        return tuple(dict.fromkeys(out))

    @field_validator("slack_webhooks", "webhooks", "bridge_rate_limits", mode="before")
    @classmethod
    def _parse_json(cls, v: Any) -> Any:
        if isinstance(v, str | bytes):
            try:
                return json.loads(v)
            except ValueError:
                raise ValueError("is not a JSON object") from None
        return v

    @field_validator("webhooks")
    @classmethod
    def _check_webhooks(cls, v: dict[str, dict[str, SecretStr]]) -> dict[str, dict[str, SecretStr]]:
        for name, conf in v.items():
            missing = {"url", "secret"} - set(conf)
            if missing:
                raise ValueError(
                    f"DRIFTLINE_WEBHOOKS[{name!r}] lacks {', '.join(sorted(missing))};"
                    ' give {"url": ..., "secret": ...}'
                )
        return v

    @field_validator("bridge_rate_limits")
    @classmethod
    def _merge_rates(cls, v: dict[str, float]) -> dict[str, float]:
        merged = {"slack": 1.0, "webhook": 10.0, "email": 10.0, **v}
        for kind, rate in merged.items():
            if not rate > 0:
                raise ValueError(
                    f"DRIFTLINE_BRIDGE_RATE_LIMITS[{kind!r}]={rate!r}: use a positive rate"
                )
        return merged


class WorkerSettings(_Base):
    """The inference worker: micro-batching, delivery guarantee, identity, limits."""

    worker_batch_size: int = Field(default=2000, ge=1, description="Max messages per batch.")
    worker_batch_timeout_ms: int = Field(
        default=20, ge=0, description="How long a batch waits to fill before it is served."
    )
    worker_guarantee: Literal["exactly-once", "at-least-once"] = Field(default="exactly-once")
    worker_id: str = Field(
        default_factory=lambda: f"{socket.gethostname()}-0",
        description="Stable per worker instance: its transactional.id, so a restart fences "
        "its predecessor. Give each worker on one host its own.",
    )
    worker_group: str = Field(default="driftline-worker")
    worker_max_message_bytes: int = Field(default=1_048_576, ge=1)
    worker_metrics_port: int | None = Field(default=None)
    worker_intra_op_threads: int = Field(default=1, ge=0, description="0: onnxruntime decides.")
    worker_transaction_timeout_ms: int = Field(default=60_000, ge=1000)
    worker_max_event_age_ms: int = Field(
        default=90 * 24 * 3600 * 1000,
        ge=0,
        description="Requests whose event time is older than this (default 90 days) are "
        "dead-lettered as time_out_of_range: backfills of weeks are served, a time in the "
        "wrong unit (seconds, microseconds) or a made-up one is not.",
    )
    worker_max_event_skew_ms: int = Field(
        default=24 * 3600 * 1000,
        ge=0,
        description="Requests whose event time is further ahead of the worker's clock than "
        "this (default 1 day) are dead-lettered as time_out_of_range: a device with a skewed "
        "clock is served, a year-3000 time that would hold every window open is not.",
    )


class MonitorSettings(_Base):
    """The monitor agents (``driftline monitor``) and ``driftline replay``."""

    monitor_group: str = Field(default="driftline-monitor")
    # Each batch costs one offset-guarded script call plus one increment per touched bucket
    # counter, whatever its size; 10,000 events are about 25 ms of work at full speed.
    monitor_batch_size: int = Field(default=10_000, ge=1, description="Max events per micro-batch.")
    monitor_fetch_wait_ms: int = Field(default=100, ge=0, description="Kafka fetch wait.")
    monitor_idle_close_ms: int | None = Field(
        default=None, description="Wall-clock idleness that closes windows; default: interval."
    )
    monitor_rebuild_lookback_ms: int | None = Field(
        default=None,
        description="Replay depth after Redis lost state; default: longest window + lateness.",
    )
    monitor_results_pattern: str | None = Field(
        default=None, description="Regex of results topics; default: ^<prefix>\\..*\\.results$"
    )
    monitor_max_event_age_ms: int = Field(
        default=90 * 24 * 3600 * 1000,
        ge=1,
        description="Events older than this (vs the wall clock; replay: its range end) are "
        "refused as time_out_of_range; default 90 days, room for backfills of weeks.",
    )
    monitor_max_event_skew_ms: int = Field(
        default=24 * 3600 * 1000,
        ge=0,
        description="Events this far ahead of the wall clock (replay: its range end) are "
        "refused as time_out_of_range; default 1 day, room for skewed device clocks.",
    )
    monitor_metrics_port: int | None = Field(default=None)
    monitor_datadir: Path | None = Field(default=None, description="faust data dir; default: temp.")
