"""Options several commands share."""

from __future__ import annotations

from typing import Annotated

import typer

__all__ = ["JsonFlag", "MetricsPort"]

MetricsPort = Annotated[
    int | None,
    typer.Option(
        "--metrics-port", help="Serve Prometheus /metrics on this port.", min=1, max=65535
    ),
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON.")]
