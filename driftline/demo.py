"""``driftline demo``: proves the local stack works by a real round trip.

The full fraud story (validations, shadow deploy, count alert, assay, replay) replaces this
once the worker, monitor and bridges exist; until then the demo says so.
"""

from __future__ import annotations

import time
import uuid

from driftline._console import out
from driftline.config import load_settings

__all__ = ["run_demo"]


def run_demo(output_dir: str) -> int:
    """Send one event through Kafka in a transaction, read it back, and touch Redis."""
    import orjson
    import redis
    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    settings = load_settings()
    kafka = settings.kafka
    topic = kafka.topic("demo", uuid.uuid4().hex[:8])
    admin = AdminClient(kafka.client_config())
    admin.create_topics([NewTopic(topic, 1, 1)])["" + topic].result(15)
    out.rule("driftline demo: stack round trip")
    try:
        t0 = time.perf_counter()
        producer = Producer(kafka.client_config(**{"transactional.id": f"demo-{uuid.uuid4()}"}))
        producer.init_transactions(15)
        producer.begin_transaction()
        event = {"id": "r-1", "time": int(time.time() * 1000), "tensor": [[0.1, 0.2]]}
        producer.produce(topic, orjson.dumps(event), key=b"r-1")
        producer.commit_transaction(15)
        consumer = Consumer(
            kafka.client_config(
                **{
                    "group.id": f"demo-{uuid.uuid4()}",
                    "auto.offset.reset": "earliest",
                    "isolation.level": "read_committed",
                }
            )
        )
        consumer.subscribe([topic])
        got = None
        deadline = time.monotonic() + 30
        while got is None and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                got = orjson.loads(msg.value() or b"null")
        consumer.close()
        kafka_ms = (time.perf_counter() - t0) * 1000
        if got != event:
            out.print(f"[red]Kafka round trip failed[/]: sent {event}, read {got}")
            return 1
        out.print(
            f"Kafka {kafka.bootstrap_servers}: committed 1 event in a transaction to "
            f"[bold]{topic}[/] and read it back with read_committed in {kafka_ms:.0f} ms"
        )
        r = redis.Redis.from_url(settings.redis.redis_url.get_secret_value())
        key = f"{settings.redis.key_prefix}:{{demo}}:roundtrip"
        r.hincrby(key, "count", 1)
        value = int(r.hget(key, "count") or 0)
        r.delete(key)
        out.print(f"Redis: HINCRBY/HGET on {key} returned {value}")
    finally:
        admin.delete_topics([topic])
    out.print(
        "The stack is alive. The full fraud story (validations, shadow deploy, count alert, "
        "assay, replay) is not built yet; this demo grows into it."
    )
    return 0
