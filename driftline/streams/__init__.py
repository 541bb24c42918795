"""Kafka I/O: the inference worker, the monitor agents, windows and replay."""
