"""Bodies of the ``monitor``, ``assays``, ``alerts`` and ``replay`` commands (cli.py stays thin)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from driftline._console import err, out
from driftline.config import MonitorSettings, Settings
from driftline.errors import ConfigError, ServiceError, SpecError

__all__ = ["cmd_monitor", "cmd_replay", "parse_time"]

# How many of the newest messages per partition ``assays`` and ``alerts`` look at.
TAIL = 20_000


def parse_time(value: str, name: str, now_ms: int | None = None) -> int:
    """Epoch milliseconds from epoch ms, an ISO-8601 time (UTC if no zone) or ``now-<dur>``.

    >>> parse_time("1700000000000", "--from")
    1700000000000
    >>> parse_time("2023-11-14T22:13:20Z", "--from")
    1700000000000
    >>> parse_time("now-1m", "--to", now_ms=120_000)
    60000
    """
    v = value.strip()
    if v.lstrip("-").isdigit():
        return int(v)
    if v.startswith("now"):
        now = int(time.time() * 1000) if now_ms is None else now_ms
        rest = v[3:]
        if not rest:
            return now
        from driftline.expressions import parse_duration

        sign = -1 if rest[0] == "-" else 1
        try:
            return now + sign * int(parse_duration(rest[1:]))
        except Exception:
            raise ConfigError(f"{name}={value!r}: use epoch ms, ISO-8601 or now-5m") from None
    try:
        dt = datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"{name}={value!r}: use epoch ms, an ISO-8601 time (2024-11-21T10:00:00Z) or now-5m"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def _iso(ms: Any) -> str:
    if not isinstance(ms, int | float):
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def _num(x: Any) -> str:
    return "-" if x is None else f"{x:.4g}" if isinstance(x, float) else str(x)


def cmd_monitor(settings: Settings, metrics_port: int | None) -> int:
    from driftline.streams._faust_app import run_monitor

    run_monitor(settings, MonitorSettings(), metrics_port)
    return 0


def cmd_replay(
    settings: Settings,
    name: str,
    start: str,
    end: str,
    spec_path: Path | None,
    do_audit: bool,
    as_json: bool,
    output: Path | None = None,
    chart: Path | None = None,
) -> int:
    from driftline.streams.replay import audit, replay, summarize, write_result

    t1, t2 = parse_time(start, "--from"), parse_time(end, "--to")
    if t2 <= t1:
        raise ConfigError(f"--to {end!r} is not after --from {start!r}")
    if output is not None and output.suffix.lower() not in (".csv", ".parquet", ".pq", ".json"):
        raise ConfigError(f"--output {str(output)!r}: use a .csv, .parquet or .json file")
    if chart is not None and chart.suffix.lower() != ".png":
        raise ConfigError(f"--chart {str(chart)!r}: use a .png file")
    base_dir = None
    if spec_path is not None:
        from driftline.spec import load_spec

        spec = load_spec(spec_path)
        if spec.name != name:
            raise SpecError("name", f"the spec file is for {spec.name!r}, not {name!r}")
        canonical = spec.to_canonical()
        base_dir = spec_path.parent
    else:
        from driftline.streams.control import ControlPlane

        try:
            deployed = ControlPlane(settings.kafka).snapshot()
        except Exception as exc:
            raise ServiceError(f"cannot read the control topic: {exc}") from exc
        if name not in deployed:
            raise ConfigError(f"pipeline {name!r} is not deployed; deploy it or pass --spec FILE")
        canonical = deployed[name]
    result = replay(settings, canonical, t1, t2, base_dir=base_dir)
    report = audit(settings, result) if do_audit else None
    if as_json:
        doc: dict[str, Any] = result.to_dict()
        if report is not None:
            doc["audit"] = report.to_dict()
        out.print_json(json.dumps(doc, default=str))
    else:
        from rich.table import Table

        table = Table("at", "kind", "name", "value", "status", "count")
        for r in summarize(result):
            table.add_row(
                _iso(r["at"]),
                r["kind"],
                r["name"],
                _num(r["value"]),
                str(r["status"]),
                _num(r["count"]),
            )
        out.print(table)
        out.print(
            f"{result.events} events, {result.late} late, {result.dead} malformed; "
            f"{len(result.assays)} assay results, {len(result.notifications)} transitions"
        )
        if result.joined:
            out.print(
                f"{result.labels} labels ({result.dead_labels} malformed) joined into "
                f"{len(result.performance)} performance windows, each with every label"
            )
        if report is not None:
            if report.differences:
                diff = Table("kind", "key", "field", "live", "replay")
                for d in report.differences:
                    diff.add_row(d.kind, d.key, d.what, str(d.live), str(d.replay))
                out.print(diff)
            perf = (
                f", plus the latest revision of {report.compared_performance} performance windows"
                if result.joined
                else ""
            )
            out.print(
                f"audit: {len(report.differences)} difference(s) over "
                f"{report.compared_assays} assay results and "
                f"{report.compared_notifications} notifications{perf}"
            )
    if output is not None:
        write_result(result, output)
        rows = len(result.assays) + len(result.notifications) + len(result.performance)
        err.print(f"wrote {rows} rows to {output}")
    if chart is not None:
        if result.assays:
            from driftline.charts import assay_chart

            assay_chart([a.to_dict() for a in result.assays], chart, t0=t1)
            err.print(f"wrote the chart of {len(result.assays)} assay windows to {chart}")
        else:
            err.print(f"no assay windows in the range; {chart} not written")
    if report is not None and report.differences:
        return 1
    return 0
