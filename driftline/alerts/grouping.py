"""Group a burst of notifications for the same alert and target into one delivery."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from driftline.events import Notification
from driftline.notify import Target

__all__ = ["Delivery", "Job", "group_jobs"]


@dataclass(frozen=True)
class Job:
    """One (notification, target) pair to deliver; ``ref`` identifies the Kafka message."""

    notification: Notification
    target: Target
    ref: int


@dataclass(frozen=True)
class Delivery:
    """One message to one target: the distinct notifications of a burst, oldest first."""

    target: Target
    notifications: tuple[Notification, ...]
    jobs: tuple[Job, ...]


def group_jobs(jobs: Iterable[Job], interval_ms: int) -> list[Delivery]:
    """Group jobs of the same alert (``pipeline/alert``) and target within ``interval_ms``.

    A group starts at its oldest notification (by ``at``) and takes every later one of the
    same alert and target up to ``interval_ms`` after it. ``interval_ms = 0`` disables
    grouping. The same notification id seen twice (a redelivery) is sent once.

    >>> from driftline.events import Notification
    >>> def n(i, at):
    ...     return Notification(f"n-{i}", "a", "p", "firing", 1.0, "", {}, at, "w", [], "")
    >>> t = Target("slack", "c")
    >>> ds = group_jobs([Job(n(1, 0), t, 0), Job(n(2, 500), t, 1), Job(n(3, 5000), t, 2)], 1000)
    >>> [[x.id for x in d.notifications] for d in ds]
    [['n-1', 'n-2'], ['n-3']]
    """
    if interval_ms < 0:
        raise ValueError(f"interval_ms={interval_ms}: use 0 (no grouping) or more")
    by_key: dict[tuple[str, Target], list[Job]] = {}
    for job in jobs:
        by_key.setdefault((job.notification.key, job.target), []).append(job)
    out: list[Delivery] = []
    for (_key, target), members in by_key.items():
        members.sort(key=lambda j: (j.notification.at, j.notification.id))
        current: list[Job] = []
        for job in members:
            if current and (
                interval_ms == 0 or job.notification.at - current[0].notification.at > interval_ms
            ):
                out.append(_delivery(target, current))
                current = []
            current.append(job)
        if current:
            out.append(_delivery(target, current))
    return out


def _delivery(target: Target, jobs: list[Job]) -> Delivery:
    seen: dict[str, Notification] = {}
    for j in jobs:
        seen.setdefault(j.notification.id, j.notification)
    return Delivery(target, tuple(seen.values()), tuple(jobs))
