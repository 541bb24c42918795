"""``driftline bridge``: consume ``driftline.notifications`` and deliver every target.

Delivery promises (DESIGN §8):

- at-least-once: a partition's offset is committed only past notifications whose every
  target was delivered, dead-lettered or found already delivered;
- duplicates after a redelivery are suppressed by a Redis key per (notification id, target),
  written with ``SET NX EX`` right after a successful delivery (a crash between delivery and
  that write, or Redis being unavailable, are the only ways a receiver sees a notification
  twice);
- Redis being unavailable (at start-up or later) never holds delivery back: the check counts
  nothing as sent, the mark is skipped, rate limits hold within the process only, and one
  warning is logged per outage (``driftline_bridge_dedup_unavailable_total`` counts the steps);
- failed attempts are retried with exponential backoff and full jitter, honouring HTTP 429
  ``Retry-After``; after ``bridge_max_attempts`` attempts, or at once for a permanent error
  (HTTP 4xx, SMTP 5xx, an unconfigured target), the notification goes to the dead-letter
  topic with the last error;
- each target is rate-limited (:mod:`driftline.alerts.ratelimit`), across processes;
- notifications of the same alert and target within ``bridge_group_ms`` are sent as one;
- a notification reaches only targets that a deployed spec of its pipeline declares for that
  alert or assay, or the operator's ``DRIFTLINE_BRIDGE_ALLOWED_TARGETS``
  (:mod:`driftline.alerts.authorize`); any other target is dead-lettered as
  ``unauthorized_target``;
- every field is type-checked on decode (:mod:`driftline.alerts.inbound`): a malformed
  notification is dead-lettered as ``malformed`` and the bridge goes on; text is escaped for
  each channel (:mod:`driftline.alerts.render`).

Run with ``driftline bridge`` or ``python -m driftline.alerts.bridge``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    NoPermissionError,
    RedisError,
    ResponseError,
)

from driftline.alerts import _metrics as m
from driftline.alerts._offsets import OffsetTracker
from driftline.alerts.authorize import Authorizer, SpecFollower
from driftline.alerts.channels import (
    DeliveryError,
    EmailSender,
    Sender,
    SlackSender,
    StdoutSender,
    WebhookSender,
    parse_smtp_url,
)
from driftline.alerts.grouping import Delivery, Job, group_jobs
from driftline.alerts.inbound import MalformedNotification, parse_notification
from driftline.alerts.ratelimit import RateLimiter
from driftline.alerts.redact import RedactingFilter, Redactor, secret_values
from driftline.alerts.retry import backoff_delay
from driftline.config import BridgeSettings, KafkaSettings, RedisSettings
from driftline.errors import ConfigError, ServiceError
from driftline.events import Notification
from driftline.kafka.deadletter import dead_letter
from driftline.notify import CHANNELS, Target, TargetError, parse_target

__all__ = ["Bridge", "load_bridge_settings", "main", "parse_channels", "run_bridge"]

log = logging.getLogger("driftline.bridge")

_CONSUME_BATCH = 500
_MAX_BUFFER = 5000
_IDLE_SLEEP_S = 0.05
_SHUTDOWN_GRACE_S = 15.0
# What a Redis call raises when Redis cannot be reached or does not answer in time (the
# client's socket timeouts); the bridge then goes on without it.
_REDIS_DOWN: tuple[type[Exception], ...] = (RedisError, OSError)
#: What the bridge's Redis user must be allowed: the de-duplication marks (EXISTS, SET) and the
#: rate limiter's scripts (EVALSHA, SCRIPT LOAD; TIME, GET and SET inside them), on the keys
#: ``<key prefix>:{notify}:*``.
REDIS_ACL = "+ping +exists +set +get +time +evalsha +script|load ~<key prefix>:{notify}:*"
_WITHOUT_REDIS = (
    "de-duplication is unavailable until Redis answers; delivering anyway, so a redelivered "
    "notification may be sent twice, and rate limits hold within this process only"
)


def _job_key(job: Job) -> tuple[str, str]:
    return job.notification.id, str(job.target)


def load_bridge_settings() -> BridgeSettings:
    """Read :class:`BridgeSettings`; errors name the variable but never echo its value."""
    try:
        return BridgeSettings()
    except ValidationError as exc:
        problems = "; ".join(
            f"DRIFTLINE_{'.'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
            for e in exc.errors()
        )
        raise ConfigError(problems) from None
    except Exception as exc:  # pydantic-settings' own parse errors name the field only
        raise ConfigError(f"bridge settings: {type(exc).__name__}: {exc}") from None


def parse_channels(text: str | None) -> tuple[str, ...]:
    """Parse ``--channels email,slack``; None or empty means all channels.

    >>> parse_channels("slack, webhook")
    ('slack', 'webhook')
    >>> parse_channels("sms")
    Traceback (most recent call last):
    ...
    driftline.errors.ConfigError: --channels: unknown channel 'sms'; use ...
    """
    if not text:
        return CHANNELS
    out = []
    for part in text.split(","):
        name = part.strip().lower()
        if not name:
            continue
        if name not in CHANNELS:
            raise ConfigError(
                f"--channels: unknown channel {name!r}; use a comma-separated subset of "
                + ",".join(CHANNELS)
            )
        out.append(name)
    return tuple(dict.fromkeys(out)) or CHANNELS


@dataclass
class _Message:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    received: float
    remaining: int = 0
    jobs: list[Job] = field(default_factory=list)


class Bridge:
    """The consume → deliver → commit loop. Construct, then ``await bridge.run(stop)``.

    ``senders`` overrides the channel senders (tests); by default they are built from
    ``settings``. Only the kinds in ``channels`` are served; targets of other kinds are skipped
    (another bridge, in another consumer group, may serve them).
    """

    def __init__(
        self,
        settings: BridgeSettings,
        kafka: KafkaSettings,
        redis: RedisSettings,
        channels: Collection[str] = CHANNELS,
        senders: Mapping[str, Sender] | None = None,
        redactor: Redactor | None = None,
    ) -> None:
        self.settings = settings
        self.kafka = kafka
        self.redis_settings = redis
        self.channels = tuple(channels)
        self.topic = settings.bridge_topic or kafka.topic("notifications")
        self.deadletter_topic = settings.bridge_deadletter_topic or kafka.topic(
            "notifications", "deadletter"
        )
        self.redactor = redactor or Redactor(secret_values(settings))
        self.pipelines_topic = settings.bridge_pipelines_topic or kafka.topic("pipelines")
        self.authorizer = Authorizer(settings.bridge_allowed_targets)
        self._specs: SpecFollower | None = None
        self._senders_override = dict(senders) if senders else None
        self._tracker = OffsetTracker()
        self._messages: dict[int, _Message] = {}
        self._refs = itertools.count()
        self._tasks: set[asyncio.Task[None]] = set()
        # (notification id, target) pairs being delivered now: a notification consumed again
        # (after a rebalance hands its partition back) waits for that delivery instead of
        # racing it, since the Redis mark is only written once it succeeds.
        self._inflight: dict[tuple[str, str], asyncio.Event] = {}
        self._fatal: BaseException | None = None
        self._buffer: list[Any] = []
        self._consumer: Any = None
        self._producer: Any = None
        self._redis: Any = None
        self._redis_down = False
        # When each target may next be attempted, per this process: the rate limit used while
        # Redis (which holds the shared one) is unavailable.
        self._local_not_before: dict[Target, float] = {}
        self._limiter: RateLimiter | None = None
        self._senders: dict[str, Sender] = {}

    # -- set-up -------------------------------------------------------------------------

    def _build_senders(self, http: Any) -> dict[str, Sender]:
        if self._senders_override is not None:
            return self._senders_override
        s = self.settings
        senders: dict[str, Sender] = {
            "slack": SlackSender(http, s.slack_webhooks),
            "webhook": WebhookSender(http, s.webhooks),
            "stdout": StdoutSender(),
        }
        if s.smtp_url is not None:
            senders["email"] = EmailSender(
                parse_smtp_url(s.smtp_url), s.smtp_from, s.bridge_timeout_s
            )
        return senders

    async def _check_redis_permissions(self) -> None:
        """Run each Redis command the bridge needs once, on a probe key that expires.

        A user that lacks one (an ACL without scripting) would otherwise look like an outage
        on every delivery and silently lose de-duplication; it is a setting to fix instead.
        """
        assert self._limiter is not None
        probe = f"{self.redis_settings.key_prefix}:{{notify}}:probe:{uuid.uuid4().hex}"
        steps: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
            ("EXISTS", lambda: self._redis.exists(probe)),
            ("SET", lambda: self._redis.set(probe, b"1", nx=True, ex=60)),
            (
                "the rate limit scripts (EVALSHA, SCRIPT LOAD; TIME, GET and SET inside)",
                lambda: self._limiter.probe(probe),  # type: ignore[union-attr]
            ),
        ]
        for what, step in steps:
            try:
                await step()
            except (NoPermissionError, ResponseError) as exc:
                # An answer, not an outage: a user without the command (inside a script Redis
                # says so without NOPERM), a read-only replica.
                raise ServiceError(
                    f"Redis refused {what}: {self.redactor.redact(str(exc))}; the bridge's "
                    f"user needs {REDIS_ACL} on a writable server"
                ) from None
            except _REDIS_DOWN as exc:
                self._redis_down = True
                log.warning(
                    "Redis unavailable at start-up (%s): %s",
                    self._redis_error(exc),
                    _WITHOUT_REDIS,
                )
                return

    def _dedup_key(self, notification_id: str, target: Target) -> str:
        return f"{self.redis_settings.key_prefix}:{{notify}}:sent:{notification_id}:{target}"

    # -- main loop ----------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set; then finish in-flight deliveries and commit."""
        import httpx
        import redis.asyncio as aioredis
        from confluent_kafka import Consumer, Producer

        from driftline.kafka.admin import ensure_topics

        s = self.settings
        ensure_topics(self.kafka, [self.topic, self.deadletter_topic])
        self._specs = SpecFollower(self.kafka, self.pipelines_topic, self.authorizer)
        await asyncio.to_thread(self._specs.start)
        self._redis = aioredis.Redis.from_url(
            self.redis_settings.redis_url.get_secret_value(), **self.redis_settings.client_kwargs()
        )
        try:
            await self._redis.ping()
        except (AuthenticationError, AuthorizationError, ResponseError) as exc:
            # A wrong password or ACL is a setting to fix, not an outage to wait out.
            raise ServiceError(f"Redis: {self.redactor.redact(str(exc))}") from None
        except _REDIS_DOWN as exc:
            # Not fatal: the client connects again on each later call.
            self._redis_down = True
            log.warning(
                "Redis unavailable at start-up (%s): %s", self._redis_error(exc), _WITHOUT_REDIS
            )
        except Exception as exc:
            raise ServiceError(f"Redis: {self.redactor.redact(str(exc))}") from None
        self._limiter = RateLimiter(
            self._redis,
            self.redis_settings.key_prefix,
            s.bridge_rate_limits,
            lease_s=s.bridge_timeout_s + 5.0,
        )
        if not self._redis_down:
            await self._check_redis_permissions()
        self._producer = Producer(
            self.kafka.client_config(
                **{"acks": "all", "enable.idempotence": True, "client.id": "driftline-bridge"}
            )
        )
        self._consumer = Consumer(
            self.kafka.client_config(
                **{
                    "group.id": s.bridge_group,
                    "enable.auto.commit": False,
                    "auto.offset.reset": "earliest",
                    "client.id": "driftline-bridge",
                }
            )
        )
        self._consumer.subscribe([self.topic], on_revoke=self._on_revoke, on_lost=self._on_revoke)
        log.info(
            "bridge serving %s from %s (group %s), dead letters to %s",
            ",".join(self.channels),
            self.topic,
            s.bridge_group,
            self.deadletter_topic,
        )
        async with httpx.AsyncClient(timeout=s.bridge_timeout_s) as http:
            self._senders = self._build_senders(http)
            try:
                await self._loop(stop)
            finally:
                await self._shutdown()

    async def _loop(self, stop: asyncio.Event) -> None:
        group_s = self.settings.bridge_group_ms / 1000.0
        first_at: float | None = None
        paused = False
        while not stop.is_set():
            if self._fatal is not None:
                raise self._fatal
            busy = len(self._tasks) >= self.settings.bridge_max_in_flight
            # Pausing (rather than not polling) keeps this member in its group while a
            # slow, rate-limited target drains.
            if busy != paused:
                assignment = self._consumer.assignment()
                if assignment:
                    (self._consumer.pause if busy else self._consumer.resume)(assignment)
                paused = busy
            assert self._specs is not None
            self._specs.poll()
            messages = self._consumer.consume(_CONSUME_BATCH, 0)
            for msg in messages:
                err = msg.error()
                if err is None:
                    self._buffer.append(msg)
                elif not err.retriable() and err.fatal():
                    raise ServiceError(f"Kafka consumer: {err}")
                else:
                    log.warning("Kafka consumer: %s", err)
            now = time.monotonic()
            if self._buffer and first_at is None:
                first_at = now
            if (
                self._buffer
                and first_at is not None
                and (now - first_at >= group_s or len(self._buffer) >= _MAX_BUFFER)
            ):
                batch, self._buffer, first_at = self._buffer, [], None
                await self._dispatch(batch)
            self._commit()
            await asyncio.sleep(0 if messages else _IDLE_SLEEP_S)

    async def _shutdown(self) -> None:
        # Buffered but undispatched messages are simply not committed: the next owner gets them.
        self._buffer = []
        if self._tasks:
            _done, pending = await asyncio.wait(self._tasks, timeout=_SHUTDOWN_GRACE_S)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        with contextlib.suppress(Exception):
            self._commit()
        self._consumer.close()
        if self._specs is not None:
            self._specs.close()
        self._producer.flush(10)
        with contextlib.suppress(*_REDIS_DOWN):
            await self._redis.aclose()

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        revoked = {(p.topic, p.partition) for p in partitions}
        with contextlib.suppress(Exception):
            self._commit()
        for tp in revoked:
            self._tracker.drop(*tp)
        self._buffer = [x for x in self._buffer if (x.topic(), x.partition()) not in revoked]

    def _commit(self) -> None:
        from confluent_kafka import KafkaException, TopicPartition

        positions = self._tracker.committable()
        if not positions:
            return
        try:
            self._consumer.commit(
                offsets=[TopicPartition(t, p, o) for (t, p), o in positions.items()],
                asynchronous=False,
            )
        except KafkaException as exc:
            # Not fatal: the positions stay committable and are offered again next round.
            log.warning("commit failed, will retry: %s", exc)
            return
        self._tracker.mark_committed(positions)

    # -- dispatch -----------------------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None and self._fatal is None:
            self._fatal = task.exception()

    def _decode(self, batch: Sequence[Any]) -> list[tuple[_Message, Notification | str]]:
        """Each message with its notification, or why it cannot be one."""
        now = time.monotonic()
        out: list[tuple[_Message, Notification | str]] = []
        for msg in batch:
            rec = _Message(
                msg.topic(), msg.partition(), msg.offset(), msg.key(), msg.value() or b"", now
            )
            try:
                out.append((rec, parse_notification(rec.value)))
            except MalformedNotification as exc:
                out.append((rec, str(exc)))
        return out

    def _refused(self, notification: Notification) -> bool:
        """Whether some well-formed target of a served channel is not authorized."""
        for text in notification.notify:
            try:
                target = parse_target(text)
            except TargetError:
                continue
            if target.kind in self.channels and not self.authorizer.allows(notification, target):
                return True
        return False

    async def _dispatch(self, batch: Sequence[Any]) -> None:
        jobs: list[Job] = []
        dead: list[tuple[int, str, str, str, str]] = []  # ref, target, channel, reason, detail
        decoded = self._decode(batch)
        if any(isinstance(n, Notification) and self._refused(n) for _, n in decoded):
            # A spec deployed a moment ago may not have been read yet: read the control
            # topic to its end before refusing anything.
            assert self._specs is not None
            await asyncio.to_thread(self._specs.catch_up)
        for rec, notification in decoded:
            ref = next(self._refs)
            n_jobs = 0
            if not isinstance(notification, Notification):
                dead.append((ref, "", "unknown", "malformed", notification[:500]))
                self._messages[ref] = rec
                rec.remaining = 1
                self._tracker.add(rec.topic, rec.partition, rec.offset, 1)
                continue
            for text in dict.fromkeys(notification.notify):
                try:
                    target = parse_target(text)
                except TargetError as exc:
                    dead.append((ref, text, "unknown", "bad-target", str(exc)))
                    n_jobs += 1
                    continue
                if target.kind not in self.channels:
                    m.SKIPPED.labels(target.kind).inc()
                    continue
                m.RECEIVED.labels(target.kind).inc()
                if not self.authorizer.allows(notification, target):
                    m.UNAUTHORIZED.labels(target.kind).inc()
                    dead.append(
                        (
                            ref,
                            str(target),
                            target.kind,
                            "unauthorized_target",
                            f"{target} is not declared for {notification.kind} "
                            f"{notification.alert!r} by any deployed spec of pipeline "
                            f"{notification.pipeline!r} the bridge has read from "
                            f"{self.pipelines_topic}, nor listed in "
                            "DRIFTLINE_BRIDGE_ALLOWED_TARGETS",
                        )
                    )
                    n_jobs += 1
                    continue
                sender = self._senders.get(target.kind)
                if sender is None or not sender.knows(target):
                    what = (
                        "DRIFTLINE_SMTP_URL"
                        if target.kind == "email"
                        else (
                            "DRIFTLINE_SLACK_WEBHOOKS"
                            if target.kind == "slack"
                            else ("DRIFTLINE_WEBHOOKS")
                        )
                    )
                    dead.append(
                        (
                            ref,
                            str(target),
                            target.kind,
                            "unconfigured-target",
                            f"{target} is not configured; add it to {what}",
                        )
                    )
                    n_jobs += 1
                    continue
                job = Job(notification, target, ref)
                rec.jobs.append(job)
                jobs.append(job)
                n_jobs += 1
            rec.remaining = n_jobs
            if n_jobs:
                self._messages[ref] = rec
            self._tracker.add(rec.topic, rec.partition, rec.offset, n_jobs)

        fresh = await self._drop_already_sent(jobs)
        ready = [j for j in fresh if _job_key(j) not in self._inflight]
        for job in fresh:
            if _job_key(job) in self._inflight:
                self._spawn(self._after_inflight(job))
        for delivery in group_jobs(ready, self.settings.bridge_group_ms):
            self._start_delivery(delivery)
        for ref, target_text, channel, reason, detail in dead:
            self._spawn(self._deadletter_one(ref, target_text, channel, reason, detail, 0))

    async def _drop_already_sent(self, jobs: list[Job]) -> list[Job]:
        if not jobs:
            return jobs
        pipe = self._redis.pipeline(transaction=False)
        for job in jobs:
            pipe.exists(self._dedup_key(job.notification.id, job.target))
        try:
            flags = await pipe.execute()
        except _REDIS_DOWN as exc:
            # At-least-once: what cannot be checked counts as not yet sent.
            await self._redis_failed("de-duplication check", exc)
            for job in jobs:
                m.DEDUP_UNAVAILABLE.labels(job.target.kind, "check").inc()
            return jobs
        self._redis_answered()
        fresh = []
        for job, sent in zip(jobs, flags, strict=True):
            if sent:
                m.DUPLICATES.labels(job.target.kind).inc()
                self._job_done(job.ref)
            else:
                fresh.append(job)
        return fresh

    def _job_done(self, ref: int) -> None:
        rec = self._messages.get(ref)
        if rec is None:
            return
        self._tracker.done(rec.topic, rec.partition, rec.offset)
        rec.remaining -= 1
        if rec.remaining <= 0:
            del self._messages[ref]

    # -- Redis outages ------------------------------------------------------------------

    def _redis_error(self, exc: BaseException) -> str:
        return self.redactor.redact(f"{type(exc).__name__}: {exc}")

    async def _redis_failed(self, what: str, exc: BaseException) -> None:
        """Note a failed Redis call; only the first of an outage is logged."""
        if self._redis_down:
            return
        self._redis_down = True
        log.warning("Redis unavailable (%s: %s): %s", what, self._redis_error(exc), _WITHOUT_REDIS)
        # Idle pooled connections opened before the outage would each fail once after Redis
        # is back; drop them now so that the first calls then go through.
        with contextlib.suppress(Exception):
            await self._redis.connection_pool.disconnect(inuse_connections=False)

    def _redis_answered(self) -> None:
        if self._redis_down:
            self._redis_down = False
            log.warning("Redis answers again: de-duplication resumed")

    @contextlib.asynccontextmanager
    async def _slot(self, target: Target) -> AsyncIterator[None]:
        """The limiter's slot for one attempt; with Redis unavailable, spacing in this process.

        Only the limiter's own Redis calls are guarded: what the attempt raises passes as is.
        """
        assert self._limiter is not None
        interval = self._limiter.interval_ms(target)
        slot = self._limiter.slot(target)
        shared = True
        try:
            await slot.__aenter__()
        except _REDIS_DOWN as exc:
            await self._redis_failed("rate limit", exc)
            shared = False
            wait = self._local_not_before.get(target, 0.0) - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        else:
            if interval is not None:
                self._redis_answered()
        raised: BaseException | None = None
        try:
            yield
        except BaseException as exc:
            raised = exc
            raise
        finally:
            if interval is not None:
                self._local_not_before[target] = time.monotonic() + interval / 1000.0
            if shared:
                try:
                    await slot.__aexit__(
                        None if raised is None else type(raised),
                        raised,
                        None if raised is None else raised.__traceback__,
                    )
                except _REDIS_DOWN as exc:
                    if exc is raised:
                        raise
                    # The attempt's own outcome (returned or raised) stands.
                    await self._redis_failed("rate limit", exc)

    # -- delivery -----------------------------------------------------------------------

    def _start_delivery(self, delivery: Delivery) -> None:
        for job in delivery.jobs:
            self._inflight[_job_key(job)] = asyncio.Event()
        self._spawn(self._deliver(delivery))

    async def _after_inflight(self, job: Job) -> None:
        """Deliver ``job`` only if the delivery of the same pair in flight did not succeed."""
        event = self._inflight.get(_job_key(job))
        if event is not None:
            await event.wait()
        try:
            sent = await self._redis.exists(self._dedup_key(job.notification.id, job.target))
        except _REDIS_DOWN as exc:
            await self._redis_failed("de-duplication check", exc)
            m.DEDUP_UNAVAILABLE.labels(job.target.kind, "check").inc()
            sent = False
        else:
            self._redis_answered()
        if sent:
            m.DUPLICATES.labels(job.target.kind).inc()
            self._job_done(job.ref)
            return
        for delivery in group_jobs([job], self.settings.bridge_group_ms):
            self._start_delivery(delivery)

    async def _deliver(self, delivery: Delivery) -> None:
        try:
            await self._deliver_once(delivery)
        finally:
            for job in delivery.jobs:
                event = self._inflight.pop(_job_key(job), None)
                if event is not None:
                    event.set()

    async def _deliver_once(self, delivery: Delivery) -> None:
        s = self.settings
        assert self._limiter is not None
        target = delivery.target
        channel = target.kind
        sender = self._senders[channel]
        last: DeliveryError | None = None
        attempts = 0
        # One delivery per target at a time, in arrival order; backoff holds the target too,
        # since a failing receiver gains nothing from a second concurrent caller.
        async with self._limiter.lock(target):
            for attempt in range(1, s.bridge_max_attempts + 1):
                attempts = attempt
                try:
                    async with self._slot(target):
                        await asyncio.wait_for(
                            sender.send(target, delivery.notifications), s.bridge_timeout_s
                        )
                except TimeoutError:
                    last = DeliveryError("timeout", "the receiver did not answer in time")
                except DeliveryError as exc:
                    last = exc
                else:
                    last = None
                    break
                if last.permanent or attempt == s.bridge_max_attempts:
                    break
                if last.retry_after is not None:
                    delay = min(last.retry_after, s.bridge_retry_after_max_s)
                else:
                    delay = backoff_delay(attempt, s.bridge_backoff_s, s.bridge_backoff_max_s)
                m.RETRIED.labels(channel, last.reason).inc()
                log.info(
                    "%s: attempt %d failed (%s); retrying in %.2fs",
                    target,
                    attempt,
                    self.redactor.redact(str(last)),
                    delay,
                )
                await asyncio.sleep(delay)
        if last is None:
            await self._mark_sent(delivery)
            done = time.monotonic()
            m.MESSAGES.labels(channel).inc()
            for job in delivery.jobs:
                m.DELIVERED.labels(channel).inc()
                rec = self._messages.get(job.ref)
                if rec is not None:
                    m.LATENCY.labels(channel).observe(done - rec.received)
                self._job_done(job.ref)
            return
        log.warning(
            "%s: giving up after %d attempt(s) (%s); dead-lettering %d notification(s)",
            target,
            attempts,
            self.redactor.redact(str(last)),
            len(delivery.jobs),
        )
        for job in delivery.jobs:
            await self._deadletter_one(
                job.ref, str(target), channel, last.reason, last.detail, attempts
            )

    async def _mark_sent(self, delivery: Delivery) -> None:
        pipe = self._redis.pipeline(transaction=False)
        for n in delivery.notifications:
            pipe.set(
                self._dedup_key(n.id, delivery.target),
                b"1",
                nx=True,
                ex=self.settings.bridge_dedup_ttl_s,
            )
        # Delivered but not marked: a later redelivery would duplicate, nothing is lost.
        try:
            await pipe.execute()
        except _REDIS_DOWN as exc:
            await self._redis_failed("marking a delivery", exc)
            m.DEDUP_UNAVAILABLE.labels(delivery.target.kind, "mark").inc(
                len(delivery.notifications)
            )
        except Exception as exc:
            log.warning("could not mark delivery in Redis: %s", self.redactor.redact(str(exc)))
        else:
            self._redis_answered()

    async def _deadletter_one(
        self, ref: int, target: str, channel: str, reason: str, detail: str, attempts: int
    ) -> None:
        rec = self._messages.get(ref)
        if rec is None:
            return
        dl = dead_letter(
            rec.value,
            reason=reason,
            detail=self.redactor.redact(detail),
            topic=rec.topic,
            partition=rec.partition,
            offset=rec.offset,
            key=rec.key,
            extra_headers=[
                ("driftline-target", self.redactor.redact(target)),
                ("driftline-attempts", str(attempts)),
            ],
        )
        outcome: list[Any] = []
        self._producer.produce(
            self.deadletter_topic,
            value=dl.value,
            key=dl.key,
            headers=dl.headers,
            on_delivery=lambda err, _msg: outcome.append(err),
        )
        await asyncio.to_thread(self._producer.flush, 30)
        if not outcome or outcome[0] is not None:
            # Never drop silently: stop without committing, so the notification comes back.
            raise ServiceError(
                f"could not write to {self.deadletter_topic}: "
                f"{outcome[0] if outcome else 'timed out'}"
            )
        m.DEADLETTERED.labels(channel, reason).inc()
        self._job_done(ref)


def _configure_logging(redactor: Redactor, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    # On the handler, so that records of every library (httpx logs request URLs) pass it.
    handler.addFilter(RedactingFilter(redactor))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)


def run_bridge(channels: str | None = None, metrics_port: int | None = None) -> int:
    """Run the bridge in the foreground until SIGTERM/SIGINT; returns an exit code."""
    from driftline.config import load_settings
    from driftline.metrics import start_metrics_server

    settings = load_bridge_settings()
    general = load_settings()
    bridge = Bridge(settings, general.kafka, general.redis, parse_channels(channels))
    _configure_logging(bridge.redactor, general.log_level)
    start_metrics_server(metrics_port if metrics_port is not None else general.metrics_port)

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await bridge.run(stop)

    asyncio.run(serve())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m driftline.alerts.bridge [--channels ...] [--metrics-port P]``."""
    parser = argparse.ArgumentParser(prog="python -m driftline.alerts.bridge")
    parser.add_argument("--channels", default=None)
    parser.add_argument("--metrics-port", type=int, default=None)
    args = parser.parse_args(argv)
    try:
        return run_bridge(args.channels, args.metrics_port)
    except ServiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
