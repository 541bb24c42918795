"""``driftline replay``: recompute and audit a range of a pipeline's history."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from driftline.cli.app import app
from driftline.config import load_settings

__all__ = ["replay"]


@app.command("replay")
def replay(
    name: Annotated[str, typer.Argument(help="Pipeline name.")],
    start: Annotated[
        str, typer.Option("--from", help="Range start: epoch ms, ISO-8601 or now-10m.")
    ],
    end: Annotated[str, typer.Option("--to", help="Range end: epoch ms, ISO-8601 or now.")],
    spec: Annotated[
        Path | None, typer.Option("--spec", help="Replay with this spec file instead.")
    ] = None,
    audit: Annotated[
        bool, typer.Option("--audit", help="Compare with what was published; exit 1 if differs.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    output: Annotated[
        Path | None,
        typer.Option("--output", help="Also write the results to a .csv, .parquet or .json file."),
    ] = None,
    chart: Annotated[
        Path | None, typer.Option("--chart", help="Also draw the assay scores to a PNG file.")
    ] = None,
) -> None:
    """Recompute windows, assay results and alert transitions over a range of the results topic."""
    from driftline.streams._monitor_cli import cmd_replay

    raise typer.Exit(
        cmd_replay(load_settings(), name, start, end, spec, audit, as_json, output, chart)
    )
