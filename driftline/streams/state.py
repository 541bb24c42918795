"""Monitor state in Redis: per-bucket counts, offset guard, watermarks, emitted-window marks.

All keys of one pipeline share the hash tag ``{<pipeline>}`` (``dl:{fraud}:...``), so they
live in one Redis Cluster slot and one Lua script can update them together:

* ``off``   hash ``<topic>:<partition>`` → last applied offset (the guard)
* ``max``   hash ``<partition>`` → largest event time seen (per-partition watermark source)
* ``meta``  hash ``floor`` (idle watermark floor), ``first`` (oldest accepted event time)
* ``idx``   sorted set of bucket keys scored by bucket start (for reading and cleanup)
* ``b:<interval>:<start>`` hash of counters: ``c:<alert>@<digest>``, ``s:...``, ``k:...``,
  ``h:<digest>:<fine bin>`` (the digest changes with what is counted, so a redeployed
  spec never mixes its counts with the previous version's; an assay's histogram digest covers
  its expression, interval and fine bin edges, so assays of one feature share their counts)
* ``emitted`` hash ``<aggregate>`` → last emitted window end, ``s:<alert>`` → alert state
* ``baseline:<assay>:<spec version>`` cached baseline computed from history
* ``r:<digest>:<interval>:<start>`` sorted set: a bucket's bottom-k sample of raw values
  for metrics that need them (MMD), scored by a hash of each event's ``(id, row)``

A micro-batch is applied with a single script call (``apply_batch.lua``) that refuses any
batch holding an already-applied offset, so redelivery after a crash or rebalance changes
nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import numpy as np
import orjson
import redis
from numpy.typing import NDArray

__all__ = [
    "APPLIED",
    "LOST",
    "REFUSED",
    "ApplyResult",
    "BucketDelta",
    "Guard",
    "RedisState",
    "split_field",
]

APPLIED = 1
REFUSED = 0
LOST = -1


def _script(name: str) -> str:
    return resources.files("driftline.streams").joinpath(name).read_text(encoding="utf-8")


@dataclass(frozen=True)
class Guard:
    """Offsets of one (topic, partition) in a batch, with its largest event time.

    ``expected_prev`` is the last offset the caller knows to be applied (-1: none). The script
    refuses the batch when Redis has applied further (the caller's view of offsets, max times
    and floor is stale: it retries with the ones returned) and reports the state lost when
    Redis holds less.
    """

    topic: str
    partition: int
    first: int
    last: int
    max_time: int
    expected_prev: int = -1

    @property
    def field(self) -> str:
        return f"{self.topic}:{self.partition}"


def split_field(field: str) -> tuple[str, int]:
    """``(topic, partition)`` of an offset-guard field (topic names hold no colon).

    >>> split_field("dl.fraud.results:2")
    ('dl.fraud.results', 2)
    """
    topic, _, partition = field.rpartition(":")
    return topic, int(partition)


@dataclass
class BucketDelta:
    """Counter increments of one bucket hash."""

    start: int
    ints: dict[str, int] = field(default_factory=dict)
    floats: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ApplyResult:
    status: int
    offsets: dict[str, int]
    max_times: dict[int, int]
    floor: int | None
    first: int | None


def _pairs(flat: list[Any]) -> dict[str, str]:
    return {_s(flat[i]): _s(flat[i + 1]) for i in range(0, len(flat), 2)}


def _s(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def _opt_int(x: Any) -> int | None:
    return None if x is None else int(_s(x))


class RedisState:
    """One pipeline's monitor state under ``<prefix>:{<pipeline>}:``.

    Parameters
    ----------
    client:
        A ``redis.Redis`` client (``decode_responses=False``).
    prefix:
        Key prefix, ``RedisSettings.key_prefix`` (``dl``).
    pipeline:
        Pipeline name; becomes the hash tag.
    """

    def __init__(self, client: redis.Redis, prefix: str, pipeline: str):
        if not pipeline or "{" in pipeline or "}" in pipeline:
            raise ValueError(f"pipeline={pipeline!r}: must be non-empty and without braces")
        self.client = client
        self.prefix = prefix
        self.pipeline = pipeline
        self._apply = client.register_script(_script("apply_batch.lua"))
        self._mark = client.register_script(_script("mark_closed.lua"))
        self._read = client.register_script(_script("read_matrix.lua"))

    def key(self, *parts: str | int) -> str:
        """``<prefix>:{<pipeline>}:<parts>``.

        >>> RedisState(redis.Redis(), "dl", "fraud").key("b", 1000, 0)
        'dl:{fraud}:b:1000:0'
        """
        return f"{self.prefix}:{{{self.pipeline}}}:" + ":".join(str(p) for p in parts)

    def bucket_key(self, interval_ms: int, start: int) -> str:
        return self.key("b", interval_ms, start)

    def apply(
        self,
        guards: Iterable[Guard],
        buckets: Mapping[str, BucketDelta],
        min_time: int | None,
        ttl_s: int,
        cutoff: int | None = None,
    ) -> ApplyResult:
        """Apply one batch (one script call); see ``apply_batch.lua`` for the status codes."""
        keys = [self.key("off"), self.key("max"), self.key("idx"), self.key("meta")]
        inc: list[Any] = []
        for k, d in buckets.items():
            keys.append(k)
            ints: list[Any] = []
            for f, v in d.ints.items():
                if v:
                    ints += [f, str(int(v))]
            floats: list[Any] = []
            for f, fv in d.floats.items():
                if fv:
                    floats += [f, repr(float(fv))]
            inc.append([str(d.start), ints, floats])
        doc: dict[str, Any] = {
            "g": [
                [
                    g.field,
                    str(g.first),
                    str(g.last),
                    str(g.partition),
                    str(g.max_time),
                    str(g.expected_prev),
                ]
                for g in guards
            ],
            "inc": inc,
            "ttl": int(ttl_s),
        }
        if min_time is not None:
            doc["min"] = str(min_time)
        if cutoff is not None:
            doc["cut"] = str(cutoff)
        # cjson decodes an empty JSON array as an empty table, which is what the loops expect.
        raw = self._apply(keys=keys, args=[orjson.dumps(doc)])
        return ApplyResult(
            status=int(raw[0]),
            offsets={k: int(v) for k, v in _pairs(raw[1]).items()},
            max_times={int(k): int(v) for k, v in _pairs(raw[2]).items()},
            floor=_opt_int(raw[3]),
            first=_opt_int(raw[4]),
        )

    def snapshot(self) -> ApplyResult:
        """Offsets, per-partition max times, floor and first time, read without changing them."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(self.key("off"))
        pipe.hgetall(self.key("max"))
        pipe.hget(self.key("meta"), "floor")
        pipe.hget(self.key("meta"), "first")
        off, mx, floor, first = pipe.execute()
        return ApplyResult(
            status=APPLIED,
            offsets={_s(k): int(v) for k, v in off.items()},
            max_times={int(k): int(v) for k, v in mx.items()},
            floor=_opt_int(floor),
            first=_opt_int(first),
        )

    def read_buckets(self, interval_ms: int, lo: int, hi: int) -> list[tuple[int, dict[str, str]]]:
        """Buckets of ``interval_ms`` with start in ``[lo, hi)``: ``[(start, {field: value})]``."""
        members: Any = self.client.zrangebyscore(self.key("idx"), lo, f"({hi}", withscores=True)
        wanted = f"{self.key('b', interval_ms)}:"
        keys = [(_s(m), int(score)) for m, score in members if _s(m).startswith(wanted)]
        if not keys:
            return []
        pipe = self.client.pipeline(transaction=False)
        for k, _ in keys:
            pipe.hgetall(k)
        out = []
        rows: list[Any] = pipe.execute()
        for (_, start), h in zip(keys, rows, strict=True):
            out.append((start, {_s(f): _s(v) for f, v in h.items()}))
        return out

    def read_matrix(
        self, interval_ms: int, lo: int, hi: int, fields: Sequence[str]
    ) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
        """Chosen counters of the buckets of ``interval_ms`` with start in ``[lo, hi)``.

        One script call however many buckets the range holds (a sliding window of 1-second
        buckets over 5 minutes reads 300): ``(starts, matrix)`` with one row per bucket in
        start order and one column per field, 0 where a bucket lacks the counter.
        """
        if not fields:
            raise ValueError("fields: name at least one counter to read")
        raw: Any = self._read(
            keys=[self.key("idx")], args=[f"{self.key('b', interval_ms)}:", lo, hi, *fields]
        )
        keys, values = raw
        starts = np.array([int(k.rsplit(b":", 1)[1]) for k in keys], dtype=np.int64)
        if not keys:
            return starts, np.zeros((0, len(fields)), dtype=np.float64)
        mat = np.array(values).astype(np.float64).reshape(len(keys), len(fields))
        return starts, mat

    def emitted(self) -> tuple[dict[str, int], dict[str, dict[str, Any]]]:
        """Last emitted window end per aggregate, and stored alert states."""
        raw = {_s(k): _s(v) for k, v in self.client.hgetall(self.key("emitted")).items()}
        ends = {k: int(v) for k, v in raw.items() if not k.startswith("s:")}
        states = {k[2:]: orjson.loads(v) for k, v in raw.items() if k.startswith("s:")}
        return ends, states

    def mark(
        self,
        marks: Iterable[tuple[str, int, dict[str, Any] | None]],
        floor: int | None = None,
    ) -> list[str]:
        """Move emitted-window marks forward (never back); returns the names that moved."""
        m: list[list[Any]] = []
        for name, end, state in marks:
            item: list[Any] = [name, str(end)]
            if state is not None:
                item.append(orjson.dumps(state).decode())
            m.append(item)
        doc: dict[str, Any] = {"m": m}
        if floor is not None:
            doc["floor"] = str(floor)
        if not m and floor is None:
            return []
        moved = self._mark(keys=[self.key("emitted"), self.key("meta")], args=[orjson.dumps(doc)])
        return [_s(x) for x in moved]

    def sample_key(self, field: str, interval_ms: int, start: int) -> str:
        """Sorted set of one bucket's sampled values (see :mod:`driftline.streams.samples`)."""
        return self.key(field, interval_ms, start)

    def add_samples(
        self, samples: Mapping[str, Mapping[bytes, float]], keep: int, ttl_s: int
    ) -> None:
        """Add ``{key: {member: priority}}`` and keep the ``keep`` smallest per key.

        Idempotent (a member added twice is one member), so it runs before the batch's
        guarded script: a crash in between adds the same members again on redelivery.
        """
        if not samples:
            return
        pipe = self.client.pipeline(transaction=False)
        for k, members in samples.items():
            pipe.zadd(k, dict(members))
            pipe.zremrangebyrank(k, keep, -1)
            pipe.expire(k, ttl_s)
            # indexed by bucket start like the counters, so the batch script's cleanup
            # deletes a sample once no open window needs it (not only after the TTL)
            pipe.zadd(self.key("idx"), {k: int(k.rsplit(":", 1)[1])})
        pipe.execute()

    def read_samples(self, keys: Sequence[str], keep: int) -> list[list[tuple[float, float]]]:
        """``[(priority, value), ...]`` of each key's ``keep`` smallest members."""
        from driftline.streams.samples import parse_member

        if not keys:
            return []
        pipe = self.client.pipeline(transaction=False)
        for k in keys:
            pipe.zrange(k, 0, keep - 1, withscores=True)
        rows: list[Any] = pipe.execute()
        return [[(float(score), parse_member(m)) for m, score in row] for row in rows]

    def get(self, *parts: str) -> bytes | None:
        value: Any = self.client.get(self.key(*parts))
        return None if value is None else bytes(value)

    def set(self, value: bytes, *parts: str, ttl_s: int | None = None) -> None:
        self.client.set(self.key(*parts), value, ex=ttl_s)

    def clear(self) -> int:
        """Delete every key of this pipeline under the prefix (used by replay's scratch state)."""
        pattern = f"{self.prefix}:{{{self.pipeline}}}:*"
        keys = list(self.client.scan_iter(match=pattern, count=1000))
        for i in range(0, len(keys), 500):
            self.client.delete(*keys[i : i + 500])
        return len(keys)
