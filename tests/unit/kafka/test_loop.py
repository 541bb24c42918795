"""The consume-loop pieces: stop signal, backoff with jitter, retry, rebalance hooks."""

from __future__ import annotations

import os
import random
import signal
import threading
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from driftline.kafka.loop import (
    Backoff,
    Rebalance,
    StopSignal,
    backoff_delay,
    kafka_retriable,
    retry,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_sets_the_stop_and_the_old_handler_comes_back(sig: int) -> None:
    before = signal.getsignal(sig)
    stop = StopSignal()
    with stop.installed():
        assert not stop.is_set()
        os.kill(os.getpid(), sig)
        # The handler runs in the main thread between bytecodes: the wait returns at once.
        assert stop.wait(30.0)
    assert stop.is_set()
    assert signal.getsignal(sig) is before


def test_outside_the_main_thread_no_handler_is_installed_and_set_still_stops() -> None:
    before = signal.getsignal(signal.SIGTERM)
    seen: list[Any] = []
    stop = StopSignal()

    def body() -> None:
        with stop.installed():
            seen.append(signal.getsignal(signal.SIGTERM))
            stop.set()
            seen.append(stop.wait(30.0))

    t = threading.Thread(target=body)
    t.start()
    t.join(30)
    assert seen == [before, True]


def test_backoff_doubles_its_ceiling_up_to_the_cap_with_full_jitter() -> None:
    rng = random.Random(3)
    b = Backoff(0.5, 4.0, rng)
    delays = [b.next() for _ in range(200)]
    ceilings = [min(4.0, 0.5 * 2**i) for i in range(200)]
    assert all(0.0 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    # jitter: the capped delays spread over [0, cap] instead of all being the cap
    capped = delays[10:]
    assert min(capped) < 1.0 and max(capped) > 3.0
    assert b.attempts == 200
    b.reset()
    assert b.attempts == 0
    assert b.next() <= 0.5


def test_backoff_is_reproducible_with_a_seeded_random_source() -> None:
    one = [Backoff(0.1, 10.0, random.Random(42)).next() for _ in range(3)]
    two = [Backoff(0.1, 10.0, random.Random(42)).next() for _ in range(3)]
    assert one == two


@pytest.mark.parametrize(
    ("attempt", "base", "cap", "word"),
    [(0, 1.0, 1.0, "attempt"), (1, 0.0, 1.0, "base_s"), (1, 1.0, -1.0, "cap_s")],
)
def test_backoff_refuses_arguments_that_make_no_sense(
    attempt: int, base: float, cap: float, word: str
) -> None:
    with pytest.raises(ValueError, match=word):
        backoff_delay(attempt, base, cap)


def test_backoff_of_a_very_late_attempt_stays_finite() -> None:
    assert 0.0 <= backoff_delay(10_000, 0.5, 60.0) <= 60.0


def test_retry_waits_out_transient_errors_and_returns_the_result() -> None:
    calls: list[int] = []

    def work() -> str:
        calls.append(1)
        if len(calls) < 4:
            raise TimeoutError("not yet")
        return "done"

    backoff = Backoff(0.001, 0.004)
    assert retry(work, lambda e: isinstance(e, TimeoutError), backoff) == "done"
    assert len(calls) == 4
    assert backoff.attempts == 0  # reset after the success


def test_retry_raises_an_error_that_is_not_transient_at_once() -> None:
    calls: list[int] = []

    def work() -> None:
        calls.append(1)
        raise KeyError("bad")

    with pytest.raises(KeyError):
        retry(work, lambda e: isinstance(e, TimeoutError), Backoff(0.001, 0.002))
    assert calls == [1]


def test_retry_ends_with_the_last_error_when_stopped_during_a_wait() -> None:
    stop = StopSignal()
    calls: list[int] = []

    def work() -> None:
        calls.append(1)
        stop.set()  # asked to stop while this attempt was running
        raise TimeoutError(f"attempt {len(calls)}")

    # a backoff of an hour: the stop must cut the wait short, not sleep through it
    with pytest.raises(TimeoutError, match="attempt 1"):
        retry(work, lambda e: True, Backoff(3600.0, 3600.0), stop=stop)
    assert calls == [1]


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (KafkaException(KafkaError(KafkaError._TIMED_OUT)), True),
        (KafkaException(KafkaError(KafkaError._TRANSPORT)), True),
        (KafkaException(KafkaError(KafkaError._ALL_BROKERS_DOWN)), True),
        (KafkaException(KafkaError(KafkaError.COORDINATOR_LOAD_IN_PROGRESS, retriable=True)), True),
        (KafkaException(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED)), False),
        (KafkaException(KafkaError(KafkaError.UNSUPPORTED_VERSION)), False),
        (KafkaException("no error object"), False),
        (TimeoutError("not Kafka"), False),
    ],
)
def test_kafka_retriable(exc: BaseException, expected: bool) -> None:
    assert kafka_retriable(exc) is expected


def _tp(topic: str, partition: int) -> SimpleNamespace:
    return SimpleNamespace(topic=topic, partition=partition)


class _Consumer:
    def __init__(self) -> None:
        self.subscribed: dict[str, Any] = {}

    def subscribe(self, topics: list[str], **hooks: Any) -> None:
        self.subscribed = {"topics": topics, **hooks}


def test_rebalance_runs_the_revoke_hook_while_the_partitions_are_still_held() -> None:
    held_during_hook: list[set[tuple[str, int]]] = []
    assigned_seen: list[list[Any]] = []
    rebalance: Rebalance

    def on_revoke(_c: Any, parts: list[Any]) -> None:
        held_during_hook.append(set(rebalance.assigned))

    rebalance = Rebalance(
        on_assign=lambda _c, parts: assigned_seen.append(parts), on_revoke=on_revoke
    )
    consumer = _Consumer()
    rebalance.subscribe(consumer, ["a"])
    assert consumer.subscribed["topics"] == ["a"]
    # librdkafka calls these three; lost goes through the same revoke hook
    consumer.subscribed["on_assign"](consumer, [_tp("a", 0), _tp("a", 1), _tp("a", 2)])
    assert rebalance.assigned == {("a", 0), ("a", 1), ("a", 2)}
    assert len(assigned_seen) == 1
    consumer.subscribed["on_revoke"](consumer, [_tp("a", 0)])
    consumer.subscribed["on_lost"](consumer, [_tp("a", 1)])
    assert held_during_hook == [{("a", 0), ("a", 1), ("a", 2)}, {("a", 1), ("a", 2)}]
    assert rebalance.assigned == {("a", 2)}


def test_rebalance_drops_the_partitions_even_when_the_hook_fails() -> None:
    def on_revoke(_c: Any, _parts: list[Any]) -> None:
        raise RuntimeError("commit failed")

    rebalance = Rebalance(on_revoke=on_revoke)
    rebalance.assign(None, [_tp("a", 0)])
    with pytest.raises(RuntimeError):
        rebalance.revoke(None, [_tp("a", 0)])
    assert rebalance.assigned == set()
