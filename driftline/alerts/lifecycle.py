"""The alert lifecycle (DESIGN §8): ok → pending (``for``) → firing → resolved, with ``repeat``.

A pure state machine evaluated once per closed window, in window-end order. Every transition
that users hear about (firing, a repeat while firing, resolved) is a :class:`Transition`
whose notification id is deterministic in (pipeline, alert, transition time, state), so a
transition recomputed after a crash or by replay carries the same id.

>>> s = AlertState()
>>> s, out = step(s, True, 1000)
>>> s.state, [t.state for t in out]
('firing', ['firing'])
>>> s, out = step(s, False, 2000)
>>> s.state, [(t.state, t.at) for t in out]
('ok', [('resolved', 2000)])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from driftline.events import notification_id

__all__ = ["AlertState", "Transition", "run", "step"]

Phase = Literal["ok", "pending", "firing"]


@dataclass(frozen=True)
class AlertState:
    """Where one alert stands.

    ``since`` is when the current phase began (the window end at which it was entered);
    ``notified`` is when the last firing notification (first or repeat) was sent.
    """

    state: Phase = "ok"
    since: int | None = None
    notified: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"state": self.state, "since": self.since, "notified": self.notified}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> AlertState:
        if not d:
            return cls()
        state = d.get("state", "ok")
        if state not in ("ok", "pending", "firing"):
            raise ValueError(f"alert state {state!r}: expected ok, pending or firing")
        return cls(state=state, since=d.get("since"), notified=d.get("notified"))


@dataclass(frozen=True)
class Transition:
    """One notification-worthy change: ``state`` is ``firing`` (first or repeat) or ``resolved``.

    ``start`` is the time the alert's current firing began; ``at`` the window end at which
    this transition happened (for a repeat, ``at > start``).
    """

    state: Literal["firing", "resolved"]
    at: int
    start: int
    value: float
    repeat: bool = False

    def id(self, pipeline: str, alert: str) -> str:
        return notification_id(pipeline, alert, self.at, self.state)


def step(
    s: AlertState,
    holds: bool,
    at: int,
    value: float = float("nan"),
    for_ms: int = 0,
    repeat_ms: int = 0,
) -> tuple[AlertState, list[Transition]]:
    """Advance one alert by one evaluation at window end ``at``.

    Parameters
    ----------
    holds:
        Whether the alert's condition holds on this window.
    for_ms:
        How long the condition must keep holding before the alert fires (0: at once).
    repeat_ms:
        While firing, send the notification again every ``repeat_ms`` (0: never).
    """
    if for_ms < 0:
        raise ValueError(f"for_ms={for_ms}: must be >= 0")
    if repeat_ms < 0:
        raise ValueError(f"repeat_ms={repeat_ms}: must be >= 0")
    if s.state == "firing":
        start = s.since if s.since is not None else at
        if not holds:
            return AlertState(), [Transition("resolved", at, start, value)]
        last = s.notified if s.notified is not None else start
        if repeat_ms and at - last >= repeat_ms:
            return AlertState("firing", start, at), [
                Transition("firing", at, start, value, repeat=True)
            ]
        return s, []
    if not holds:
        return AlertState(), []
    pending_since = s.since if s.state == "pending" and s.since is not None else at
    # A window that holds counts as the first instant of the condition; ``for`` is measured
    # between window ends, so ``for_ms`` equal to one interval fires on the second window.
    if at - pending_since >= for_ms:
        return AlertState("firing", at, at), [Transition("firing", at, at, value)]
    return AlertState("pending", pending_since, None), []


def run(
    s: AlertState,
    holds: Sequence[bool] | np.ndarray,
    ends: Sequence[int] | np.ndarray,
    values: Sequence[float] | np.ndarray,
    for_ms: int = 0,
    repeat_ms: int = 0,
) -> tuple[AlertState, list[Transition]]:
    """Apply :func:`step` over consecutive windows; returns the final state and all transitions.

    >>> s, out = run(AlertState(), [False, True, True, False], [1, 2, 3, 4], [0, 5, 6, 1], for_ms=1)
    >>> [(t.state, t.at, t.value) for t in out]
    [('firing', 3, 6.0), ('resolved', 4, 1.0)]
    """
    out: list[Transition] = []
    h = np.asarray(holds, dtype=bool)
    e = np.asarray(ends, dtype=np.int64)
    v = np.asarray(values, dtype=np.float64)
    if not (h.shape == e.shape == v.shape):
        raise ValueError(
            f"holds, ends and values must have the same length, got {h.size}, {e.size}, {v.size}"
        )
    # Fast path: runs of "ok and not holding" change nothing; only iterate where it matters.
    for i in range(h.size):
        if not h[i] and s.state == "ok":
            continue
        s, t = step(s, bool(h[i]), int(e[i]), float(v[i]), for_ms, repeat_ms)
        out.extend(t)
    return s, out
