"""``driftline model upload|list``: the ONNX model store."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from driftline._console import out
from driftline.cli._format import ms_to_iso, tensor_summary
from driftline.cli.app import model_app
from driftline.config import load_settings

__all__ = ["model_list", "model_upload"]


@model_app.command("upload")
def model_upload(
    name: Annotated[str, typer.Argument(help="Model name (an identifier).")],
    path: Annotated[str, typer.Argument(help="Path of the .onnx file.")],
) -> None:
    """Store an ONNX model content-addressed and record its version in Kafka."""
    from driftline.sdk import Client

    info = Client().upload_model(name, path)
    out.print(f"uploaded [bold]{info.name}[/] {info.sha256}")
    for kind, tensors in (("input", info.inputs), ("output", info.outputs)):
        for t in tensors:
            out.print(f"  {kind} {t.name}: {t.dtype} {list(t.shape)}")


@model_app.command("list")
def model_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List uploaded models and their versions."""
    from driftline.streams.control import ControlPlane

    models = ControlPlane(load_settings().kafka).models()
    if as_json:
        out.print_json(json.dumps(models, default=str))
        return
    from rich.table import Table

    table = Table("model", "version", "inputs", "outputs", "uploaded")
    for name, versions in sorted(models.items()):
        for v in versions:
            table.add_row(
                name,
                str(v.get("sha256", ""))[:19],
                tensor_summary(v.get("inputs", [])),
                tensor_summary(v.get("outputs", [])),
                ms_to_iso(v.get("uploaded_at")),
            )
    out.print(table)
