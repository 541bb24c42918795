"""The ``driftline`` command line.

Exit codes: 0 success, 1 a check or comparison found a problem, 2 bad usage or input
(a wrong argument, an invalid spec), 3 a service is unreachable or failed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

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


model_app = typer.Typer(help="Upload and list ONNX models.", no_args_is_help=True)
app.add_typer(model_app, name="model")


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
                _tensor_summary(v.get("inputs", [])),
                _tensor_summary(v.get("outputs", [])),
                _ms_to_iso(v.get("uploaded_at")),
            )
    out.print(table)


def _tensor_summary(tensors: list[dict[str, object]]) -> str:
    return ", ".join(f"{t.get('name')}{list(t.get('shape') or [])}" for t in tensors)  # type: ignore[call-overload]


def _ms_to_iso(ms: object) -> str:
    import datetime as dt

    if not isinstance(ms, int | float):
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


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
            ", ".join(map(str, r["models"])),
            ", ".join(r["validations"]),
            ", ".join(r["alerts"]),
            ", ".join(r["assays"]),
        )
    out.print(table)


@app.command()
def demo(
    output_dir: Annotated[
        str, typer.Option("--output-dir", help="Where the demo writes its chart and files.")
    ] = "out/demo",
) -> None:
    """Run the fraud story end to end on the local stack."""
    from driftline.demo import run_demo

    raise typer.Exit(run_demo(output_dir))


@app.command("bridge")
def bridge(
    channels: Annotated[
        str | None,
        typer.Option(
            "--channels", help="Comma-separated subset of email,slack,webhook,stdout (default all)."
        ),
    ] = None,
    metrics_port: Annotated[
        int | None, typer.Option("--metrics-port", help="Serve Prometheus /metrics on this port.")
    ] = None,
) -> None:
    """Deliver notifications from driftline.notifications by email, Slack and webhooks."""
    from driftline.alerts.bridge import run_bridge

    raise typer.Exit(run_bridge(channels, metrics_port))


@app.command("worker")
def worker(
    pipeline: Annotated[
        list[str] | None,
        typer.Option(
            "--pipeline", help="Serve only this pipeline (repeat for several; default: all)."
        ),
    ] = None,
    metrics_port: Annotated[
        int | None, typer.Option("--metrics-port", help="Serve Prometheus /metrics on this port.")
    ] = None,
    guarantee: Annotated[
        str | None,
        typer.Option(
            "--guarantee",
            help="exactly-once (default): results and offsets commit in one Kafka transaction "
            "per micro-batch; readers use read_committed and never see duplicates. "
            "at-least-once: lower latency (no transaction commit per batch, results visible "
            "at once) but a crash or rebalance can repeat results.",
        ),
    ] = None,
    worker_id: Annotated[
        str | None,
        typer.Option(
            "--worker-id",
            help="Stable id of this worker instance (its transactional.id); give each worker "
            "on a host its own. Default: DRIFTLINE_WORKER_ID or <hostname>-0.",
        ),
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", help="Max messages per micro-batch.", min=1)
    ] = None,
) -> None:
    """Run an inference worker: requests in, one result event per row out (Ctrl-C stops)."""
    if guarantee is not None and guarantee not in ("exactly-once", "at-least-once"):
        err.print(f"[red]error:[/] --guarantee {guarantee!r}: use exactly-once or at-least-once")
        raise typer.Exit(EXIT_USAGE)
    import logging

    from driftline.streams.worker import run_worker

    logging.basicConfig(
        level=load_settings().log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    stats = run_worker(
        pipeline or None,
        guarantee=guarantee,
        worker_id=worker_id,
        metrics_port=metrics_port,
        batch_size=batch_size,
        log=lambda m: err.print(f"[dim]·[/] {m}"),
    )
    err.print(
        f"[dim]·[/] stopped: {stats.messages} requests, {stats.rows} rows, "
        f"{stats.dead_letters} dead letters, {stats.aborts} aborted batches"
    )


def _short(values: object, limit: int = 6) -> str:
    if isinstance(values, list) and len(values) > limit:
        return (
            "["
            + ", ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in values[:limit])
            + ", …]"
        )
    return json.dumps(values)


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

    results = send(load_settings().kafka, name, read_request_file(Path(file)), timeout=timeout)
    if as_json:
        out.print_json(json.dumps(results))
    else:
        from rich.table import Table

        table = Table("row", "outputs", "check failures", "elapsed", "models")
        for r in results:
            outputs = "\n".join(f"{m}: {_short(v)}" for m, v in r["outputs"].items())
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


@app.command("produce")
def produce(
    name: Annotated[str, typer.Argument(help="Pipeline name.")],
    file: Annotated[
        str,
        typer.Option(
            "--file", help="JSON lines: one request object, row or list of rows per line."
        ),
    ],
    rate: Annotated[
        float | None,
        typer.Option("--rate", help="Requests per second (default: as fast as possible)."),
    ] = None,
) -> None:
    """Send many requests to a pipeline's requests topic."""
    import time
    from pathlib import Path

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from driftline.streams.produce import produce_file

    path = Path(file)
    if not path.is_file():
        err.print(f"[red]error:[/] --file {file!r}: no such file")
        raise typer.Exit(EXIT_USAGE)
    with path.open("rb") as f:
        total = sum(1 for line in f if line.strip())
    t0 = time.monotonic()
    with Progress(
        "sending", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=err
    ) as bar:
        task = bar.add_task("send", total=total)
        sent = produce_file(
            load_settings().kafka,
            name,
            path,
            rate=rate,
            progress=lambda n: bar.update(task, completed=n),
        )
        bar.update(task, completed=sent)
    elapsed = time.monotonic() - t0
    out.print(
        f"sent {sent} requests to {name} in {elapsed:.1f} s ({sent / max(elapsed, 1e-9):.0f}/s)"
    )


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
            _ms_to_iso(r.get("time")),
            f"{r.get('id')}[{r.get('row', 0)}]",
            _short(champion[0] if champion else None),
            _short(r.get("inputs")),
            f"{len(failures)} {', '.join(failures)}".strip(),
        )
    out.print(table)


@app.command("monitor")
def monitor(
    metrics_port: Annotated[
        int | None, typer.Option("--metrics-port", help="Serve Prometheus metrics on this port.")
    ] = None,
) -> None:
    """Run the monitor agents: windows in Redis, count alerts, assays, alert lifecycle."""
    from driftline.streams._monitor_cli import cmd_monitor

    raise typer.Exit(cmd_monitor(load_settings(), metrics_port))


@app.command("assays")
def assays(
    name: Annotated[str, typer.Argument(help="Pipeline name.")],
    assay: Annotated[str | None, typer.Option("--assay", help="Only this assay.")] = None,
    limit: Annotated[int, typer.Option("--limit", help="How many windows.", min=1)] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Latest assay results of a pipeline: window, score, p-value, status, count."""
    from driftline.streams._monitor_cli import cmd_assays

    raise typer.Exit(cmd_assays(load_settings(), name, assay, limit, as_json))


@app.command("alerts")
def alerts(
    pipeline: Annotated[str | None, typer.Option("--pipeline", help="Only this pipeline.")] = None,
    limit: Annotated[int, typer.Option("--limit", help="How many notifications.", min=1)] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Notification history: every alert transition (firing, resolved) with its id."""
    from driftline.streams._monitor_cli import cmd_alerts

    raise typer.Exit(cmd_alerts(load_settings(), pipeline, limit, as_json))


@app.command("replay")
def replay(
    name: Annotated[str, typer.Argument(help="Pipeline name.")],
    start: Annotated[
        str, typer.Option("--from", help="Range start: epoch ms, ISO-8601 or now-10m.")
    ],
    end: Annotated[str, typer.Option("--to", help="Range end: epoch ms, ISO-8601 or now.")],
    spec: Annotated[
        Path | None, typer.Option("--spec", help="Replay with this spec file instead.")
    ] = None,
    audit: Annotated[
        bool, typer.Option("--audit", help="Compare with what was published; exit 1 if differs.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    output: Annotated[
        Path | None,
        typer.Option("--output", help="Also write the results to a .csv, .parquet or .json file."),
    ] = None,
    chart: Annotated[
        Path | None, typer.Option("--chart", help="Also draw the assay scores to a PNG file.")
    ] = None,
) -> None:
    """Recompute windows, assay results and alert transitions over a range of the results topic."""
    from driftline.streams._monitor_cli import cmd_replay

    raise typer.Exit(
        cmd_replay(load_settings(), name, start, end, spec, audit, as_json, output, chart)
    )


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
