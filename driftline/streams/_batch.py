"""What the engine takes in and gives out: a batch of raw records, its reports and errors."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from driftline.errors import DriftlineError
from driftline.events import AssayResult, Notification

__all__ = ["AssayFailed", "Batch", "ClosedWindows", "IngestReport", "Record", "StateLost"]

#: A consumed record: ``(partition, offset, value)``, with its Kafka timestamp when known.
Record = tuple[int, int, bytes] | tuple[int, int, bytes, int]


def _ascending_per_partition(partitions: np.ndarray, offsets: np.ndarray) -> bool:
    for p in np.unique(partitions):
        o = offsets[partitions == p]
        if not np.all(o[1:] > o[:-1]):
            return False
    return True


@dataclass
class Batch:
    """Raw records of one results topic in consumption order (offsets ascending per partition)."""

    topic: str
    partitions: np.ndarray
    offsets: np.ndarray
    values: list[bytes]

    @classmethod
    def of(cls, topic: str, records: Iterable[Record]) -> Batch:
        """A batch of ``(partition, offset, value)`` records, offsets made ascending per
        partition (a stable sort, only when they are not already)."""
        rows = records if isinstance(records, list) else list(records)
        n = len(rows)
        partitions = np.fromiter((r[0] for r in rows), dtype=np.int64, count=n)
        offsets = np.fromiter((r[1] for r in rows), dtype=np.int64, count=n)
        values = [r[2] for r in rows]
        if n > 1 and not _ascending_per_partition(partitions, offsets):
            order = np.lexsort((offsets, partitions))
            partitions, offsets = partitions[order], offsets[order]
            values = [values[i] for i in order.tolist()]
        return cls(topic, partitions, offsets, values)

    def first_offsets(self) -> dict[int, int]:
        """The smallest offset of each partition in the batch."""
        out: dict[int, int] = {}
        for p in np.unique(self.partitions).tolist():
            out[p] = int(self.offsets[self.partitions == p].min())
        return out

    def __len__(self) -> int:
        return len(self.values)

    def select(self, keep: np.ndarray) -> Batch:
        idx = np.flatnonzero(keep)
        return Batch(
            self.topic, self.partitions[idx], self.offsets[idx], [self.values[i] for i in idx]
        )


@dataclass
class IngestReport:
    applied: int = 0
    accepted: int = 0
    late: list[tuple[int, int, bytes]] = field(default_factory=list)
    dead: list[tuple[int, int, bytes, str]] = field(default_factory=list)
    skipped: int = 0


@dataclass
class ClosedWindows:
    """What closing windows produced; emit it, then :meth:`PipelineEngine.commit` it."""

    assays: list[AssayResult] = field(default_factory=list)
    notifications: list[Notification] = field(default_factory=list)
    marks: list[tuple[str, int, dict[str, Any] | None]] = field(default_factory=list)
    floor: int | None = None
    watermark: int | None = None

    def __bool__(self) -> bool:
        return bool(self.marks or self.floor is not None)


class StateLost(Exception):
    """Redis no longer holds offsets this engine applied: rebuild the open windows."""

    def __init__(self, partitions: Sequence[int]):
        self.partitions = list(partitions)
        super().__init__(f"monitor state lost for partitions {self.partitions}")


class AssayFailed(DriftlineError):
    """Computing one assay's window raised: the pipeline is at fault, not the monitor.

    ``assay`` names the assay and ``cause`` is the original exception.
    """

    def __init__(self, assay: str, cause: BaseException):
        self.assay = assay
        self.cause = cause
        super().__init__(f"assay {assay!r}: {type(cause).__name__}: {cause}")
