"""The Kafka layer every driftline service stands on.

- :mod:`driftline.kafka.admin` — the admin client, topic creation and partition counts;
- :mod:`driftline.kafka.loop` — the consume-loop pieces: stop signal, backoff with jitter,
  retry of transient errors, rebalance hooks.

It imports nothing from ``streams``, ``alerts``, ``cli`` or ``sdk``: they import it.
"""
