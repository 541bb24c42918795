"""Topics: creating them (idempotently) and asking how they are partitioned.

A just-created topic can take a moment to have a leader for every partition; a producer that
races it gets ``UNKNOWN_TOPIC_OR_PART``, so :func:`ensure_topics` returns only once metadata
shows every partition led.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
)

from driftline.config import KafkaSettings
from driftline.errors import DriftlineError, ServiceError
from driftline.kafka.clientlog import with_logger
from driftline.kafka.loop import Backoff

__all__ = ["admin_client", "ensure_topics", "partition_count", "wait_for_metadata"]

_TIMEOUT_S = 30.0


def admin_client(settings: KafkaSettings) -> AdminClient:
    """An admin client for the configured cluster."""
    return AdminClient(with_logger(settings.client_config()))


def ensure_topics(
    settings: KafkaSettings,
    names: Iterable[str],
    partitions: int | None = None,
    compacted: bool = False,
    admin: AdminClient | None = None,
    config: Mapping[str, str] | None = None,
) -> None:
    """Create the topics that do not exist yet; existing ones keep their partitions.

    ``config`` (topic settings such as ``max.message.bytes``) is given to the new topics and
    set on those that already exist, so a redeploy with a new limit takes effect.
    """
    admin = admin or admin_client(settings)
    given = dict(config or {})
    config = {"cleanup.policy": "compact", **given} if compacted else given
    new = [
        NewTopic(
            n,
            partitions or settings.partitions,
            settings.replication_factor,
            config=config,
        )
        for n in names
    ]
    if not new:
        return
    try:
        futures = admin.create_topics(new, operation_timeout=_TIMEOUT_S)
    except KafkaException as exc:
        raise ServiceError(f"Kafka at {settings.bootstrap_servers}: {exc}") from exc
    existing = []
    for topic, fut in futures.items():
        try:
            fut.result(_TIMEOUT_S)
        except KafkaException as exc:
            err = exc.args[0]
            if isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                existing.append(topic)
                continue
            raise ServiceError(f"cannot create topic {topic}: {exc}") from exc
    if given and existing:
        _set_configs(admin, existing, given)
    wait_for_metadata(admin, [t.topic for t in new])


def _set_configs(admin: AdminClient, topics: list[str], config: Mapping[str, str]) -> None:
    entries = [
        ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) for k, v in config.items()
    ]
    resources = [
        ConfigResource(ConfigResource.Type.TOPIC, t, incremental_configs=entries) for t in topics
    ]
    for resource, fut in admin.incremental_alter_configs(resources).items():
        try:
            fut.result(_TIMEOUT_S)
        except KafkaException as exc:
            raise ServiceError(
                f"cannot set {dict(config)} on topic {resource.name}: {exc}"
            ) from exc


def wait_for_metadata(admin: AdminClient, topics: list[str], timeout_s: float = _TIMEOUT_S) -> bool:
    """Wait until metadata shows every partition of ``topics`` with a leader.

    Returns False when ``timeout_s`` passed first (the caller's next call then tells).
    """
    deadline = time.monotonic() + timeout_s
    backoff = Backoff(0.05, 1.0)
    while time.monotonic() < deadline:
        md = admin.list_topics(timeout=5)
        ready = all(
            t in md.topics
            and md.topics[t].error is None
            and all(p.leader >= 0 for p in md.topics[t].partitions.values())
            for t in topics
        )
        if ready:
            return True
        time.sleep(min(backoff.next(), max(0.0, deadline - time.monotonic())))
    return False


def partition_count(settings: KafkaSettings, topic: str, admin: AdminClient | None = None) -> int:
    """How many partitions ``topic`` has.

    Raises :class:`~driftline.errors.DriftlineError` naming the topic when it does not exist
    and :class:`~driftline.errors.ServiceError` when Kafka does not answer.
    """
    admin = admin or admin_client(settings)
    try:
        md = admin.list_topics(topic, timeout=10)
    except KafkaException as exc:
        raise ServiceError(f"Kafka at {settings.bootstrap_servers}: {exc}") from exc
    t = md.topics.get(topic)
    if t is None or t.error is not None or not t.partitions:
        raise DriftlineError(
            f"topic {topic} does not exist; is the pipeline deployed (`driftline pipelines`)?"
        )
    return len(t.partitions)
