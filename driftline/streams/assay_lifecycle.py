"""The assay lifecycle: ``ok → warning → alert → ok``, one notification per transition.

An assay's window status is ``ok``, ``warning`` or ``alert``. Like an alert (DESIGN §8) it may
wait ``for`` before the first notification and ``repeat`` while not ok; unlike an alert it has
two levels, and a change of level while notified is a transition of its own:

* ``ok → warning`` or ``ok → alert``: ``firing`` with that level (after ``for``, measured from
  the first window that was not ok, whatever its level);
* ``warning → alert`` (escalation) and ``alert → warning`` (de-escalation): ``firing`` with the
  new level, at once;
* back to ``ok``: ``resolved``, with the level it leaves;
* ``repeat``: while at one level, the same level again every ``repeat_ms``.

A pure function of the window statuses in window-end order, so replay reproduces every
transition; the state is a plain dict that :class:`driftline.alerts.lifecycle.AlertState`
also reads (``state`` is ``ok``, ``pending`` or ``firing``; ``level`` is added).

>>> s, out = run_assay({}, ["warning", "alert", "warning", "ok"], [1, 2, 3, 4])
>>> [(t.state[0], t.level, t.at) for t in out]
[('f', 'warning', 1), ('f', 'alert', 2), ('f', 'warning', 3), ('r', 'warning', 4)]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from driftline.events import Notification, notification_id
from driftline.expressions import to_text

if TYPE_CHECKING:
    from driftline.compile import AssayPlan

__all__ = ["AssayTransition", "assay_notification", "iso", "run_assay", "step_assay"]

Level = Literal["warning", "alert"]
_LEVELS = ("warning", "alert")


@dataclass(frozen=True)
class AssayTransition:
    """One notification-worthy change of an assay.

    ``state`` is ``firing`` (a new level, or a repeat) or ``resolved``; ``level`` is the level
    entered (firing) or left (resolved); ``start`` is when the current non-ok run was first
    notified; ``at`` is the window end of this transition.
    """

    state: Literal["firing", "resolved"]
    level: Level
    at: int
    start: int
    value: float
    repeat: bool = False

    def id(self, pipeline: str, assay: str) -> str:
        """Deterministic notification id (the same a replay computes)."""
        return notification_id(pipeline, f"assay:{assay}", self.at, self.state)


def _level(value: Any) -> Level | None:
    return value if value in _LEVELS else None


def step_assay(
    state: Mapping[str, Any] | None,
    status: str,
    at: int,
    value: float = float("nan"),
    for_ms: int = 0,
    repeat_ms: int = 0,
) -> tuple[dict[str, Any], list[AssayTransition]]:
    """Advance one assay by one window of ``status`` (``ok``, ``warning`` or ``alert``).

    >>> s, out = step_assay({}, "alert", 10, 0.3, for_ms=5)
    >>> s["state"], out
    ('pending', [])
    >>> s, out = step_assay(s, "warning", 15, 0.2, for_ms=5)
    >>> [(t.state, t.level) for t in out]
    [('firing', 'warning')]
    """
    if status not in ("ok", *_LEVELS):
        raise ValueError(f"status={status!r}: expected ok, warning or alert")
    if for_ms < 0 or repeat_ms < 0:
        raise ValueError(f"for_ms={for_ms}, repeat_ms={repeat_ms}: must be >= 0")
    s = dict(state or {})
    phase = s.get("state", "ok")
    if phase == "firing":
        since = s.get("since")
        start = at if since is None else int(since)
        # A state stored before assays had levels: take the window's level as the current one.
        level = _level(s.get("level")) or _level(status) or "warning"
        if status == "ok":
            return {"state": "ok"}, [AssayTransition("resolved", level, at, start, value)]
        new = _level(status)
        assert new is not None
        if new != level:
            out = {"state": "firing", "level": new, "since": start, "notified": at}
            return out, [AssayTransition("firing", new, at, start, value)]
        notified = s.get("notified")
        last = start if notified is None else int(notified)
        if repeat_ms and at - last >= repeat_ms:
            out = {"state": "firing", "level": level, "since": start, "notified": at}
            return out, [AssayTransition("firing", level, at, start, value, repeat=True)]
        return {"state": "firing", "level": level, "since": start, "notified": last}, []
    if status == "ok":
        return {"state": "ok"}, []
    new = _level(status)
    assert new is not None
    pending = s.get("since")
    pending_since = int(pending) if phase == "pending" and pending is not None else at
    if at - pending_since >= for_ms:
        out = {"state": "firing", "level": new, "since": at, "notified": at}
        return out, [AssayTransition("firing", new, at, at, value)]
    return {"state": "pending", "level": new, "since": pending_since}, []


def run_assay(
    state: Mapping[str, Any] | None,
    statuses: Sequence[str],
    ends: Sequence[int],
    values: Sequence[float] | None = None,
    for_ms: int = 0,
    repeat_ms: int = 0,
) -> tuple[dict[str, Any], list[AssayTransition]]:
    """Apply :func:`step_assay` over consecutive windows; the final state and all transitions."""
    if len(statuses) != len(ends) or (values is not None and len(values) != len(ends)):
        raise ValueError("statuses, ends and values must have the same length")
    s: dict[str, Any] = dict(state or {})
    out: list[AssayTransition] = []
    for i, (status, end) in enumerate(zip(statuses, ends, strict=True)):
        v = float("nan") if values is None else float(values[i])
        s, t = step_assay(s, status, int(end), v, for_ms, repeat_ms)
        out.extend(t)
    return s, out


def iso(ms: int) -> str:
    """ISO-8601 UTC time of epoch milliseconds, as ``driftline replay`` reads it.

    >>> iso(1_700_000_000_000)
    '2023-11-14T22:13:20Z'
    >>> iso(1_700_000_000_250)
    '2023-11-14T22:13:20.250Z'
    """
    dt = datetime.fromtimestamp(ms / 1000, tz=UTC)
    text = dt.isoformat(timespec="milliseconds" if ms % 1000 else "seconds")
    return text.replace("+00:00", "Z")


def assay_notification(
    pipeline: str,
    spec_version: str,
    longest_ms: int,
    y: AssayPlan,
    t: AssayTransition,
    r: Any,
    status: str,
    total: int,
) -> Notification:
    """The notification of one assay transition, with what a reader needs to act on it.

    ``r`` is the window's detector result, ``status`` the window's status (the scan may have
    raised it), ``total`` the window's event count, ``longest_ms`` the pipeline's longest
    window (how far back a replay must start to reach this transition from ``ok``).
    """
    thresholds = {k: float(v) for k, v in r.thresholds.items()}
    if t.state == "resolved":
        threshold = thresholds.get("warning", thresholds.get("alert", thresholds.get("alpha")))
    else:
        threshold = thresholds.get(t.level, thresholds.get("alpha", thresholds.get("alert")))
    score = float(r.score)
    # A replay from here starts in ok and reaches this transition with the same id.
    since = min(t.start, t.at) - y.for_ms - longest_ms
    return Notification(
        id=t.id(pipeline, y.name),
        alert=y.name,
        pipeline=pipeline,
        state=t.state,
        value=score,
        condition=f"{r.metric}({to_text(y.iopath)}) status {status}"
        + (" (scan)" if status != r.status else ""),
        window={"start": t.at - y.width_ms, "end": t.at},
        at=t.at,
        severity=y.severity if t.level == "alert" else "warning",
        notify=list(y.notify),
        spec=spec_version,
        kind="assay",
        details={
            "assay_status": status,
            "metric": str(r.metric),
            "score": score if math.isfinite(score) else None,
            "threshold": threshold,
            "thresholds": thresholds,
            "window_count": int(total),
            "baseline_count": int(getattr(r, "baseline_count", 0) or 0),
            "iopath": to_text(y.iopath),
            "replay": f"driftline replay {pipeline} --from {iso(since)} --to {iso(t.at)} --audit",
        },
    )
