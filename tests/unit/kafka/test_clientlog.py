"""librdkafka's own log lines reach Python logging instead of raw stderr."""

from __future__ import annotations

import logging

import pytest
from confluent_kafka import Producer

from driftline.kafka.clientlog import LOGGER_NAME, with_logger

pytestmark = pytest.mark.unit


def test_a_client_built_with_the_logger_logs_through_python_logging(
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    # A consumer-only property makes a producer warn at once (CONFWARN), no broker needed.
    conf = with_logger({"bootstrap.servers": "127.0.0.1:1", "session.timeout.ms": 6000})
    with caplog.at_level(logging.WARNING, logger=LOGGER_NAME):
        producer = Producer(conf)
        producer.poll(0.5)  # queued log lines are delivered during poll
    warned = [r for r in caplog.records if r.name == LOGGER_NAME]
    assert any("session.timeout.ms" in r.getMessage() for r in warned)
    assert all(r.levelno == logging.WARNING for r in warned if "CONFWARN" in r.getMessage())
    assert "%4|" not in capfd.readouterr().err


def test_a_logger_given_by_the_caller_is_kept() -> None:
    mine = logging.getLogger("mine")
    assert with_logger({"logger": mine})["logger"] is mine
