"""``driftline bridge``: deliver notifications by email, Slack, webhooks and stdout."""

from __future__ import annotations

from typing import Annotated

import typer

from driftline.cli._options import MetricsPort
from driftline.cli.app import app

__all__ = ["bridge"]


@app.command("bridge")
def bridge(
    channels: Annotated[
        str | None,
        typer.Option(
            "--channels", help="Comma-separated subset of email,slack,webhook,stdout (default all)."
        ),
    ] = None,
    metrics_port: MetricsPort = None,
) -> None:
    """Deliver notifications from driftline.notifications by email, Slack and webhooks."""
    from driftline.alerts.bridge import run_bridge

    raise typer.Exit(run_bridge(channels, metrics_port))
