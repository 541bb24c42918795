"""The monitor state protocol, and an in-memory implementation for tests and notebooks.

:class:`MonitorState` is what :class:`~driftline.streams._engine.PipelineEngine` calls on its
state; :class:`~driftline.streams.state.RedisState` implements it with Lua scripts (atomic,
shared by monitor processes), :class:`MemoryState` with dicts, following the same rules
(offset guard, max times, floor, first time, bucket cleanup, emitted marks, bottom-k
samples), so the engine's windows, scores and transitions are tested without Redis:

>>> import orjson
>>> from driftline.compile import AlertPlan
>>> from driftline.expressions import alert_condition, parse
>>> from driftline.streams._engine import PipelineEngine
>>> cond = alert_condition(parse("count(m.outputs[0][0] > 0.9, '1s', '1s') >= 1"))
>>> engine = PipelineEngine("p", "v", ["m"], [AlertPlan("hi", cond)], [], MemoryState("p"), 1, 0)
>>> rows = [orjson.dumps({"time": t, "outputs": {"m": [[x]]}})
...         for t, x in [(100, 0.95), (1100, 0.1), (2100, 0.1)]]
>>> [(n.state, n.at) for n in engine.test(rows).notifications]
[('firing', 1000), ('resolved', 2000)]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from driftline.streams.state import APPLIED, LOST, REFUSED, ApplyResult, BucketDelta, Guard

__all__ = ["MemoryState", "MonitorState"]


class MonitorState(Protocol):
    """What the engine needs from its state store (one pipeline's)."""

    def key(self, *parts: str | int) -> str: ...

    def bucket_key(self, interval_ms: int, start: int) -> str: ...

    def sample_key(self, field: str, interval_ms: int, start: int) -> str: ...

    def apply(
        self,
        guards: Iterable[Guard],
        buckets: Mapping[str, BucketDelta],
        min_time: int | None,
        ttl_s: int,
        cutoff: int | None = None,
    ) -> ApplyResult: ...

    def snapshot(self) -> ApplyResult: ...

    def read_matrix(
        self, interval_ms: int, lo: int, hi: int, fields: Sequence[str]
    ) -> tuple[NDArray[np.int64], NDArray[np.float64]]: ...

    def emitted(self) -> tuple[dict[str, int], dict[str, dict[str, Any]]]: ...

    def mark(
        self,
        marks: Iterable[tuple[str, int, dict[str, Any] | None]],
        floor: int | None = None,
    ) -> list[str]: ...

    def add_samples(
        self, samples: Mapping[str, Mapping[bytes, float]], keep: int, ttl_s: int
    ) -> None: ...

    def read_samples(self, keys: Sequence[str], keep: int) -> list[list[tuple[float, float]]]: ...

    def clear(self) -> int: ...


class MemoryState:
    """:class:`MonitorState` in process memory (no TTLs: nothing outlives the object)."""

    def __init__(self, pipeline: str, prefix: str = "mem"):
        self.pipeline = pipeline
        self.prefix = prefix
        self.clear()

    def clear(self) -> int:
        """Forget everything (like Redis losing its data); returns how many keys there were."""
        n = len(getattr(self, "buckets", {})) + len(getattr(self, "samples", {}))
        self.offsets: dict[str, int] = {}
        self.max_times: dict[int, int] = {}
        self.floor: int | None = None
        self.first: int | None = None
        self.buckets: dict[str, tuple[int, dict[str, float]]] = {}  # key -> (start, counters)
        self.marks: dict[str, int] = {}
        self.states: dict[str, dict[str, Any]] = {}
        self.samples: dict[str, dict[bytes, float]] = {}
        return n

    def key(self, *parts: str | int) -> str:
        """``<prefix>:{<pipeline>}:<parts>``, as Redis names them."""
        return f"{self.prefix}:{{{self.pipeline}}}:" + ":".join(str(p) for p in parts)

    def bucket_key(self, interval_ms: int, start: int) -> str:
        return self.key("b", interval_ms, start)

    def sample_key(self, field: str, interval_ms: int, start: int) -> str:
        return self.key(field, interval_ms, start)

    def _result(self, status: int) -> ApplyResult:
        return ApplyResult(status, dict(self.offsets), dict(self.max_times), self.floor, self.first)

    def apply(
        self,
        guards: Iterable[Guard],
        buckets: Mapping[str, BucketDelta],
        min_time: int | None,
        ttl_s: int,
        cutoff: int | None = None,
    ) -> ApplyResult:
        """The rules of ``apply_batch.lua``: guard, counters, max times, first, cleanup."""
        gs = list(guards)
        for g in gs:
            cur = self.offsets.get(g.field)
            if cur is not None:
                if cur < g.expected_prev:
                    return self._result(LOST)
                if cur >= g.first or cur > g.expected_prev:
                    return self._result(REFUSED)
            elif g.expected_prev >= 0:
                return self._result(LOST)
        for k, d in buckets.items():
            _, counters = self.buckets.setdefault(k, (d.start, {}))
            for f, v in d.ints.items():
                if v:
                    counters[f] = counters.get(f, 0) + int(v)
            for f, fv in d.floats.items():
                if fv:
                    counters[f] = counters.get(f, 0.0) + float(fv)
        for g in gs:
            self.offsets[g.field] = g.last
            if g.partition not in self.max_times or self.max_times[g.partition] < g.max_time:
                self.max_times[g.partition] = g.max_time
        if min_time is not None and (self.first is None or self.first > min_time):
            self.first = min_time
        if cutoff is not None:
            self.buckets = {k: b for k, b in self.buckets.items() if b[0] >= cutoff}
            self.samples = {
                k: v for k, v in self.samples.items() if int(k.rsplit(":", 1)[1]) >= cutoff
            }
        return self._result(APPLIED)

    def snapshot(self) -> ApplyResult:
        return self._result(APPLIED)

    def read_matrix(
        self, interval_ms: int, lo: int, hi: int, fields: Sequence[str]
    ) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
        if not fields:
            raise ValueError("fields: name at least one counter to read")
        prefix = f"{self.key('b', interval_ms)}:"
        rows = sorted(
            (start, counters)
            for k, (start, counters) in self.buckets.items()
            if k.startswith(prefix) and lo <= start < hi
        )
        starts = np.array([s for s, _ in rows], dtype=np.int64)
        mat = np.array([[c.get(f, 0) for f in fields] for _, c in rows], dtype=np.float64)
        return starts, mat.reshape(len(rows), len(fields))

    def emitted(self) -> tuple[dict[str, int], dict[str, dict[str, Any]]]:
        return dict(self.marks), {k: dict(v) for k, v in self.states.items()}

    def mark(
        self,
        marks: Iterable[tuple[str, int, dict[str, Any] | None]],
        floor: int | None = None,
    ) -> list[str]:
        """The rules of ``mark_closed.lua``: marks and the floor only move forward."""
        moved = []
        for name, end, state in marks:
            if name not in self.marks or self.marks[name] < end:
                self.marks[name] = end
                if state is not None:
                    self.states[name] = dict(state)
                moved.append(name)
        if floor is not None and (self.floor is None or self.floor < floor):
            self.floor = floor
        return moved

    def add_samples(
        self, samples: Mapping[str, Mapping[bytes, float]], keep: int, ttl_s: int
    ) -> None:
        for k, members in samples.items():
            held = self.samples.setdefault(k, {})
            held.update(members)
            if len(held) > keep:
                self.samples[k] = dict(sorted(held.items(), key=lambda kv: (kv[1], kv[0]))[:keep])

    def read_samples(self, keys: Sequence[str], keep: int) -> list[list[tuple[float, float]]]:
        from driftline.streams.samples import parse_member

        out = []
        for k in keys:
            held = sorted(self.samples.get(k, {}).items(), key=lambda kv: (kv[1], kv[0]))[:keep]
            out.append([(p, parse_member(m)) for m, p in held])
        return out
