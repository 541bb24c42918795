"""PNG charts of assay scores over time, with their thresholds (for the demo and replay)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["assay_chart"]

_MINUTE = 60_000
_STATUS_COLOURS = {"ok": "tab:green", "warning": "tab:orange", "alert": "tab:red"}


def assay_chart(
    assays: Sequence[Mapping[str, Any]],
    path: str | Path,
    t0: int | None = None,
    title: str | None = None,
) -> Path:
    """Plot each assay's score per window end, coloured by status, with threshold lines.

    ``assays`` are assay-result dicts (``driftline.events.AssayResult.to_dict()``); the x axis
    is minutes of event time after ``t0`` (default: the earliest window start).

    >>> import tempfile, os
    >>> rows = [{"assay": "a", "window_start": 0, "window_end": 60_000 * (i + 1),
    ...          "score": s, "status": st, "metric": "psi",
    ...          "thresholds": {"warning": 0.1, "alert": 0.25}}
    ...         for i, (s, st) in enumerate([(0.01, "ok"), (0.12, "warning"), (0.4, "alert")])]
    >>> with tempfile.TemporaryDirectory() as d:
    ...     out = assay_chart(rows, os.path.join(d, "c.png"))
    ...     out.stat().st_size > 1000
    True
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not assays:
        raise ValueError("assays: nothing to chart")
    path = Path(path)
    start = min(int(a["window_start"]) for a in assays) if t0 is None else t0
    fig, ax = plt.subplots(figsize=(8, 4), dpi=100)
    names = sorted({str(a["assay"]) for a in assays})
    for name in names:
        rows = sorted((a for a in assays if a["assay"] == name), key=lambda a: a["window_end"])
        minutes = [(a["window_end"] - start) / _MINUTE for a in rows]
        scores = [float(a["score"]) for a in rows]
        label = f"{name} ({rows[0].get('metric', 'score')})"
        ax.plot(minutes, scores, zorder=1, label=label)
        colours = [_STATUS_COLOURS.get(str(a["status"]), "tab:gray") for a in rows]
        ax.scatter(minutes, scores, c=colours, zorder=2)
        thresholds = rows[0].get("thresholds") or {}
        for level, style in (("warning", "--"), ("alert", ":")):
            if level in thresholds:
                ax.axhline(
                    thresholds[level],
                    linestyle=style,
                    color=_STATUS_COLOURS[level],
                    label=f"{name} {level} threshold",
                )
    import datetime as dt

    origin = dt.datetime.fromtimestamp(start / 1000, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    ax.set_xlabel(f"window end (minutes of event time after {origin})")
    # Drift scores span orders of magnitude; a symmetric log axis keeps the thresholds visible.
    ax.set_yscale("symlog", linthresh=0.05)
    ax.set_ylim(bottom=0)
    ax.set_ylabel("score (symlog)")
    ax.set_title(title or ", ".join(names))
    ax.legend(loc="upper left", fontsize="small")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
