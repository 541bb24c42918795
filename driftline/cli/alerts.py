"""``driftline alerts``: the notification history."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.text import Text

from driftline._console import err, out
from driftline.cli._format import ms_to_iso, num
from driftline.cli._tail import render_rows, sort_key, tail
from driftline.cli.app import app
from driftline.cli.assays import TAIL, hashable
from driftline.config import load_settings

__all__ = ["alerts"]


def _row(r: dict[str, Any]) -> list[str | Text]:
    state = str(r.get("state", "-"))
    color = "red" if state == "firing" else "green"
    return [
        ms_to_iso(r.get("at")),
        str(r.get("pipeline", "-")),
        str(r.get("kind", "alert")),
        str(r.get("alert", "-")),
        Text(state, style=color),
        num(r.get("value")),
        str(r.get("condition", "-")),
        str(r.get("severity", "-")),
        str(r.get("id", "-")),
    ]


@app.command("alerts")
def alerts(
    pipeline: Annotated[str | None, typer.Option("--pipeline", help="Only this pipeline.")] = None,
    limit: Annotated[int, typer.Option("--limit", help="How many notifications.", min=1)] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Notification history: every transition of alerts, assays and performance, with its id.

    A notification that cannot be shown is listed as unreadable among the others.
    """
    kafka = load_settings().kafka
    topic = kafka.topic("notifications")
    records = tail(kafka, topic, TAIL)
    rows = [
        r.event
        for r in records
        if r.readable
        and "id" in r.event
        and (pipeline is None or r.event.get("pipeline") == pipeline)
    ]
    unique = {hashable(r["id"]): r for r in rows}
    history = sorted(
        unique.values(), key=lambda r: (sort_key(r.get("at")), str(r.get("alert", "")))
    )[-limit:]
    if as_json:
        out.print_json(json.dumps(history, default=str))
        return
    from rich.table import Table

    table = Table(
        "at", "pipeline", "kind", "alert", "state", "value", "condition", "severity", "id"
    )
    cells, unreadable = render_rows(history, _row, 9)
    for row in cells:
        table.add_row(*row)
    out.print(table)
    if unreadable:
        err.print(f"[yellow]{unreadable} unreadable notification(s) on {topic}[/]")
