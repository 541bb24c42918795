"""``driftline worker``: run an inference worker."""

from __future__ import annotations

from typing import Annotated

import typer

from driftline._console import err
from driftline.cli._options import MetricsPort
from driftline.cli.app import EXIT_USAGE, app
from driftline.config import load_settings

__all__ = ["worker"]


@app.command("worker")
def worker(
    pipeline: Annotated[
        list[str] | None,
        typer.Option(
            "--pipeline", help="Serve only this pipeline (repeat for several; default: all)."
        ),
    ] = None,
    metrics_port: MetricsPort = None,
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
    # ``--pipeline a --pipeline a`` asks for one pipeline once.
    selected = list(dict.fromkeys(pipeline)) if pipeline else None
    stats = run_worker(
        selected,
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
