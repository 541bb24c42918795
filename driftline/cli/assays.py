"""``driftline assays``: a pipeline's latest assay results."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.text import Text

from driftline._console import err, out
from driftline.cli._format import ms_to_iso, num
from driftline.cli._tail import render_rows, sort_key, tail
from driftline.cli.app import app
from driftline.config import load_settings

__all__ = ["TAIL", "assays", "hashable"]

# How many of the newest messages per partition ``assays`` and ``alerts`` look at.
TAIL = 20_000

_COLORS = {"ok": "green", "warning": "yellow", "alert": "red"}


def hashable(value: object) -> object:
    """``value`` if it can key a dict, else its repr (events come from an open topic).

    >>> hashable("a"), hashable([1])
    ('a', '[1]')
    """
    return value if isinstance(value, str | int | float | bool | None) else repr(value)


def _row(r: dict[str, Any]) -> list[str | Text]:
    status = str(r.get("status", "-"))
    color = _COLORS.get(status, "white")
    return [
        ms_to_iso(r.get("window_start")),
        ms_to_iso(r.get("window_end")),
        str(r.get("assay", "-")),
        str(r.get("metric", "-")),
        num(r.get("score")),
        num(r.get("p_value")),
        Text(status, style=color),
        str(r.get("count", "-")),
    ]


@app.command("assays")
def assays(
    name: Annotated[str, typer.Argument(help="Pipeline name.")],
    assay: Annotated[str | None, typer.Option("--assay", help="Only this assay.")] = None,
    limit: Annotated[int, typer.Option("--limit", help="How many windows.", min=1)] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Latest assay results of a pipeline: window, score, p-value, status, count.

    A result that cannot be shown is listed as unreadable among the others.
    """
    kafka = load_settings().kafka
    topic = kafka.topic("assays")
    records = tail(kafka, topic, TAIL)
    rows = [
        r.event
        for r in records
        if r.readable
        and r.event.get("pipeline") == name
        and (assay is None or r.event.get("assay") == assay)
    ]
    # duplicates after a crash carry the same (assay, window); keep one
    unique = {(hashable(r.get("assay")), hashable(r.get("window_end"))): r for r in rows}
    latest = sorted(
        unique.values(), key=lambda r: (sort_key(r.get("window_end")), str(r.get("assay", "")))
    )[-limit:]
    if as_json:
        out.print_json(json.dumps(latest, default=str))
        return
    from rich.table import Table

    table = Table(
        "window start", "window end", "assay", "metric", "score", "p-value", "status", "count"
    )
    cells, unreadable = render_rows(latest, _row, 8)
    for row in cells:
        table.add_row(*row)
    out.print(table)
    if unreadable:
        err.print(f"[yellow]{unreadable} unreadable assay result(s) on {topic}[/]")
