"""A notification consumed again while its delivery is in flight is not sent twice.

This happens when a rebalance hands a partition back to the same bridge before the delivery
finished (its offset is not committed, and its Redis mark not yet written).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import pytest
import redis.asyncio as aioredis

from driftline.alerts.bridge import Bridge
from driftline.alerts.ratelimit import RateLimiter
from driftline.config import BridgeSettings, KafkaSettings, RedisSettings
from driftline.events import Notification, encode, notification_id
from driftline.notify import Target

pytestmark = pytest.mark.integration


@dataclass
class _Msg:
    """Just what the bridge reads of a consumed Kafka message."""

    _value: bytes
    _offset: int

    def topic(self) -> str:
        return "notifications"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes:
        return b"fraud/a"

    def value(self) -> bytes:
        return self._value


class _SlowSender:
    def __init__(self, fail_first: bool) -> None:
        self.calls = 0
        self.fail_first = fail_first
        self.release = asyncio.Event()

    def knows(self, target: Target) -> bool:
        return True

    async def send(self, target: Target, notifications: Sequence[Notification]) -> None:
        self.calls += 1
        await self.release.wait()
        if self.fail_first and self.calls == 1:
            from driftline.alerts.channels import DeliveryError

            raise DeliveryError("http-500", "receiver failed", permanent=True)


async def _scenario(prefix: str, fail_first: bool) -> tuple[int, int]:
    settings = BridgeSettings(
        bridge_group_ms=0, bridge_max_attempts=1, bridge_allowed_targets=("stdout",)
    )
    redis_settings = RedisSettings(key_prefix=prefix)
    sender = _SlowSender(fail_first)
    bridge = Bridge(settings, KafkaSettings(), redis_settings, ("stdout",), {"stdout": sender})
    client = aioredis.Redis.from_url(redis_settings.redis_url.get_secret_value())
    bridge._redis = client
    bridge._senders = {"stdout": sender}
    bridge._limiter = RateLimiter(client, prefix, {"stdout": 1000.0}, 5.0)
    dead: list[str] = []

    async def deadletter(ref: int, target: str, *args: object) -> None:
        dead.append(target)
        bridge._job_done(ref)

    bridge._deadletter_one = deadletter  # type: ignore[method-assign]
    note = Notification(
        id=notification_id("fraud", "a", 1, "firing"), alert="a", pipeline="fraud",
        state="firing", value=1.0, condition="count(x) > 1", window={"start": 0, "end": 1},
        at=1, severity="critical", notify=["stdout"], spec="sha256:0",
    )  # fmt: skip
    try:
        await bridge._dispatch([_Msg(encode(note), 5)])
        await asyncio.sleep(0.05)
        # The same message again (its partition came back), while the first send hangs.
        bridge._tracker.drop("notifications", 0)
        await bridge._dispatch([_Msg(encode(note), 5)])
        await asyncio.sleep(0.05)
        assert sender.calls == 1  # the second copy waits instead of racing
        sender.release.set()
        await asyncio.wait_for(asyncio.gather(*bridge._tasks), 10)
        while bridge._tasks:
            await asyncio.wait_for(asyncio.gather(*bridge._tasks), 10)
    finally:
        keys = [k async for k in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
    return sender.calls, len(dead)


def test_a_copy_consumed_during_delivery_is_not_sent_again(redis_prefix: str) -> None:
    calls, dead = asyncio.run(_scenario(redis_prefix, fail_first=False))
    assert (calls, dead) == (1, 0)


def test_a_copy_is_sent_when_the_delivery_in_flight_failed(redis_prefix: str) -> None:
    calls, dead = asyncio.run(_scenario(redis_prefix, fail_first=True))
    # The first attempt was dead-lettered; the copy is then delivered: at least once.
    assert (calls, dead) == (2, 1)
