"""``driftline logs``: a pipeline's latest results."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from driftline._console import out
from driftline.cli._format import ms_to_iso, short
from driftline.cli.app import app
from driftline.config import load_settings

__all__ = ["logs"]


@app.command("logs")
def logs(
    name: Annotated[str, typer.Argument(help="Pipeline name.")],
    limit: Annotated[int, typer.Option("--limit", help="How many results.", min=1)] = 20,
    failures_only: Annotated[
        bool, typer.Option("--failures-only", help="Only results with check failures.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show a pipeline's latest results: time, output, input, anomalies."""
    from driftline.streams.produce import latest_results

    results = latest_results(load_settings().kafka, name, limit=limit, failures_only=failures_only)
    if as_json:
        out.print_json(json.dumps(results))
        return
    from rich.table import Table

    table = Table("time", "id", "output", "input", "anomalies")
    for r in results:
        outputs = r.get("outputs") or {}
        champion: list[Any] = next(iter(outputs.values()), [])
        failures = r.get("check_failures") or []
        table.add_row(
            ms_to_iso(r.get("time")),
            f"{r.get('id')}[{r.get('row', 0)}]",
            short(champion[0] if champion else None),
            short(r.get("inputs")),
            f"{len(failures)} {', '.join(failures)}".strip(),
        )
    out.print(table)
