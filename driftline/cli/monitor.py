"""``driftline monitor``: run the monitor agents."""

from __future__ import annotations

import typer

from driftline.cli._options import MetricsPort
from driftline.cli.app import app
from driftline.config import load_settings

__all__ = ["monitor"]


@app.command("monitor")
def monitor(metrics_port: MetricsPort = None) -> None:
    """Run the monitor agents: windows in Redis, count alerts, assays, alert lifecycle."""
    from driftline.streams._monitor_cli import cmd_monitor

    raise typer.Exit(cmd_monitor(load_settings(), metrics_port))
