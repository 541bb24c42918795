"""Per-target rate limit that holds across tasks, processes and restarts (state in Redis).

Each target has a "not before" time in Redis. Taking a slot sets it to ``now + lease`` (the
longest an attempt may take); finishing the attempt sets it to ``finish + 1/rate``. So the
next attempt starts a full interval after the previous one *ended*, which bounds the rate a
receiver sees even when requests take varying time, and a bridge killed mid-request leaves
its lease behind for its successor to respect. Times come from Redis (``TIME``) so that
several bridges on different hosts share one clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from driftline.notify import Target

__all__ = ["RateLimiter"]

_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local nb = tonumber(redis.call('GET', KEYS[1]) or '0')
if now < nb then return nb - now end
redis.call('SET', KEYS[1], now + tonumber(ARGV[1]), 'PX', ARGV[2])
return 0
"""

_RELEASE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('SET', KEYS[1], now + tonumber(ARGV[1]), 'PX', ARGV[2])
return now
"""


class RateLimiter:
    """At most ``rates[kind]`` attempts per second per target, one attempt in flight per target.

    Parameters
    ----------
    redis:
        A ``redis.asyncio.Redis`` client.
    key_prefix:
        Prefix of the keys (``<prefix>:{notify}:rate:<target>``).
    rates:
        Messages per second per target, by channel kind; kinds not listed are not limited.
    lease_s:
        Upper bound of one attempt's duration (the request timeout plus a margin).
    """

    def __init__(
        self, redis: Any, key_prefix: str, rates: Mapping[str, float], lease_s: float
    ) -> None:
        for kind, rate in rates.items():
            if not rate > 0:
                raise ValueError(f"rates[{kind!r}]={rate!r}: use a positive rate")
        if not lease_s > 0:
            raise ValueError(f"lease_s={lease_s!r}: use a positive duration")
        self._redis = redis
        self._prefix = key_prefix
        self._rates = dict(rates)
        self._lease_ms = int(lease_s * 1000)
        self._locks: dict[Target, asyncio.Lock] = {}
        self._acquire = redis.register_script(_ACQUIRE)
        self._release = redis.register_script(_RELEASE)

    async def probe(self, key: str) -> None:
        """Run both scripts once on ``key`` (which expires in a second): checks permissions."""
        await self._acquire(keys=[key], args=[1, 1000])
        await self._release(keys=[key], args=[1, 1000])

    def interval_ms(self, target: Target) -> int | None:
        rate = self._rates.get(target.kind)
        return None if rate is None else max(1, round(1000.0 / rate))

    def key(self, target: Target) -> str:
        return f"{self._prefix}:{{notify}}:rate:{target}"

    def lock(self, target: Target) -> asyncio.Lock:
        """The in-process lock that serializes a target's deliveries (FIFO)."""
        lock = self._locks.get(target)
        if lock is None:
            lock = self._locks[target] = asyncio.Lock()
        return lock

    @asynccontextmanager
    async def slot(self, target: Target) -> AsyncIterator[None]:
        """Wait for the target's next slot, hold it during one attempt, then space the next."""
        interval = self.interval_ms(target)
        if interval is None:
            yield
            return
        key = self.key(target)
        ttl = self._lease_ms + interval + 60_000
        while True:
            wait_ms = int(await self._acquire(keys=[key], args=[self._lease_ms, ttl]))
            if wait_ms <= 0:
                break
            await asyncio.sleep(wait_ms / 1000.0)
        try:
            yield
        finally:
            # Shielded: a cancelled attempt must still space the next one.
            await asyncio.shield(self._release(keys=[key], args=[interval, ttl]))
