"""``driftline alerts``: the notification history."""

from __future__ import annotations

from typing import Annotated

import typer

from driftline.cli.app import app
from driftline.config import load_settings

__all__ = ["alerts"]


@app.command("alerts")
def alerts(
    pipeline: Annotated[str | None, typer.Option("--pipeline", help="Only this pipeline.")] = None,
    limit: Annotated[int, typer.Option("--limit", help="How many notifications.", min=1)] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Notification history: every alert transition (firing, resolved) with its id."""
    from driftline.streams._monitor_cli import cmd_alerts

    raise typer.Exit(cmd_alerts(load_settings(), pipeline, limit, as_json))
