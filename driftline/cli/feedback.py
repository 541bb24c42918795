"""``driftline feedback``: send labels for a pipeline's predictions."""

from __future__ import annotations

from typing import Annotated

import typer

from driftline.cli.app import app
from driftline.config import load_settings

__all__ = ["feedback"]


@app.command("feedback")
def feedback(
    name: Annotated[str, typer.Argument(help="Pipeline name.")],
    file: Annotated[
        str, typer.Option("--file", help="Labels: JSON lines or a JSON array of {id, row, label}.")
    ],
    rate: Annotated[
        float | None,
        typer.Option("--rate", help="Labels per second (default: as fast as it can).", min=0.001),
    ] = None,
) -> None:
    """Send labels to <p>.feedback; they are joined to predictions by (id, row).

    Malformed lines go to <p>.deadletter with their reason; the rest are sent.
    """
    from driftline.streams._outcomes_cli import cmd_feedback

    cmd_feedback(load_settings().kafka, name, file, rate)
