"""``driftline deploy``, ``undeploy`` and ``pipelines``: the control topic."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from driftline._console import err, out
from driftline.cli.app import EXIT_USAGE, app
from driftline.config import load_settings

__all__ = ["deploy", "pipelines", "undeploy"]


@app.command()
def deploy(
    spec_path: Annotated[str, typer.Argument(help="The pipeline spec (YAML).", metavar="SPEC")],
) -> None:
    """Validate a pipeline spec, upload its models, create its topics and deploy it."""
    from driftline.sdk import Client
    from driftline.spec import load_spec
    from driftline.streams.control import pipeline_topics

    spec = load_spec(spec_path)
    client = Client()
    pipeline = client.deploy(spec)
    out.print(f"deployed [bold]{spec.name}[/] version {pipeline.version}")
    for kind, topic in pipeline_topics(client.settings.kafka, spec.name).items():
        out.print(f"  {kind:<10} {topic}")
    if spec.source is not None:
        src = spec.source
        pairs = f", requests from {src.requests}" if src.requests else ""
        out.print(
            f"  {'source':<10} {src.topic} ({src.format}{pairs}): predictions made elsewhere, "
            f"read by `driftline worker --pipeline {spec.name}`"
        )


@app.command()
def undeploy(
    name: Annotated[str, typer.Argument(help="Pipeline name.")],
) -> None:
    """Remove a pipeline from the control topic (its topics and history stay)."""
    from driftline.streams.control import ControlPlane

    if not ControlPlane(load_settings().kafka).undeploy(name):
        err.print(f"[red]error:[/] pipeline {name!r} is not deployed (see `driftline pipelines`)")
        raise typer.Exit(EXIT_USAGE)
    out.print(f"undeployed [bold]{name}[/]")


def _external(source: Any) -> dict[str, Any] | None:
    if not isinstance(source, dict):
        return None
    return {k: source.get(k) for k in ("model", "format", "topic", "requests")}


@app.command()
def pipelines(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List deployed pipelines with their versions."""
    from driftline.streams.control import ControlPlane, spec_version

    snapshot = ControlPlane(load_settings().kafka).snapshot()
    rows: list[dict[str, Any]] = [
        {
            "name": name,
            "version": spec_version(canonical),
            "models": sorted(canonical.get("models", {})),
            # Predictions made elsewhere: where the worker reads them, and in which form.
            "external": _external(canonical.get("source")),
            "validations": sorted(canonical.get("validations", {})),
            "alerts": sorted(canonical.get("alerts", {})),
            "assays": sorted(canonical.get("assays", {})),
        }
        for name, canonical in sorted(snapshot.items())
    ]
    if as_json:
        out.print_json(json.dumps(rows))
        return
    from rich.table import Table

    table = Table("pipeline", "version", "models", "validations", "alerts", "assays")
    for r in rows:
        table.add_row(
            r["name"],
            r["version"][:19],
            ", ".join(map(str, r["models"]))
            or (
                "{model} (external, {format}: {topic})".format(**r["external"])
                if r["external"]
                else ""
            ),
            ", ".join(r["validations"]),
            ", ".join(r["alerts"]),
            ", ".join(r["assays"]),
        )
    out.print(table)
