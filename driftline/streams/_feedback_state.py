"""State of the performance join: in memory (tests, replay) and in Redis (live).

Both implement :class:`JoinState` with the same semantics: a change is applied whole or not
at all; it is refused when an offset of the batch is already applied (the offset guard of
the monitor's windows, DESIGN §6) and reported as a conflict when a record it rewrites
changed since it was read. Redis keys share the pipeline's hash tag, so one script call
(``feedback_apply.lua``) applies a micro-batch atomically.

Revision numbers are claimed, not derived from what was confirmed: :meth:`JoinState.claim`
binds ``(window end, revision)`` to one digest for good (``feedback_claim.lua``) and keeps the
claimed body until :meth:`JoinState.confirm` says it was published; every closer publishes
every body still unpublished. Bucket versions (changes applied per bucket, only growing) let
a claim refuse a window computed from buckets that changed since they were read.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Protocol

import numpy as np
import orjson
from numpy.typing import NDArray

__all__ = [
    "APPLIED",
    "CONFLICT",
    "FEEDBACK_PARTITION",
    "LOST",
    "REFUSED",
    "Change",
    "Claim",
    "JoinState",
    "Marks",
    "MemoryJoinState",
    "RedisJoinState",
    "decode_record",
    "encode_record",
    "record_key",
    "rounded",
    "stack_entries",
    "stack_weights",
]

APPLIED, REFUSED, CONFLICT, LOST = 1, 0, 2, -1
FEEDBACK_PARTITION = -1  # guards of feedback partitions carry no watermark


@dataclass
class Change:
    """Everything one micro-batch changes, applied at once by :meth:`JoinState.apply`."""

    guards: list[tuple[str, int, int, int, int, int]] = field(default_factory=list)
    records: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)
    buckets: dict[int, dict[int, float]] = field(default_factory=dict)
    pending_add: dict[str, int] = field(default_factory=dict)
    pending_remove: set[str] = field(default_factory=set)
    counters: dict[str, int] = field(default_factory=dict)


@dataclass
class Marks:
    """What confirms recorded: the last closed window end and the alerts' states."""

    closed: int | None
    alerts: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class Claim:
    """A window a closer computed: ``body`` (JSON) has ``digest``, from buckets in
    ``[lo, hi)`` whose versions summed to ``versions`` when read."""

    end: int
    digest: str
    body: str
    lo: int
    hi: int
    versions: int


class JoinState(Protocol):
    """Where a join keeps its records, bucket statistics, offsets and marks."""

    def offsets(self) -> dict[str, int]: ...
    def max_times(self) -> dict[int, int]: ...
    def read(self, keys: Sequence[str]) -> list[str | None]: ...
    def apply(self, change: Change) -> tuple[int, dict[str, int]]: ...
    def buckets(
        self, lo: int, hi: int, size: int
    ) -> tuple[NDArray[np.int64], NDArray[np.float64]]: ...
    def first_bucket(self) -> int | None: ...
    def dirty(self) -> dict[int, int]: ...
    def versions(self) -> dict[int, int]: ...
    def marks(self) -> Marks: ...
    def claim(self, windows: Sequence[Claim]) -> tuple[set[int], list[tuple[int, int, str]]]: ...
    def pending_before(self, cutoff: int) -> list[tuple[str, str]]: ...
    def confirm(self, doc: dict[str, Any]) -> None: ...
    def counters(self) -> dict[str, int]: ...


def _guard_check(
    applied: Mapping[str, int], guards: Sequence[tuple[str, int, int, int, int, int]]
) -> int:
    for fld, first, _last, _p, _t, prev in guards:
        cur = applied.get(fld)
        if cur is None:
            if prev >= 0:
                return LOST
        elif cur < prev:
            return LOST
        elif cur >= first or cur > prev:
            return REFUSED
    return APPLIED


class MemoryJoinState:
    """In-process state with the same semantics as :class:`RedisJoinState` (no expiry)."""

    def __init__(self) -> None:
        self._off: dict[str, int] = {}
        self._max: dict[int, int] = {}
        self._records: dict[str, str] = {}
        self._buckets: dict[int, dict[int, float]] = {}
        self._dirty: dict[int, int] = {}
        self._pending: dict[str, int] = {}
        self._closed: int | None = None
        self._revisions: dict[int, tuple[int, str]] = {}  # last claimed, per window end
        self._unpublished: dict[tuple[int, int], str] = {}
        self._versions: dict[int, int] = {}
        self._alerts: dict[str, dict[str, Any]] = {}
        self._counters: dict[str, int] = defaultdict(int)

    def offsets(self) -> dict[str, int]:
        return dict(self._off)

    def max_times(self) -> dict[int, int]:
        return dict(self._max)

    def read(self, keys: Sequence[str]) -> list[str | None]:
        return [self._records.get(k) for k in keys]

    def apply(self, change: Change) -> tuple[int, dict[str, int]]:
        status = _guard_check(self._off, change.guards)
        if status != APPLIED:
            return status, dict(self._off)
        if any(self._records.get(k) != old for k, (old, _) in change.records.items()):
            return CONFLICT, dict(self._off)
        for k, (_, new) in change.records.items():
            if new is None:
                self._records.pop(k, None)
            else:
                self._records[k] = new
        for start, inc in change.buckets.items():
            b = self._buckets.setdefault(start, {})
            for i, v in inc.items():
                b[i] = b.get(i, 0.0) + v
            self._dirty[start] = self._dirty.get(start, 0) + 1
            self._versions[start] = self._versions.get(start, 0) + 1
        self._pending.update(change.pending_add)
        for m in change.pending_remove:
            self._pending.pop(m, None)
        for name, n in change.counters.items():
            self._counters[name] += n
        for fld, _first, last, partition, max_time, _prev in change.guards:
            self._off[fld] = last
            if partition >= 0 and self._max.get(partition, -(2**62)) < max_time:
                self._max[partition] = max_time
        return APPLIED, dict(self._off)

    def buckets(self, lo: int, hi: int, size: int) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
        starts = sorted(s for s in self._buckets if lo <= s < hi)
        mat = np.zeros((len(starts), size))
        for r, s in enumerate(starts):
            for i, v in self._buckets[s].items():
                mat[r, i] = v
        return np.asarray(starts, dtype=np.int64), mat

    def first_bucket(self) -> int | None:
        return min(self._buckets) if self._buckets else None

    def dirty(self) -> dict[int, int]:
        return dict(self._dirty)

    def versions(self) -> dict[int, int]:
        return dict(self._versions)

    def marks(self) -> Marks:
        return Marks(self._closed, dict(self._alerts))

    def claim(self, windows: Sequence[Claim]) -> tuple[set[int], list[tuple[int, int, str]]]:
        """The rules of ``feedback_claim.lua``."""
        stale: set[int] = set()
        starts = np.array(sorted(self._versions), dtype=np.int64)
        cum = np.concatenate([[0], np.cumsum([self._versions[s] for s in starts.tolist()])])
        for w in windows:
            now = int(cum[np.searchsorted(starts, w.hi)] - cum[np.searchsorted(starts, w.lo)])
            if now != w.versions:
                stale.add(w.end)
                continue
            rev, digest = self._revisions.get(w.end, (-1, None))
            if digest != w.digest:
                self._revisions[w.end] = (rev + 1, w.digest)
                self._unpublished[(w.end, rev + 1)] = w.body
        return stale, [(e, r, b) for (e, r), b in sorted(self._unpublished.items())]

    def pending_before(self, cutoff: int) -> list[tuple[str, str]]:
        out = []
        for m, score in sorted(self._pending.items(), key=lambda kv: (kv[1], kv[0])):
            if score < cutoff:
                row, _, ident = m.partition(":")
                out.append((m, self._records.get(record_key(ident, int(row)), "")))
        return out

    def confirm(self, doc: dict[str, Any]) -> None:
        closed = doc.get("closed")
        if closed is not None and (self._closed is None or self._closed < int(closed)):
            self._closed = int(closed)
        for end, rev in doc["r"]:
            self._unpublished.pop((int(end), int(rev)), None)
        self._alerts.update(doc.get("alerts") or {})
        for start, n in doc["clean"]:
            left = self._dirty.get(int(start), 0) - int(n)
            if left > 0:
                self._dirty[int(start)] = left
            else:
                self._dirty.pop(int(start), None)
        cut = doc.get("cut")
        if cut is not None:
            for s in [s for s in self._buckets if s < int(cut)]:
                del self._buckets[s]
                self._dirty.pop(s, None)
                self._versions.pop(s, None)
            for e in [e for e in self._revisions if e < int(cut)]:
                del self._revisions[e]
        for m in doc["gone"]:
            if self._pending.pop(m, None) is not None:
                row, _, ident = m.partition(":")
                self._records.pop(record_key(ident, int(row)), None)
                self._counters["unmatched"] += 1

    def counters(self) -> dict[str, int]:
        return dict(self._counters)


def record_key(ident: str, row: int) -> str:
    return f"{ident}:{row}"


def _s(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


class RedisJoinState:
    """A join's state under ``<prefix>:{<pipeline>}:perf:<name>:<digest>:``.

    ``digest`` identifies what the records hold (the performance entry's canonical form), so
    a redeployed entry with another prediction never mixes with the previous one's state.
    ``horizon_ms`` bounds how long records, buckets and marks live (wall-clock expiry as a
    safety net; the join itself retires them by event time).
    """

    def __init__(
        self, client: Any, prefix: str, pipeline: str, name: str, digest: str, horizon_ms: int
    ):
        if not pipeline or "{" in pipeline or "}" in pipeline:
            raise ValueError(f"pipeline={pipeline!r}: must be non-empty and without braces")
        self.client = client
        self.base = f"{prefix}:{{{pipeline}}}:perf:{name}:{digest}"
        self.ttl_s = max(1, math.ceil(horizon_ms / 1000))
        self._record_prefix = self.key("k") + ":"
        self._apply = client.register_script(_script("feedback_apply.lua"))
        self._mark = client.register_script(_script("feedback_mark.lua"))
        self._claim = client.register_script(_script("feedback_claim.lua"))

    def key(self, *parts: str | int) -> str:
        return self.base + ":" + ":".join(str(p) for p in parts)

    def offsets(self) -> dict[str, int]:
        return {_s(k): int(v) for k, v in self.client.hgetall(self.key("off")).items()}

    def max_times(self) -> dict[int, int]:
        return {int(k): int(v) for k, v in self.client.hgetall(self.key("max")).items()}

    def read(self, keys: Sequence[str]) -> list[str | None]:
        if not keys:
            return []
        rk = self._record_prefix
        raw = self.client.mget([rk + k for k in keys])
        return [None if v is None else _s(v) for v in raw]

    def apply(self, change: Change) -> tuple[int, dict[str, int]]:
        keys = [
            self.key("off"),
            self.key("max"),
            self.key("idx"),
            self.key("cnt"),
            self.key("dirty"),
            self.key("pend"),
            self.key("ver"),
        ]
        records = []
        for k, (old, new) in change.records.items():
            keys.append(self._record_prefix + k)
            records.append([len(keys), old or "", new or ""])
        buckets = []
        for start, inc in change.buckets.items():
            keys.append(self.key("b", start))
            flat: list[str] = []
            for i, v in inc.items():
                if v:
                    flat += [str(i), repr(float(v))]
            buckets.append([len(keys), str(start), flat])
        doc = {
            "g": [
                [f, str(a), str(b), str(p), str(t), str(prev)]
                for f, a, b, p, t, prev in change.guards
            ],
            "r": records,
            "b": buckets,
            "pa": [[m, str(s)] for m, s in change.pending_add.items()],
            "pr": sorted(change.pending_remove),
            "c": [[k, v] for k, v in change.counters.items() if v],
            "ttl_r": self.ttl_s,
            "ttl_b": self.ttl_s * 2,
        }
        status, flat_off = self._apply(keys=keys, args=[orjson.dumps(doc)])
        offs = {_s(flat_off[i]): int(flat_off[i + 1]) for i in range(0, len(flat_off), 2)}
        return int(status), offs

    def buckets(self, lo: int, hi: int, size: int) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
        members = self.client.zrangebyscore(self.key("idx"), lo, f"({hi}", withscores=True)
        if not members:
            return np.zeros(0, dtype=np.int64), np.zeros((0, size))
        pipe = self.client.pipeline(transaction=False)
        for m, _ in members:
            pipe.hgetall(m)
        rows = pipe.execute()
        mat = np.zeros((len(members), size))
        for r, h in enumerate(rows):
            for f, v in h.items():
                mat[r, int(f)] = float(v)
        return np.array([int(s) for _, s in members], dtype=np.int64), mat

    def first_bucket(self) -> int | None:
        first = self.client.zrange(self.key("idx"), 0, 0, withscores=True)
        return int(first[0][1]) if first else None

    def dirty(self) -> dict[int, int]:
        raw = self.client.hgetall(self.key("dirty"))
        return {int(_s(k)): int(v) for k, v in raw.items()}

    def versions(self) -> dict[int, int]:
        raw = self.client.hgetall(self.key("ver"))
        return {int(_s(k)): int(v) for k, v in raw.items()}

    def marks(self) -> Marks:
        raw = {_s(k): _s(v) for k, v in self.client.hgetall(self.key("marks")).items()}
        alerts = {k[2:]: orjson.loads(v) for k, v in raw.items() if k.startswith("a:")}
        closed = raw.get("closed")
        return Marks(None if closed is None else int(closed), alerts)

    def claim(self, windows: Sequence[Claim]) -> tuple[set[int], list[tuple[int, int, str]]]:
        """Claim revisions (``feedback_claim.lua``): ``(stale ends, every unpublished
        (end, revision, body))``."""
        doc = {
            "w": [
                [str(w.end), w.digest, w.body, str(w.lo), str(w.hi), str(w.versions)]
                for w in windows
            ]
        }
        stale, flat = self._claim(
            keys=[self.key("marks"), self.key("unpub"), self.key("ver")], args=[orjson.dumps(doc)]
        )
        out = []
        for i in range(0, len(flat), 2):
            end, _, rev = _s(flat[i]).partition(":")
            out.append((int(end), int(rev), _s(flat[i + 1])))
        return {int(_s(e)) for e in stale}, sorted(out)

    def pending_before(self, cutoff: int) -> list[tuple[str, str]]:
        members = [_s(m) for m in self.client.zrangebyscore(self.key("pend"), "-inf", f"({cutoff}")]
        keys = []
        for m in members:
            row, _, ident = m.partition(":")
            keys.append(record_key(ident, int(row)))
        records = self.read(keys)
        return [(m, r or "") for m, r in zip(members, records, strict=True)]

    def confirm(self, doc: dict[str, Any]) -> None:
        keys = [
            self.key("marks"),
            self.key("dirty"),
            self.key("idx"),
            self.key("pend"),
            self.key("cnt"),
            self.key("unpub"),
            self.key("ver"),
        ]
        body = {
            "closed": None if doc.get("closed") is None else str(doc["closed"]),
            "r": [[str(e), str(r)] for e, r in doc["r"]],
            "clean": [[str(s), int(n)] for s, n in doc["clean"]],
            "cut": None if doc.get("cut") is None else str(doc["cut"]),
            "gone": list(doc["gone"]),
            "alerts": [[k, orjson.dumps(v).decode()] for k, v in (doc.get("alerts") or {}).items()],
            "keyprefix": self._record_prefix,
        }
        # cjson turns JSON null into a truthy userdata: leave absent fields out instead
        self._mark(keys=keys, args=[orjson.dumps({k: v for k, v in body.items() if v is not None})])

    def counters(self) -> dict[str, int]:
        return {_s(k): int(v) for k, v in self.client.hgetall(self.key("cnt")).items()}

    def clear(self) -> int:
        """Delete every key of this join (scratch state of a replay or a test)."""
        keys = list(self.client.scan_iter(match=self.base + ":*", count=1000))
        for i in range(0, len(keys), 500):
            self.client.delete(*keys[i : i + 500])
        return len(keys)


def _script(name: str) -> str:
    return resources.files("driftline.streams").joinpath(name).read_text(encoding="utf-8")


# -- helpers of the join: records, rounding, sparse entries --------------------------------


def decode_record(raw: str | None) -> list[Any]:
    """``[prediction time, prediction, label, label time]``; ``None`` where absent."""
    if not raw:
        return [None, None, None, None]
    rec = orjson.loads(raw)
    return list(rec)


def encode_record(rec: list[Any]) -> str:
    return orjson.dumps(rec).decode()


def rounded(x: Any) -> Any:
    """Metrics with floats cut to 12 significant digits, so float noise is no revision."""
    if isinstance(x, float):
        return None if math.isnan(x) else float(f"{x:.12g}")
    if isinstance(x, dict):
        return {k: rounded(v) for k, v in x.items()}
    return x


def stack_entries(idxs: list[NDArray[np.int64]]) -> NDArray[np.int64]:
    width = max(i.shape[1] for i in idxs)
    out = [np.pad(i, ((0, 0), (0, width - i.shape[1]))) for i in idxs]
    return np.concatenate(out)


def stack_weights(ws: list[NDArray[np.float64]]) -> NDArray[np.float64]:
    # padded entries get weight 0, so their (index 0) position adds nothing
    width = max(w.shape[1] for w in ws)
    return np.concatenate([np.pad(w, ((0, 0), (0, width - w.shape[1]))) for w in ws])
