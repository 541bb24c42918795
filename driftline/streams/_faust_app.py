"""faust, confined: the monitor's app, its batch-draining consumer, and its run loop.

Everything faust- and aiokafka-specific of ``driftline monitor`` is here; the rest of the
monitor (:class:`~driftline.streams.monitor.Monitor`, the engines, replay) never imports
faust. See :mod:`driftline.streams.monitor` for the reading, batching and failure rules.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import os
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from driftline.config import MonitorSettings, Settings
from driftline.streams._monitor_redis import check_redis
from driftline.streams.monitor import (
    EXIT_BATCH_FAILED,
    RETRIES,
    STALLED,
    Monitor,
    transient,
)

__all__ = ["FetchBatch", "create_app", "run_monitor", "split_fetch"]

log = logging.getLogger("driftline.monitor")


def _faust_classes(fetch_wait_ms: int) -> Any:
    import faust
    from aiokafka.errors import IllegalStateError
    from faust.transport.drivers import aiokafka as fa

    class ConsumerThread(fa.AIOKafkaConsumerThread):
        def _create_worker_consumer(self, transport: Any) -> Any:
            consumer = super()._create_worker_consumer(transport)
            # Set before start(): aiokafka builds its fetcher from these in start().
            consumer._isolation_level = "read_committed"
            consumer._fetch_max_wait_ms = fetch_wait_ms
            return consumer

    class ReadCommittedConsumer(fa.Consumer):
        #: Set by the app: receives each fetch whole instead of one faust event per record.
        batch_sink: Callable[[FetchBatch], Awaitable[None]] | None = None

        def _new_consumer_thread(self) -> Any:
            return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

        async def _drain_messages(self, fetcher: Any) -> None:
            sink = self.batch_sink
            if sink is None:
                await super()._drain_messages(fetcher)
                return
            # faust's own loop wraps every record in a message, an event and two tasks, which
            # caps any agent near 13k events/s; the monitor only needs (partition, offset,
            # value) per record, so it takes aiokafka's fetch as it comes.
            stopped, fetcher_stopped = self._stopped.is_set, fetcher._stopped.is_set
            inbound = self.app.monitor.stream_inbound_time
            try:
                while not (stopped() or fetcher_stopped()):
                    records, active = await self._wait_next_records(1.0)
                    await asyncio.sleep(0)
                    if not records or self.should_stop:
                        continue
                    batch, rewind = split_fetch(records, active, self.flow_active)
                    if rewind:
                        await self._rewind(rewind)
                    now = time.monotonic()
                    for tp in batch.next_offsets:
                        inbound[tp] = now
                    if batch.next_offsets:
                        await sink(batch)
            except self.consumer_stopped_errors:
                if self.transport.app.should_stop:
                    return
                raise
            except asyncio.CancelledError:
                if self.transport.app.should_stop:
                    return
                raise

        async def _rewind(self, first_offsets: Mapping[Any, int]) -> None:
            # The fetch moved these partitions' positions past records nobody applied; later
            # batches would be applied and committed beyond them, losing them for good. faust's
            # own loop seeks to the committed offsets here, which leaves a partition without
            # any (a pipeline's new topic) past them.
            for tp, offset in first_offsets.items():
                try:
                    await self.seek(tp, offset)
                except IllegalStateError:
                    continue  # revoked: its next owner starts from the committed offset
                log.info("reading %s[%d] again from offset %d", tp.topic, tp.partition, offset)

        async def commit_processed(self, offsets: Mapping[Any, int]) -> None:
            """Commit offsets the batch agent has applied (revoked partitions are skipped)."""
            if offsets and not await self.maybe_wait_for_commit_to_finish():
                await self._commit_offsets(offsets)

    class ReadCommittedTransport(fa.Transport):
        Consumer = ReadCommittedConsumer

    class App(faust.App):
        Transport = ReadCommittedTransport

        def _new_transport(self) -> Any:
            return self.Transport(self.conf.broker_consumer, self)

    return App


@dataclass
class FetchBatch:
    """One fetch of the results topics: rows per topic and the next offset per partition."""

    rows: dict[str, list[tuple[int, int, bytes, int]]] = field(default_factory=dict)
    next_offsets: dict[Any, int] = field(default_factory=dict)


def split_fetch(
    records: Mapping[Any, Sequence[Any]], active: set[Any] | None, flow_active: bool
) -> tuple[FetchBatch, dict[Any, int]]:
    """Split one fetch into the batch the agent applies and the partitions to read again.

    ``records`` maps each partition to its fetched records (``partition``, ``offset``,
    ``value`` and ``timestamp`` each). While the flow is stopped (a rebalance is under way),
    or for a partition outside ``active``, nothing is applied: the second value maps such a
    partition to the offset of its first record, where the consumer must seek back.

    >>> from types import SimpleNamespace as R
    >>> from faust.types import TP
    >>> t0, t1 = TP("t", 0), TP("t", 1)
    >>> recs = {t0: [R(partition=0, offset=5, value=b"a", timestamp=1),
    ...              R(partition=0, offset=6, value=b"b", timestamp=2)],
    ...         t1: [R(partition=1, offset=9, value=b"c", timestamp=3)]}
    >>> batch, rewind = split_fetch(recs, {t0}, flow_active=True)
    >>> batch.rows, batch.next_offsets[t0], rewind[t1]
    ({'t': [(0, 5, b'a', 1), (0, 6, b'b', 2)]}, 7, 9)
    >>> sorted(split_fetch(recs, None, flow_active=False)[1].values())
    [5, 9]
    """
    batch = FetchBatch()
    rewind: dict[Any, int] = {}
    for tp, recs in records.items():
        if not recs:
            continue
        if not flow_active or (active is not None and tp not in active):
            rewind[tp] = recs[0].offset
            continue
        batch.rows.setdefault(tp.topic, []).extend(
            [(r.partition, r.offset, r.value, r.timestamp) for r in recs]
        )
        batch.next_offsets[tp] = recs[-1].offset + 1
    return batch, rewind


def create_app(monitor: Monitor, follower: Any | None = None) -> Any:
    """The faust app: one task applying each results fetch, one timer for control and idle close."""
    ms = monitor.msettings
    k = monitor.settings.kafka
    App = _faust_classes(ms.monitor_fetch_wait_ms)
    # faust insists on a data directory even without tables; keep one per group, reused.
    datadir = ms.monitor_datadir or Path(tempfile.gettempdir()) / f"driftline-{ms.monitor_group}"
    app = App(
        ms.monitor_group,
        broker=[f"kafka://{h}" for h in k.bootstrap_servers.split(",")],
        value_serializer="raw",
        key_serializer="raw",
        web_enabled=False,
        datadir=str(datadir),
        topic_allow_declare=False,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        broker_commit_every=1000,
        broker_commit_interval=1.0,
        stream_buffer_maxsize=max(4096, ms.monitor_batch_size * 2),
        broker_max_poll_records=ms.monitor_batch_size,
        broker_session_timeout=10.0,
        broker_heartbeat_interval=1.0,
        producer_acks=-1,
    )
    control_topic = k.topic("pipelines")
    from driftline.streams.control import ensure_topics

    # faust needs a non-empty subscription; the control topic always exists.
    ensure_topics(k, [control_topic], partitions=1, compacted=True)
    results = app.topic(
        control_topic, *monitor.topics, value_serializer="raw", key_serializer="raw"
    )
    # faust waits 45 s before acting on a subscription change; pipelines come and go rarely,
    # and a new pipeline should be watched at once.
    app.topics._resubscribe_sleep_lock_seconds = 0.5
    follower_ref: dict[str, Any] = {"f": follower}

    def sync_topics() -> None:
        wanted = [control_topic, *monitor.topics]
        changed = False
        # Change the topic list of every channel that follows the control topic.
        for channel in [results, *app.topics]:
            topics = list(getattr(channel, "topics", ()) or ())
            if control_topic in topics and topics != wanted:
                channel.topics = wanted
                changed = True
        if changed:
            app.topics._flag_changes()

    # The results topics are read by the consumer's batch drain (see ``_faust_classes``): the
    # task below receives one batch per fetch, never one event per record.
    async def until_done(work: Callable[[], object]) -> None:
        """Run ``work`` until it succeeds, waiting out Redis or Kafka being unreachable.

        The batch in hand is neither skipped nor committed meanwhile; the consumer keeps its
        group membership (this awaits), and the offset guard makes a half-done attempt safe
        to repeat.
        """
        delay, failures = 0.1, 0
        while True:
            try:
                work()
            except Exception as exc:
                cause = transient(exc)
                if cause is None:
                    raise
                failures += 1
                RETRIES.labels(cause).inc()
                STALLED.set(1)
                if failures == 1 or failures % 20 == 0:
                    log.warning(
                        "%s unreachable (%s); retrying the batch (attempt %d)",
                        cause,
                        exc,
                        failures + 1,
                    )
                await asyncio.sleep(delay)
                delay = min(2 * delay, 5.0)
                continue
            if failures:
                log.warning("going on after %d failed attempts", failures)
                STALLED.set(0)
            return

    # A plain queue, not a faust channel: faust clears its channels' queues whenever it resumes
    # the flow after a rebalance, and its streams skip events of an older generation. A fetch
    # that lands in that window (one partition with records, read before recovery resumes the
    # flow) was dropped while the consumer's position had moved past it; a partition without
    # committed offsets (a pipeline's new topic) was then never read again, and one with them
    # lost the records for good once a later batch was committed. The offset guard makes a
    # batch of a partition revoked meanwhile harmless, and revoked partitions are not committed.
    fetches: asyncio.Queue[FetchBatch] = asyncio.Queue(maxsize=4)
    pending: dict[Any, int] = {}
    committed_at = [time.monotonic()]

    async def to_agent(batch: FetchBatch) -> None:
        await fetches.put(batch)

    app.consumer.batch_sink = to_agent
    app.topics.add(results)  # subscribed by the conductor, drained by the batch drain

    async def apply(batch: FetchBatch) -> None:
        for topic, rows in batch.rows.items():
            if topic == control_topic:
                continue
            for i in range(0, len(rows), ms.monitor_batch_size):
                chunk = rows[i : i + ms.monitor_batch_size]
                try:
                    await until_done(functools.partial(monitor.handle, topic, chunk))
                except Exception:
                    # A new process re-reads the batch (nothing past it is committed) and
                    # the offset guard keeps what was applied.
                    _exit_on_bug(f"a batch of {topic}")
        # A topic no engine watches (its spec waits for Redis, or was just replaced)
        # keeps its committed offsets, so its records are read again once it is watched.
        pending.update(
            {tp: o for tp, o in batch.next_offsets.items() if tp.topic in monitor.by_topic}
        )
        await commit_pending()

    @app.task
    async def consume() -> None:
        while True:
            batch = await fetches.get()
            try:
                await apply(batch)
            except Exception:
                _exit_on_bug("committing the applied offsets")

    async def commit_pending() -> None:
        # Redis holds the exact state (offset guard); the group's committed offsets only say
        # where to resume (and what lag operators see), so once a second is enough.
        if pending and time.monotonic() - committed_at[0] >= 1.0:
            offsets = dict(pending)
            pending.clear()
            committed_at[0] = time.monotonic()
            await app.consumer.commit_processed(offsets)

    @app.task
    async def settle_heap() -> None:
        # What is alive once the app runs (modules, faust, the engines) lives as long as the
        # process. Unfrozen, every full collection walks it again, and the per-event objects of
        # each batch trigger many: in bench/monitor.py this alone took (b) from 84k to 135k
        # events/s.
        gc.freeze()

    deferred = [False]

    def follow_and_close() -> None:
        f = follower_ref["f"]
        if f is None:
            from driftline.streams.control import Follower

            f = follower_ref["f"] = Follower(k)
            for name, canonical in sorted(f.snapshot().items()):
                monitor.apply_spec(name, canonical)
        else:
            for name, canonical in f.poll(0):
                monitor.apply_spec(name, canonical)
        monitor.retry_waiting()
        sync_topics()
        monitor.tick()

    @app.timer(interval=0.25)
    async def housekeeping() -> None:
        try:
            follow_and_close()
            deferred[0] = False
        except Exception as exc:  # the next tick tries again
            if transient(exc) is None:
                _exit_on_bug("housekeeping (following specs, idle close)")
            if not deferred[0]:
                log.warning("housekeeping deferred until Redis and Kafka answer: %s", exc)
            deferred[0] = True
        await commit_pending()

    return app


def _exit_on_bug(where: str) -> NoReturn:
    """End the process on an unexpected error (called from an ``except`` block).

    faust would restart a crashed agent or timer and carry on without what failed; a restart
    of the whole process reads again from the last committed offsets instead.
    """
    log.critical(
        "unexpected error in %s; exiting so that a restart does it again", where, exc_info=True
    )
    logging.shutdown()
    os._exit(EXIT_BATCH_FAILED)


def run_monitor(
    settings: Settings, msettings: MonitorSettings | None = None, metrics_port: int | None = None
) -> None:
    """Run the monitor until interrupted (the ``driftline monitor`` command)."""
    import faust

    from driftline.metrics import start_metrics_server

    ms = msettings or MonitorSettings()
    port = metrics_port if metrics_port is not None else ms.monitor_metrics_port
    if port is not None:
        start_metrics_server(port)
    monitor = Monitor(settings, ms)
    check_redis(monitor.client, settings.redis.key_prefix)
    app = create_app(monitor)
    worker = faust.Worker(app, loglevel=settings.log_level.lower())
    try:
        worker.execute_from_commandline()
    finally:
        monitor.close_all()
