"""The inference worker's transaction pieces: a micro-batch on its way to its commit, the
committer thread, and which failures a retry cannot change (see :mod:`driftline.streams.worker`
for how they are used)."""

from __future__ import annotations

import functools
import queue
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition

from driftline.streams._worker_core import BatchOutcome

_TXN_TIMEOUT_S = 30.0
#: How long sending a batch's offsets may take before the producer is deemed stuck in librdkafka
#: (the call's own timeout is _TXN_TIMEOUT_S, but it is not always honoured).
_OFFSETS_STALL_S = _TXN_TIMEOUT_S + 10.0
#: The dead letter of a message whose own dead letter did not fit keeps this much of it.
_LAST_RESORT_BYTES = 65_536

#: Kafka errors a transaction fails with that a retry of the same records cannot change.
_PERMANENT_ERRORS = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.INVALID_MSG_SIZE,
        KafkaError.INVALID_RECORD,
        KafkaError.INVALID_TIMESTAMP,
        KafkaError._BAD_MSG,
        KafkaError._INVALID_ARG,
    }
)


def _permanent(exc: KafkaException) -> bool:
    """Whether a failed transaction would fail again with the same records."""
    err = exc.args[0] if exc.args else None
    return isinstance(err, KafkaError) and not err.fatal() and err.code() in _PERMANENT_ERRORS


@dataclass
class _Batch:
    """One micro-batch between its scoring and its commit."""

    outputs: list[tuple[str, str, list[Message], BatchOutcome | None]]
    offsets: list[TopicPartition]
    groups: list[list[Message]]
    received_ns: int
    messages: int


@dataclass
class _CommitState:
    """Where the committer is with one batch: a stuck call may be given up on only while the
    transaction cannot have been committed, i.e. before ``commit_transaction`` starts."""

    started: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)
    committing: bool = False
    abandoned: bool = False


class _Committer:
    """Runs commits in order on one daemon thread.

    Not a ``ThreadPoolExecutor``: its threads are joined at interpreter exit, so a thread stuck
    for good inside librdkafka would keep a stopped worker from ever exiting.
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]] | None] = (
            queue.SimpleQueue()
        )
        self._thread: threading.Thread | None = None

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="driftline-commit", daemon=True)
            self._thread.start()
        future: Future[Any] = Future()
        self._jobs.put((future, functools.partial(fn, *args)))
        return future

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            future, fn = job
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn())
                except BaseException as exc:
                    future.set_exception(exc)

    def shutdown(self, wait: bool = True) -> None:
        self._jobs.put(None)
        if wait and self._thread is not None:
            self._thread.join()


def _first_offsets(groups: Iterable[list[Message]]) -> list[TopicPartition]:
    first: dict[tuple[str, int], int] = {}
    for group in groups:
        for m in group:
            tp = (str(m.topic()), int(m.partition() or 0))
            off = int(m.offset() or 0)
            if off < first.get(tp, off + 1):
                first[tp] = off
    return [TopicPartition(t, p, o) for (t, p), o in first.items()]
