"""``driftline logs``: a pipeline's latest results, or its dead letters."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.markup import escape

from driftline._console import err, out
from driftline.cli._format import ms_to_iso, short
from driftline.cli._tail import Record, render_rows, sort_key, tail
from driftline.cli.app import app
from driftline.config import load_settings
from driftline.errors import DriftlineError

__all__ = ["logs"]

# How far back --failures-only looks, per partition.
FAILURE_SCAN = 100_000


def _missing(topic: str) -> DriftlineError:
    return DriftlineError(
        f"topic {topic} does not exist; is the pipeline deployed (`driftline pipelines`)?"
    )


def _unreadable(r: Record) -> dict[str, Any]:
    return {
        "unreadable": r.error,
        "topic": r.topic,
        "partition": r.partition,
        "offset": r.offset,
    }


def _result_row(r: dict[str, Any]) -> list[str]:
    outputs = r.get("outputs") or {}
    champion: list[Any] = next(iter(outputs.values()), [])
    failures = r.get("check_failures") or []
    return [
        ms_to_iso(r.get("time")),
        f"{r.get('id')}[{r.get('row', 0)}]",
        short(champion[0] if champion else None),
        short(r.get("inputs")),
        f"{len(failures)} {', '.join(failures)}".strip(),
    ]


@app.command("logs")
def logs(
    name: Annotated[str, typer.Argument(help="Pipeline name.")],
    limit: Annotated[int, typer.Option("--limit", help="How many results.", min=1)] = 20,
    failures_only: Annotated[
        bool, typer.Option("--failures-only", help="Only results with check failures.")
    ] = False,
    dead_letters: Annotated[
        bool,
        typer.Option(
            "--dead-letters",
            help="Show the pipeline's dead letters (rejected requests) with their reason instead.",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show a pipeline's latest results: time, output, input, anomalies.

    A message that cannot be shown is listed as unreadable among the others.
    """
    if dead_letters:
        from driftline.cli.deadletters import show_dead_letters

        if failures_only:
            raise DriftlineError(
                "--failures-only selects results with check failures; it does not apply to "
                "--dead-letters (every dead letter is a failure): drop one of them"
            )
        show_dead_letters(name, limit, as_json)
        return
    kafka = load_settings().kafka
    topic = kafka.topic(name, "results")
    records = tail(kafka, topic, FAILURE_SCAN if failures_only else limit, missing=_missing)
    good = [r for r in records if r.readable]
    bad = [r for r in records if not r.readable]
    events = [r.event for r in good if not failures_only or r.event.get("check_failures")]
    events.sort(key=lambda e: (sort_key(e.get("time")), str(e.get("id")), sort_key(e.get("row"))))
    events = events[-limit:]
    if failures_only:
        bad = []
    if as_json:
        out.print_json(json.dumps(events + [_unreadable(r) for r in bad], default=str))
        return
    from rich.table import Table

    table = Table("time", "id", "output", "input", "anomalies")
    rows, unreadable = render_rows(events, _result_row, 5)
    for row in rows:
        table.add_row(*row)
    for r in bad:
        table.add_row(
            "unreadable", f"offset {r.partition}:{r.offset}", escape(r.error or ""), "", ""
        )
    out.print(table)
    if unreadable or bad:
        err.print(f"[yellow]{unreadable + len(bad)} unreadable message(s) on {topic}[/]")
