"""``driftline demo``: the fraud story end to end on the local stack."""

from __future__ import annotations

from typing import Annotated

import typer

from driftline.cli.app import app

__all__ = ["demo"]


@app.command()
def demo(
    output_dir: Annotated[
        str, typer.Option("--output-dir", help="Where the demo writes its chart and files.")
    ] = "out/demo",
) -> None:
    """Run the fraud story end to end on the local stack."""
    from driftline.demo import run_demo

    raise typer.Exit(run_demo(output_dir))
