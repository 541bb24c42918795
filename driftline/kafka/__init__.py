"""The Kafka layer below ``streams/`` and ``alerts/``: topics, headers, offsets, consume loops."""
