"""The monitor's Redis permissions: the commands it needs, checked once at start."""

from __future__ import annotations

import logging
import os

import redis

from driftline.errors import ServiceError

__all__ = ["REDIS_COMMANDS", "check_redis"]

log = logging.getLogger("driftline.monitor")


#: Redis commands the monitor sends, directly or from its Lua scripts (``*.lua``): a Redis
#: ACL user of the monitor needs every one of them on the keys under its key prefix.
REDIS_COMMANDS = (
    "PING", "EVALSHA", "SCRIPT|LOAD", "EVAL",  # the scripts: apply, mark, read
    "HGET", "HSET", "HGETALL", "HMGET", "HINCRBY", "HINCRBYFLOAT",  # buckets, offsets, marks
    "ZADD", "ZRANGE", "ZRANGEBYSCORE", "ZREMRANGEBYSCORE", "ZREMRANGEBYRANK",  # index, samples
    "EXPIRE", "DEL", "GET", "SET", "SCAN",  # TTLs, cleanup, cached baselines, replay scratch
    "HDEL", "HKEYS", "ZREM", "MGET",  # the label join (feedback_*.lua, pending predictions)
)  # fmt: skip

# Runs each command the scripts and the monitor use once, on one scratch key of the prefix:
# an ACL denial of any of them fails here, at start, instead of on the first batch.
_PROBE = """
local k = KEYS[1]
redis.call('HSET', k .. ':h', 'f', '1')
redis.call('HINCRBY', k .. ':h', 'f', 1)
redis.call('HINCRBYFLOAT', k .. ':h', 'g', 0.5)
redis.call('HGET', k .. ':h', 'f')
redis.call('HMGET', k .. ':h', 'f', 'g')
redis.call('HGETALL', k .. ':h')
redis.call('HKEYS', k .. ':h')
redis.call('HDEL', k .. ':h', 'g')
redis.call('ZADD', k .. ':z', 1, 'm')
redis.call('ZRANGEBYSCORE', k .. ':z', '-inf', '+inf')
redis.call('ZREMRANGEBYSCORE', k .. ':z', '-inf', '(0')
redis.call('EXPIRE', k .. ':h', 60)
redis.call('DEL', k .. ':h', k .. ':z')
return 1
"""


def check_redis(client: redis.Redis, prefix: str = "dl") -> None:
    """At start: a wrong password or a missing permission stops the monitor; Redis down only
    delays pipelines.

    The monitor's Redis user needs every command of :data:`REDIS_COMMANDS` on the keys under
    ``prefix`` (``DRIFTLINE_KEY_PREFIX``): ``PING``; ``EVALSHA``, ``SCRIPT LOAD`` and
    ``EVAL`` (its Lua scripts); ``HGET``, ``HSET``, ``HGETALL``, ``HMGET``, ``HINCRBY``,
    ``HINCRBYFLOAT``; ``ZADD``, ``ZRANGE``, ``ZRANGEBYSCORE``, ``ZREMRANGEBYSCORE``,
    ``ZREMRANGEBYRANK``; ``EXPIRE``, ``DEL``, ``GET``, ``SET``, ``SCAN``; and for the label join
    ``HDEL``, ``HKEYS``, ``ZREM``, ``MGET``. Each is tried once
    on a scratch key, so a denial is met here rather than on the first batch.

    Raises :class:`~driftline.errors.ServiceError` (``driftline monitor`` exits with 3).
    """
    probe = f"{prefix}:{{driftline-check}}:{os.getpid()}"
    try:
        client.ping()
        client.register_script(_PROBE)(keys=[probe])
        pipe = client.pipeline(transaction=False)
        pipe.set(probe, b"1", ex=60)
        pipe.get(probe)
        pipe.zadd(probe + ":z", {b"m": 1.0})
        pipe.zrange(probe + ":z", 0, 0, withscores=True)
        pipe.zrem(probe + ":z", b"m")
        pipe.zremrangebyrank(probe + ":z", 0, -1)
        pipe.mget([probe])
        pipe.delete(probe)
        pipe.execute()
        client.scan(0, match=probe, count=10)
    except (redis.AuthenticationError, redis.exceptions.AuthorizationError) as exc:
        raise ServiceError(
            f"Redis refused the monitor: {str(exc).rstrip('.')}; check DRIFTLINE_REDIS_URL"
        ) from None
    except redis.ResponseError as exc:
        raise ServiceError(
            f"Redis refused the monitor: {str(exc).splitlines()[0].rstrip('.')}; the monitor's "
            f"Redis user needs {', '.join(REDIS_COMMANDS)} on keys {prefix}:* "
            "(check DRIFTLINE_REDIS_URL and the user's ACL)"
        ) from None
    except redis.RedisError as exc:
        log.warning("Redis unreachable at start (%s); pipelines start once it answers", exc)
