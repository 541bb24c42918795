"""Shared fixtures: the real Kafka broker and Redis server, unique names per test.

Integration and e2e tests never skip for lack of services: if Kafka or Redis does not answer,
the session starts them with ``driftline services up`` and fails with its message if that fails.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from driftline.config import KafkaSettings, RedisSettings, load_settings

# Property tests check what holds for every input, never how fast: on a loaded 2-core CI
# machine hypothesis' per-example deadline and its too-slow check fail tests that are right.
settings.register_profile("driftline", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("driftline")

_services_checked = False


def _ensure_services() -> None:
    global _services_checked
    if _services_checked:
        return
    from driftline.errors import ServiceError
    from driftline.services import Services

    services = Services(load_settings())
    if not (services._kafka_answers() and services._redis_answers()):
        try:
            services.up()
        except ServiceError as exc:
            pytest.fail(f"Kafka/Redis are needed and could not be started: {exc}", pytrace=False)
    _services_checked = True


def pytest_report_header(config: pytest.Config) -> list[str]:
    from driftline.services import kafka_version

    settings = load_settings()
    return [
        f"driftline services: Apache Kafka {kafka_version()} at "
        f"{settings.kafka.bootstrap_servers}, Redis at 127.0.0.1:{settings.redis_port} "
        "(integration and e2e tests use them; started if not running)"
    ]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in item.keywords or "e2e" in item.keywords:
            item.fixturenames.append("services")


@pytest.fixture(scope="session")
def services() -> None:
    """Kafka and Redis answer (started if needed)."""
    _ensure_services()


@pytest.fixture
def unique() -> str:
    """A short unique token for names of topics, groups and keys."""
    return uuid.uuid4().hex[:10]


@pytest.fixture(scope="session")
def kafka_settings() -> KafkaSettings:
    return load_settings().kafka


@pytest.fixture(scope="session")
def kafka_admin(services: None, kafka_settings: KafkaSettings):  # type: ignore[no-untyped-def]
    from confluent_kafka.admin import AdminClient

    return AdminClient(kafka_settings.client_config())


@pytest.fixture
def kafka_config(kafka_settings: KafkaSettings) -> Callable[..., dict[str, object]]:
    """librdkafka config for the test broker, with short timeouts for fast group joins."""

    def make(**extra: object) -> dict[str, object]:
        return kafka_settings.client_config(**extra)

    return make


@pytest.fixture
def topic_factory(kafka_admin, unique: str) -> Iterator[Callable[..., str]]:  # type: ignore[no-untyped-def]
    """Create uniquely named topics for one test; all are deleted afterwards."""
    from confluent_kafka.admin import NewTopic

    created: list[str] = []

    def make(name: str = "t", partitions: int = 1, config: dict[str, str] | None = None) -> str:
        topic = f"test.{unique}.{name}"
        futures = kafka_admin.create_topics(
            [NewTopic(topic, partitions, 1, config=config or {})], operation_timeout=15
        )
        futures[topic].result(30)
        created.append(topic)
        return topic

    yield make
    if created:
        for fut in kafka_admin.delete_topics(created, operation_timeout=15).values():
            with contextlib.suppress(Exception):
                fut.result(30)


@pytest.fixture
def redis_client(services: None):  # type: ignore[no-untyped-def]
    import redis

    client = redis.Redis.from_url(RedisSettings().redis_url.get_secret_value())
    yield client
    client.close()


@pytest.fixture
def redis_prefix(redis_client, unique: str) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A unique key prefix; every key under it is deleted after the test."""
    prefix = f"test:{unique}"
    yield prefix
    keys = list(redis_client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        redis_client.delete(*keys)


@pytest.fixture
def topic_prefix(kafka_admin, unique: str) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A unique topic prefix for a test that deploys; its topics are deleted afterwards."""
    prefix = f"t{unique}"
    yield prefix
    topics = [t for t in kafka_admin.list_topics(timeout=10).topics if t.startswith(prefix + ".")]
    if topics:
        for fut in kafka_admin.delete_topics(topics, operation_timeout=15).values():
            with contextlib.suppress(Exception):
                fut.result(30)


ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run ``python -m driftline ARGS`` from the repository root, as a user would."""

    def run(
        env: dict[str, str], *args: str, timeout: float = 240.0
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "driftline", *args],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run


@pytest.fixture
def cli_env(topic_prefix: str, unique: str, tmp_path: Path) -> Callable[..., dict[str, str]]:
    """The environment of a CLI run on a private topic prefix, model store and worker group.

    ``partitions`` and ``columns`` (rich's terminal width) vary per test; ``fast_join`` gives
    consumers a short session timeout so that group joins are quick.
    """
    import json
    import os

    def make(partitions: int = 1, columns: int = 200, fast_join: bool = True) -> dict[str, str]:
        env = dict(
            os.environ,
            DRIFTLINE_TOPIC_PREFIX=topic_prefix,
            DRIFTLINE_MODEL_STORE=str(tmp_path / "store"),
            DRIFTLINE_PARTITIONS=str(partitions),
            DRIFTLINE_WORKER_GROUP=f"g{unique}",
            DRIFTLINE_WORKER_ID=f"w{unique}",
            COLUMNS=str(columns),
        )
        if fast_join:
            env["DRIFTLINE_KAFKA_OPTIONS"] = json.dumps({"session.timeout.ms": 6000})
        return env

    return make
