"""``driftline performance``: realized and estimated model performance per window."""

from __future__ import annotations

from typing import Annotated

import typer

from driftline.cli.app import app
from driftline.config import load_settings

__all__ = ["performance"]


@app.command("performance")
def performance(
    name: Annotated[str, typer.Argument(help="Pipeline name.")],
    window: Annotated[
        str | None, typer.Option("--window", help="Only the window holding this time.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    history: Annotated[
        bool, typer.Option("--history", help="Every revision, not only the latest per window.")
    ] = False,
) -> None:
    """Latest revision of every performance window: predictions, labeled, metrics, estimates."""
    from driftline.streams._outcomes_cli import cmd_performance

    cmd_performance(load_settings().kafka, name, window, as_json, history)
