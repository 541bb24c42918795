"""``driftline infer``: send one request and print its results."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from driftline._console import out
from driftline.cli._format import short
from driftline.cli.app import EXIT_FAILED, app
from driftline.config import KafkaSettings, load_settings
from driftline.errors import DriftlineError

__all__ = ["infer"]


def _refuse_external(kafka: KafkaSettings, name: str) -> None:
    """An external pipeline's predictions are made elsewhere: a request sent here would wait
    on a topic nobody serves, so say where its requests belong instead."""
    from driftline.streams.control import ControlPlane

    plane = ControlPlane(kafka)
    try:
        canonical = plane.snapshot().get(name)
    finally:
        plane.close()
    source = canonical.get("source") if isinstance(canonical, dict) else None
    if isinstance(source, dict):
        where = source.get("requests") or source.get("topic")
        raise DriftlineError(
            f"pipeline {name!r} has no models: its predictions are made by another serving "
            f"system, which driftline reads from topic {source.get('topic')!r}; send the "
            f"request to that system (its requests topic is {where!r}), not to driftline infer"
        )


@app.command("infer")
def infer(
    name: Annotated[str, typer.Argument(help="Pipeline name.")],
    file: Annotated[
        str, typer.Option("--file", help='Request JSON: {"tensor": [[...], ...]} or rows.')
    ],
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds to wait for results.")
    ] = 30.0,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the result events as JSON.")
    ] = False,
) -> None:
    """Send one request and print its results (outputs, check failures, elapsed, models).

    Exits 1 when a row fails a validation, 2 when the request is rejected (dead-lettered),
    3 when no result arrives (is a worker running?).
    """
    from pathlib import Path

    from driftline.streams.produce import infer as send
    from driftline.streams.produce import read_request_file

    if Path(file).is_dir():
        raise DriftlineError(f"--file {file!r} is a directory; pass a request JSON file")
    settings = load_settings()
    _refuse_external(settings.kafka, name)
    results = send(settings.kafka, name, read_request_file(Path(file)), timeout=timeout)
    if as_json:
        out.print_json(json.dumps(results))
    else:
        from rich.table import Table

        table = Table("row", "outputs", "check failures", "elapsed", "models")
        for r in results:
            outputs = "\n".join(f"{m}: {short(v)}" for m, v in r["outputs"].items())
            models = "\n".join(f"{m}: {v[:19]}" for m, v in r["models"].items())
            table.add_row(
                str(r["row"]),
                outputs,
                ", ".join(r["check_failures"]) or "-",
                f"{r['elapsed_ns'] / 1e6:.3f} ms",
                models,
            )
        out.print(f"request {results[0]['id']} · spec {results[0]['spec'][:19]}")
        out.print(table)
    if any(r["check_failures"] for r in results):
        raise typer.Exit(EXIT_FAILED)
