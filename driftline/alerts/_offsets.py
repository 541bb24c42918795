"""Which offsets may be committed: a partition advances only past fully handled messages."""

from __future__ import annotations

__all__ = ["OffsetTracker"]


class OffsetTracker:
    """Track messages with outstanding work per (topic, partition).

    ``add`` registers a message with the number of jobs it needs; ``done`` retires one job of
    it. ``committable()`` gives, per partition, the offset to commit: one past the last message
    of the longest prefix whose jobs are all done. Messages must be added in offset order.
    """

    def __init__(self) -> None:
        self._pending: dict[tuple[str, int], dict[int, int]] = {}
        self._high: dict[tuple[str, int], int] = {}
        self._committed: dict[tuple[str, int], int] = {}

    def add(self, topic: str, partition: int, offset: int, jobs: int) -> None:
        tp = (topic, partition)
        pending = self._pending.setdefault(tp, {})
        # Committing the first offset seen would change nothing: only report progress past it.
        self._committed.setdefault(tp, offset)
        if jobs > 0:
            pending[offset] = jobs
        self._high[tp] = max(self._high.get(tp, -1), offset)

    def done(self, topic: str, partition: int, offset: int) -> None:
        pending = self._pending.get((topic, partition))
        if pending is None or offset not in pending:
            return  # the partition was revoked meanwhile; its new owner redelivers
        pending[offset] -= 1
        if pending[offset] <= 0:
            del pending[offset]

    def drop(self, topic: str, partition: int) -> None:
        """Forget a revoked partition."""
        tp = (topic, partition)
        self._pending.pop(tp, None)
        self._high.pop(tp, None)
        self._committed.pop(tp, None)

    def outstanding(self) -> int:
        """Number of messages that still have jobs."""
        return sum(len(p) for p in self._pending.values())

    def committable(self) -> dict[tuple[str, int], int]:
        """Commit positions that advanced past the last confirmed commit, per partition.

        >>> t = OffsetTracker()
        >>> t.add("n", 0, 5, 2); t.add("n", 0, 6, 1); t.add("n", 0, 7, 0)
        >>> t.committable()
        {}
        >>> t.done("n", 0, 6); t.done("n", 0, 5); t.committable()
        {}
        >>> t.done("n", 0, 5); t.committable()
        {('n', 0): 8}
        >>> t.mark_committed({("n", 0): 8}); t.committable()
        {}
        """
        out: dict[tuple[str, int], int] = {}
        for tp, high in self._high.items():
            pending = self._pending.get(tp, {})
            position = min(pending) if pending else high + 1
            if position > self._committed.get(tp, -1):
                out[tp] = position
        return out

    def mark_committed(self, positions: dict[tuple[str, int], int]) -> None:
        """Record positions Kafka accepted, so they are not offered again."""
        for tp, position in positions.items():
            if tp in self._high:
                self._committed[tp] = max(self._committed.get(tp, -1), position)
