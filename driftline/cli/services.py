"""``driftline services up|down|status``: the local Kafka broker and Redis server."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from driftline._console import err, out
from driftline.cli.app import EXIT_FAILED, services_app
from driftline.config import load_settings

__all__ = ["services_down", "services_status", "services_up"]


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
