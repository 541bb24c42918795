"""``driftline produce``: send many requests from a JSON-lines file."""

from __future__ import annotations

from typing import Annotated

import typer

from driftline._console import err, out
from driftline.cli.app import app
from driftline.config import load_settings
from driftline.errors import DriftlineError

__all__ = ["produce"]


@app.command("produce")
def produce(
    name: Annotated[str, typer.Argument(help="Pipeline name.")],
    file: Annotated[
        str,
        typer.Option(
            "--file", help="JSON lines: one request object, row or list of rows per line."
        ),
    ],
    rate: Annotated[
        float | None,
        typer.Option("--rate", help="Requests per second (default: as fast as possible)."),
    ] = None,
) -> None:
    """Send many requests to a pipeline's requests topic."""
    import time
    from pathlib import Path

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from driftline.streams.produce import produce_file

    path = Path(file)
    if path.is_dir():
        raise DriftlineError(f"--file {file!r} is a directory; pass a JSON-lines file")
    if not path.is_file():
        raise DriftlineError(f"--file {file!r}: no such file")
    with path.open("rb") as f:
        total = sum(1 for line in f if line.strip())
    t0 = time.monotonic()
    with Progress(
        "sending", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=err
    ) as bar:
        task = bar.add_task("send", total=total)
        sent = produce_file(
            load_settings().kafka,
            name,
            path,
            rate=rate,
            progress=lambda n: bar.update(task, completed=n),
        )
        bar.update(task, completed=sent)
    elapsed = time.monotonic() - t0
    out.print(
        f"sent {sent} requests to {name} in {elapsed:.1f} s ({sent / max(elapsed, 1e-9):.0f}/s)"
    )
