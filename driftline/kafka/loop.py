"""The pieces of a consume loop every driftline process writes: stop, back off, rebalance.

- :class:`StopSignal` — one event set by SIGTERM/SIGINT (or :meth:`StopSignal.set`), whose
  :meth:`~StopSignal.wait` doubles as an interruptible sleep, so that a process waiting for a
  broker or a retry stops at once when asked to;
- :class:`Backoff` and :func:`backoff_delay` — exponential backoff with full jitter, so that
  many clients retrying the same broker spread out instead of hammering it in step;
- :func:`retry` — call until success while an error is transient, backing off between tries;
- :func:`kafka_retriable` — whether a librdkafka error may go away by itself;
- :class:`Rebalance` — the assignment a subscribed consumer holds, with hooks that run before
  partitions go (a revoke and a lost assignment alike: either way they are no longer ours).
"""

from __future__ import annotations

import logging
import random
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any, TypeVar

__all__ = [
    "Backoff",
    "Rebalance",
    "StopSignal",
    "backoff_delay",
    "kafka_retriable",
    "retry",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopSignal:
    """A stop request, from a signal or from code, that every wait in a loop honours.

    >>> stop = StopSignal()
    >>> stop.is_set(), stop.wait(0.0)
    (False, False)
    >>> stop.set()
    >>> stop.is_set(), stop.wait(10.0)
    (True, True)
    """

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        """Ask the loop to stop."""
        self._event.set()

    def is_set(self) -> bool:
        """Whether a stop was asked for."""
        return self._event.is_set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; returns True (at once) when a stop is asked for."""
        return self._event.wait(max(0.0, seconds))

    @contextmanager
    def installed(self, signals: Iterable[int] = _STOP_SIGNALS) -> Iterator[StopSignal]:
        """Set this stop on ``signals`` (SIGTERM, SIGINT) inside the block, then restore.

        Signal handlers can only be installed from the main thread; elsewhere the block
        runs without them and :meth:`set` remains the way to stop.
        """
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous: dict[int, Any] = {}

        def handler(signum: int, _frame: FrameType | None) -> None:
            log.info("signal %s: stopping", signal.Signals(signum).name)
            self.set()

        for sig in signals:
            previous[sig] = signal.signal(sig, handler)
        try:
            yield self
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)


def backoff_delay(
    attempt: int, base_s: float, cap_s: float, rng: random.Random | None = None
) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based), with full jitter.

    Uniform in ``[0, min(cap, base * 2**(attempt-1))]``.

    >>> backoff_delay(3, 0.5, 60.0, random.Random(1)) <= 2.0
    True
    >>> backoff_delay(300, 0.5, 60.0, random.Random(1)) <= 60.0
    True
    """
    if attempt < 1:
        raise ValueError(f"attempt={attempt}: attempts count from 1")
    if base_s <= 0 or cap_s <= 0:
        raise ValueError(f"base_s={base_s}, cap_s={cap_s}: both must be positive")
    ceiling = min(cap_s, base_s * 2.0 ** min(attempt - 1, 62))
    return (rng or random).uniform(0.0, ceiling)


class Backoff:
    """Successive delays of one retry sequence; :meth:`reset` after a success.

    Parameters
    ----------
    base_s:
        Ceiling of the first delay; each failure doubles it.
    cap_s:
        Largest ceiling.
    rng:
        Random source (a seeded one makes the delays reproducible in tests).

    >>> b = Backoff(0.1, 1.0, random.Random(7))
    >>> delays = [b.next() for _ in range(6)]
    >>> all(0 <= d <= min(1.0, 0.1 * 2**i) for i, d in enumerate(delays)), b.attempts
    (True, 6)
    >>> b.reset(); b.attempts
    0
    """

    def __init__(self, base_s: float, cap_s: float, rng: random.Random | None = None):
        backoff_delay(1, base_s, cap_s)  # the same argument checks, once, at construction
        self.base_s = base_s
        self.cap_s = cap_s
        self.attempts = 0
        self._rng = rng

    def next(self) -> float:
        """The delay to wait after one more failure."""
        self.attempts += 1
        return backoff_delay(self.attempts, self.base_s, self.cap_s, self._rng)

    def reset(self) -> None:
        """Start over (after a success)."""
        self.attempts = 0


def kafka_retriable(exc: BaseException) -> bool:
    """Whether a Kafka error may clear by itself (a broker restarting, a timeout).

    >>> from confluent_kafka import KafkaError, KafkaException
    >>> kafka_retriable(KafkaException(KafkaError(KafkaError._TIMED_OUT)))
    True
    >>> kafka_retriable(KafkaException(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED)))
    False
    >>> kafka_retriable(ValueError("x"))
    False
    """
    from confluent_kafka import KafkaError, KafkaException

    if not isinstance(exc, KafkaException) or not exc.args:
        return False
    err = exc.args[0]
    if not isinstance(err, KafkaError):
        return False
    return bool(err.retriable()) or err.code() in (
        KafkaError._TIMED_OUT,
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
    )


def retry(
    work: Callable[[], T],
    transient: Callable[[BaseException], bool],
    backoff: Backoff,
    stop: StopSignal | None = None,
    what: str = "call",
) -> T:
    """Call ``work`` until it succeeds, waiting ``backoff`` between transient failures.

    A failure ``transient`` does not accept is raised at once; a stop asked for during a
    wait raises the last transient error (the caller decides what stopping means).

    >>> calls = []
    >>> def flaky() -> str:
    ...     calls.append(1)
    ...     if len(calls) < 3:
    ...         raise TimeoutError("not yet")
    ...     return "done"
    >>> retry(flaky, lambda e: isinstance(e, TimeoutError), Backoff(0.001, 0.002)), len(calls)
    ('done', 3)
    """
    stop = stop or StopSignal()
    while True:
        try:
            result = work()
        except Exception as exc:
            if not transient(exc):
                raise
            delay = backoff.next()
            if backoff.attempts == 1 or backoff.attempts % 20 == 0:
                log.warning(
                    "%s failed (%s); trying again (attempt %d)", what, exc, backoff.attempts
                )
            if stop.wait(delay):
                raise
            continue
        if backoff.attempts:
            log.info("%s succeeded after %d failed attempts", what, backoff.attempts)
        backoff.reset()
        return result


PartitionsHook = Callable[[Any, list[Any]], None]


class Rebalance:
    """The partitions a subscribed consumer holds, and what to do before they go.

    ``on_revoke`` runs for a revoke and for a lost assignment alike, before the partitions
    leave :attr:`assigned`: it is where a loop finishes or aborts its batch and commits, so
    that the next owner starts exactly where this one stopped.

    >>> class TP:
    ...     def __init__(self, t, p): self.topic, self.partition = t, p
    >>> gone = []
    >>> r = Rebalance(on_revoke=lambda c, ps: gone.extend(ps))
    >>> r.assign(None, [TP("a", 0), TP("a", 1)]); sorted(r.assigned)
    [('a', 0), ('a', 1)]
    >>> r.lost(None, [TP("a", 1)]); sorted(r.assigned), len(gone)
    ([('a', 0)], 1)
    """

    def __init__(
        self,
        on_assign: PartitionsHook | None = None,
        on_revoke: PartitionsHook | None = None,
        name: str = "consumer",
    ):
        self._on_assign = on_assign
        self._on_revoke = on_revoke
        self.name = name
        self.assigned: set[tuple[str, int]] = set()

    def subscribe(self, consumer: Any, topics: list[str]) -> None:
        """Subscribe ``consumer`` to ``topics`` (names or ``^regex``) with these hooks."""
        consumer.subscribe(topics, on_assign=self.assign, on_revoke=self.revoke, on_lost=self.lost)

    def assign(self, consumer: Any, partitions: list[Any]) -> None:
        """librdkafka's ``on_assign``."""
        self.assigned |= {(p.topic, p.partition) for p in partitions}
        log.info("%s assigned %s", self.name, _names(partitions))
        if self._on_assign is not None:
            self._on_assign(consumer, partitions)

    def revoke(self, consumer: Any, partitions: list[Any]) -> None:
        """librdkafka's ``on_revoke``."""
        self._drop(consumer, partitions, "revoked")

    def lost(self, consumer: Any, partitions: list[Any]) -> None:
        """librdkafka's ``on_lost``: like a revoke, but commits for them will fail."""
        self._drop(consumer, partitions, "lost")

    def _drop(self, consumer: Any, partitions: list[Any], how: str) -> None:
        try:
            if self._on_revoke is not None:
                self._on_revoke(consumer, partitions)
        finally:
            self.assigned -= {(p.topic, p.partition) for p in partitions}
            log.info("%s %s %s", self.name, how, _names(partitions))


def _names(partitions: list[Any]) -> list[str]:
    return [f"{p.topic}[{p.partition}]" for p in partitions]
