"""The Kafka layer every driftline service stands on.

- :mod:`driftline.kafka.admin` — the admin client, topic creation and partition counts;
- :mod:`driftline.kafka.deadletter` — the dead-letter contract: the original bytes, the reason
  and source headers, and truncation of a copy too large for its topic;
- :mod:`driftline.kafka.offsets` — offsets by event time and reading a range of a topic;
- :mod:`driftline.kafka.loop` — the consume-loop pieces: stop signal, backoff with jitter,
  retry of transient errors, rebalance hooks;
- :mod:`driftline.kafka.clientlog` — librdkafka's log lines through Python logging.

It imports nothing from ``streams``, ``alerts``, ``cli`` or ``sdk``: they import it.
"""
