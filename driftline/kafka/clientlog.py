"""librdkafka's own log lines, routed through Python logging.

Left alone, librdkafka prints lines like ``%4|1796…|GETPID|rdkafka#producer-1| … Coordinator
load in progress: retrying`` straight to stderr, past every handler and format. A client built
with :func:`with_logger` hands them to the ``driftline.librdkafka`` logger instead, where a
process decides their level and destination like any other log (they are delivered during the
client's ``poll``/``flush``/``consume`` calls).
"""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["LOGGER_NAME", "client_logger", "with_logger"]

LOGGER_NAME = "driftline.librdkafka"


def client_logger() -> logging.Logger:
    """The logger librdkafka's lines go to."""
    return logging.getLogger(LOGGER_NAME)


def with_logger(conf: dict[str, Any]) -> dict[str, Any]:
    """``conf`` with librdkafka's logs routed to :func:`client_logger` (unless it has one).

    >>> with_logger({"bootstrap.servers": "b:9092"})["logger"].name
    'driftline.librdkafka'
    """
    out = dict(conf)
    out.setdefault("logger", client_logger())
    return out
