"""The typer application every ``driftline`` command registers on, and its exit codes.

Exit codes: 0 success, 1 a check or comparison found a problem, 2 bad usage or input
(a wrong argument, an invalid spec, an unreadable file), 3 a service is unreachable or failed,
70 an unexpected error (a bug: please report it).
"""

from __future__ import annotations

from typing import Annotated

import typer

from driftline import __version__
from driftline._console import out

__all__ = ["EXIT_BUG", "EXIT_FAILED", "EXIT_SERVICE", "EXIT_USAGE", "app", "services_app"]

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_SERVICE = 3
EXIT_BUG = 70

app = typer.Typer(
    name="driftline",
    help="Drift detection for ML models on Kafka: inference workers, monitors, alerts, replay.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
services_app = typer.Typer(
    help="Run the local Kafka broker and Redis server.", no_args_is_help=True
)
app.add_typer(services_app, name="services")
model_app = typer.Typer(help="Upload and list ONNX models.", no_args_is_help=True)
app.add_typer(model_app, name="model")


def _version(value: bool) -> None:
    if value:
        out.print(f"driftline {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """driftline command line."""
