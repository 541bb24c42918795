"""Prometheus exposition shared by every process.

Each component defines its own metrics next to its code with the ``driftline_`` prefix, base
units (seconds, bytes) and bounded labels (pipeline, model, validation, assay, alert, channel,
reason; never ids). This module only serves them.
"""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, start_http_server

__all__ = ["start_metrics_server"]

_started: set[int] = set()


def start_metrics_server(
    port: int | None, addr: str = "0.0.0.0", registry: CollectorRegistry = REGISTRY
) -> int | None:
    """Serve ``/metrics`` on ``port`` (0 picks a free port); returns the port, or None if off.

    Starting twice on the same port is a no-op, so components sharing a process can all ask.
    """
    if port is None:
        return None
    if port in _started and port != 0:
        return port
    server, _thread = start_http_server(port, addr=addr, registry=registry)
    bound = int(server.server_port)
    _started.add(bound)
    return bound
