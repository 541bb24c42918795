"""The ``driftline`` command line.

Exit codes: 0 success, 1 a check or comparison found a problem, 2 bad usage or input
(a wrong argument, an invalid spec), 3 a service is unreachable or failed.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from driftline import __version__
from driftline._console import err, out
from driftline.config import load_settings
from driftline.errors import DriftlineError, ServiceError

__all__ = ["EXIT_FAILED", "EXIT_SERVICE", "EXIT_USAGE", "app", "main"]

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_SERVICE = 3

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


def _print_status(as_json: bool) -> bool:
    from driftline.services import Services

    statuses = Services(load_settings()).status()
    if as_json:
        out.print_json(json.dumps([s.as_dict() for s in statuses]))
    else:
        from rich.table import Table

        table = Table("service", "state", "pid", "address", "data", "log", "detail")
        for s in statuses:
            state = "[green]running[/]" if s.running else "[red]stopped[/]"
            table.add_row(
                s.name, state, str(s.pid or "-"), s.address, s.data_dir, s.log_file, s.detail
            )
        out.print(table)
    return all(s.running for s in statuses)


@services_app.command("up")
def services_up() -> None:
    """Start Kafka (KRaft) and Redis; a no-op for whatever is already running."""
    from driftline.services import Services

    Services(load_settings(), log=lambda m: err.print(f"[dim]·[/] {m}")).up()
    _print_status(as_json=False)


@services_app.command("down")
def services_down() -> None:
    """Stop Kafka and Redis cleanly (their data stays)."""
    from driftline.services import Services

    Services(load_settings(), log=lambda m: err.print(f"[dim]·[/] {m}")).down()


@services_app.command("status")
def services_status(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show whether Kafka and Redis run, and where their data and logs live.

    Exits 1 when a service is not running.
    """
    if not _print_status(as_json):
        raise typer.Exit(EXIT_FAILED)


@app.command()
def demo(
    output_dir: Annotated[
        str, typer.Option("--output-dir", help="Where the demo writes its chart and files.")
    ] = "out/demo",
) -> None:
    """Run the fraud story end to end on the local stack."""
    from driftline.demo import run_demo

    raise typer.Exit(run_demo(output_dir))


def main() -> None:
    """Entry point of the ``driftline`` console script."""
    try:
        app()
    except ServiceError as exc:
        err.print(f"[red]error:[/] {exc}")
        sys.exit(EXIT_SERVICE)
    except DriftlineError as exc:
        err.print(f"[red]error:[/] {exc}")
        sys.exit(EXIT_USAGE)
