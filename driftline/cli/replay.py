"""``driftline replay``: recompute and audit a range of a pipeline's history."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from driftline.cli.app import app
from driftline.config import load_settings
from driftline.errors import ConfigError

__all__ = ["EARLIEST_MS", "LATEST_MS", "check_time", "replay"]

#: The range of times ``--from`` and ``--to`` accept: 2000-01-01 to the end of 9999. Replay
#: reads from a window's width before ``--from``, so the epoch itself (``--from 0``) would ask
#: Kafka for offsets before time 0; Python's dates end with year 9999.
EARLIEST_MS = 946_684_800_000
LATEST_MS = 253_402_300_799_999


def check_time(value: str, option: str) -> int:
    """Epoch ms of a ``--from``/``--to`` value, refused with a message when out of range.

    >>> check_time("2023-11-14T22:13:20Z", "--from")
    1700000000000
    >>> check_time("now", "--to") > EARLIEST_MS
    True
    """
    from driftline.streams._monitor_cli import parse_time

    hint = "use epoch ms, an ISO-8601 time (2024-11-21T10:00:00Z) or now-10m"
    try:
        ms = parse_time(value, option)
    except (OverflowError, ValueError) as exc:
        raise ConfigError(f"{option} {value!r}: {exc}; {hint}") from None
    if ms < EARLIEST_MS:
        raise ConfigError(
            f"{option} {value!r} is before 2000-01-01, the earliest time replay reads; {hint}"
        )
    if ms > LATEST_MS:
        raise ConfigError(f"{option} {value!r} is after the year 9999; {hint}")
    return ms


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
        bool,
        typer.Option(
            "--audit",
            help="Compare with what was published (of a performance window, its latest "
            "revision); exit 1 if anything differs.",
        ),
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
    """Recompute windows, assay results, alert transitions and performance windows of a range."""
    from driftline.streams._monitor_cli import cmd_replay

    check_time(start, "--from")
    check_time(end, "--to")
    raise typer.Exit(
        cmd_replay(load_settings(), name, start, end, spec, audit, as_json, output, chart)
    )
