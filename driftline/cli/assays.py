"""``driftline assays``: a pipeline's latest assay results."""

from __future__ import annotations

from typing import Annotated

import typer

from driftline.cli.app import app
from driftline.config import load_settings

__all__ = ["assays"]


@app.command("assays")
def assays(
    name: Annotated[str, typer.Argument(help="Pipeline name.")],
    assay: Annotated[str | None, typer.Option("--assay", help="Only this assay.")] = None,
    limit: Annotated[int, typer.Option("--limit", help="How many windows.", min=1)] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Latest assay results of a pipeline: window, score, p-value, status, count."""
    from driftline.streams._monitor_cli import cmd_assays

    raise typer.Exit(cmd_assays(load_settings(), name, assay, limit, as_json))
