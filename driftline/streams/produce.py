"""Client helpers: send requests to a pipeline, wait for their results, read its latest results.

These back ``driftline infer``, ``driftline produce`` and ``driftline logs`` and the SDK's
``Pipeline.infer``, ``infer_from_file`` and ``logs``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from driftline.config import KafkaSettings
from driftline.errors import DriftlineError, ServiceError
from driftline.streams._decode import read_result

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "DeadLettered",
    "infer",
    "latest_results",
    "produce_file",
    "read_request_file",
    "results_frame",
]


class DeadLettered(DriftlineError):
    """The worker refused a request; ``reason`` is its dead-letter reason code."""

    def __init__(self, reason: str, detail: str):
        self.reason = reason
        self.detail = detail
        super().__init__(f"request rejected ({reason}): {detail}")


def read_request_file(path: Path) -> dict[str, Any]:
    """Read one request: a JSON object (``{"tensor": [[...]]}``) or a bare list of rows."""
    try:
        doc = orjson.loads(Path(path).read_bytes())
    except FileNotFoundError:
        raise DriftlineError(f"--file {str(path)!r}: no such file") from None
    except orjson.JSONDecodeError as exc:
        raise DriftlineError(f"--file {str(path)!r}: not valid JSON ({exc})") from None
    if isinstance(doc, list):
        doc = {"tensor": doc}
    if not isinstance(doc, dict):
        raise DriftlineError(
            f'--file {str(path)!r}: expected a JSON object like {{"tensor": [[...]]}}'
        )
    return doc


def _consumer(kafka: KafkaSettings) -> Consumer:
    return Consumer(
        kafka.client_config(
            **{
                "group.id": f"driftline-client-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "auto.offset.reset": "earliest",
                "enable.partition.eof": False,
            }
        )
    )


def _partitions(consumer: Consumer, topic: str) -> list[int]:
    try:
        md = consumer.list_topics(topic, timeout=10)
    except KafkaException as exc:
        raise ServiceError(f"Kafka: {exc}") from exc
    tmd = md.topics.get(topic)
    if tmd is None or tmd.error is not None or not tmd.partitions:
        raise DriftlineError(
            f"topic {topic} does not exist; is the pipeline deployed (`driftline pipelines`)?"
        )
    return sorted(tmd.partitions)


def _ends(consumer: Consumer, topic: str, parts: list[int]) -> dict[int, tuple[int, int]]:
    return {
        p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)
        for p in parts
    }


def _rows_of(request: dict[str, Any]) -> int:
    """Rows a request holds (results to wait for), in any form the worker reads.

    >>> _rows_of({"tensor": [[1], [2]]}), _rows_of({"tensor": [1, 2], "shape": [1, 2]})
    (2, 1)
    >>> _rows_of({"inputs": [{"name": "x", "shape": [3, 1], "datatype": "FP32", "data": []}]})
    3
    >>> _rows_of({"inputs": {"age": [1, 2], "city": ["a", "b"]}})
    2
    """
    try:
        if "tensor" in request:
            if isinstance(request.get("shape"), list) and request["shape"]:
                return max(int(request["shape"][0]), 1)
            tensor = request["tensor"]
            return len(tensor) if isinstance(tensor, list) and tensor else 1
        inputs = request.get("inputs")
        first = inputs[0] if isinstance(inputs, list) else next(iter(inputs.values()))  # type: ignore[union-attr]
        if isinstance(first, dict):
            return max(int(first["shape"][0]), 1)
        return len(first) if isinstance(first, list) and first else 1
    except (AttributeError, KeyError, IndexError, StopIteration, TypeError, ValueError):
        return 1  # the worker dead-letters it; one answer is all there is


def _send_one(kafka: KafkaSettings, topic: str, value: bytes, key: bytes, timeout: float) -> None:
    """Produce one request and wait for the broker's answer, naming the limit it exceeds."""
    errors: list[Any] = []
    # librdkafka's own 1,000,000-byte limit would refuse a large request before the broker
    # sees it; the topic's max.message.bytes (options.max_message_bytes) is the real bound.
    producer = Producer(
        kafka.client_config(
            **{"linger.ms": 0, "message.max.bytes": max(1_000_000, len(value) + 65_536)}
        )
    )
    try:
        producer.produce(topic, value, key, on_delivery=lambda err, _m: errors.append(err))
    except KafkaException as exc:
        errors.append(exc.args[0])
    if producer.flush(timeout) != 0:
        raise ServiceError(f"could not send the request to {topic}")
    err = next((e for e in errors if e is not None), None)
    if err is None:
        return
    if getattr(err, "code", lambda: None)() == KafkaError.MSG_SIZE_TOO_LARGE:
        raise DriftlineError(
            f"the request is {len(value)} bytes, more than {topic} takes; raise the pipeline's "
            "options.max_message_bytes and redeploy, send the tensor as V2 base64 data, or "
            "split the request"
        )
    raise ServiceError(f"could not send the request to {topic}: {err}")


def infer(
    kafka: KafkaSettings,
    pipeline: str,
    request: dict[str, Any],
    timeout: float = 30.0,
) -> list[dict[str, Any]]:
    """Send one request and return its result events (one per row), in row order.

    Raises :class:`DeadLettered` when the worker rejects the request, and
    :class:`~driftline.errors.ServiceError` when no result arrives within ``timeout`` seconds.
    """
    request = dict(request)
    if "tensor" in request and hasattr(request["tensor"], "tolist"):
        request["tensor"] = request["tensor"].tolist()
    rid = str(request.setdefault("id", f"r-{uuid.uuid4().hex[:16]}"))
    expected = _rows_of(request)
    results_topic = kafka.topic(pipeline, "results")
    dead_topic = kafka.topic(pipeline, "deadletter")
    requests_topic = kafka.topic(pipeline, "requests")
    consumer = _consumer(kafka)
    try:
        # Start reading where the topics end now, so only this request's answers are scanned.
        assignment = []
        for topic in (results_topic, dead_topic):
            parts = _partitions(consumer, topic)
            for p, (_low, high) in _ends(consumer, topic, parts).items():
                assignment.append(TopicPartition(topic, p, high))
        consumer.assign(assignment)
        _partitions(consumer, requests_topic)
        _send_one(kafka, requests_topic, orjson.dumps(request), rid.encode(), timeout)
        found: dict[int, dict[str, Any]] = {}
        deadline = time.monotonic() + timeout
        while len(found) < expected and time.monotonic() < deadline:
            for m in consumer.consume(500, 0.2):
                if m.error() is not None or m.key() != rid.encode():
                    continue
                if m.topic() == dead_topic:
                    raw: list[Any] = list(m.headers() or [])
                    headers = {
                        k: v.decode() if isinstance(v, bytes) else str(v or "") for k, v in raw
                    }
                    raise DeadLettered(
                        headers.get("driftline-error", "unknown"),
                        headers.get("driftline-detail", ""),
                    )
                event = read_result(m.value() or b"{}")
                if event.get("id") == rid:
                    found[int(event.get("row", 0))] = event
        if len(found) < expected:
            raise ServiceError(
                f"no result for request {rid} on {results_topic} within {timeout:g} s; "
                "is a worker running (`driftline worker`)?"
            )
        return [found[r] for r in sorted(found)]
    finally:
        consumer.close()


def _request_lines(path: Path) -> Iterator[tuple[bytes | None, bytes]]:
    with Path(path).open("rb") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                doc = orjson.loads(line)
            except orjson.JSONDecodeError:
                # Sent as is: the worker dead-letters it, which is what a test load may want.
                yield None, line
                continue
            if isinstance(doc, list):
                # A bare row (or list of rows) per line.
                rows = doc if doc and isinstance(doc[0], list) else [doc]
                yield None, orjson.dumps({"tensor": rows})
                continue
            rid = doc.get("id") if isinstance(doc, dict) else None
            yield (str(rid).encode() if rid is not None else None), line


def produce_file(
    kafka: KafkaSettings,
    pipeline: str,
    path: Path,
    rate: float | None = None,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Send every request of a JSON-lines file; returns how many were sent.

    Each line is a request object, a row (list of numbers) or a list of rows. ``rate`` limits
    the sending to that many requests per second.
    """
    if rate is not None and rate <= 0:
        raise DriftlineError(f"--rate {rate}: must be a positive number of requests per second")
    if not Path(path).is_file():
        raise DriftlineError(f"--file {str(path)!r}: no such file")
    topic = kafka.topic(pipeline, "requests")
    probe = _consumer(kafka)
    try:
        _partitions(probe, topic)
    finally:
        probe.close()
    return produce_paced(kafka, topic, _request_lines(path), rate, progress, "request")


def produce_paced(
    kafka: KafkaSettings,
    topic: str,
    records: Iterable[tuple[bytes | None, bytes]],
    rate: float | None = None,
    progress: Callable[[int], None] | None = None,
    what: str = "record",
) -> int:
    """Send ``(key, value)`` records to ``topic`` at most ``rate`` a second; returns how many.

    Waits when the producer's queue is full rather than failing, and reports progress every
    1,000 records; :class:`ServiceError` when not every record was delivered.
    """
    producer = Producer(kafka.client_config(**{"linger.ms": 5, "enable.idempotence": True}))
    sent = 0
    start = time.monotonic()
    for key, value in records:
        while True:
            try:
                producer.produce(topic, value, key)
                break
            except BufferError:
                producer.poll(0.05)
        sent += 1
        if rate is not None and sent % max(1, int(rate // 100)) == 0:
            # Pace in small steps: ahead of schedule, sleep until the schedule catches up.
            ahead = sent / rate - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)
        if sent % 1000 == 0:
            producer.poll(0)
            if progress is not None:
                progress(sent)
    if producer.flush(60) != 0:
        raise ServiceError(f"could not deliver every {what} to {topic}")
    return sent


def latest_results(
    kafka: KafkaSettings,
    pipeline: str,
    limit: int = 100,
    failures_only: bool = False,
    scan: int = 100_000,
) -> list[dict[str, Any]]:
    """The latest ``limit`` result events of a pipeline, oldest first.

    With ``failures_only``, only results with check failures, looking back at most ``scan``
    results per partition.
    """
    if limit < 1:
        raise DriftlineError(f"--limit {limit}: must be at least 1")
    topic = kafka.topic(pipeline, "results")
    consumer = _consumer(kafka)
    try:
        parts = _partitions(consumer, topic)
        ends = _ends(consumer, topic, parts)
        span = scan if failures_only else limit
        assignment = [
            TopicPartition(topic, p, max(low, high - span)) for p, (low, high) in ends.items()
        ]
        todo = {p for p, (low, high) in ends.items() if high > low}
        consumer.assign(assignment)
        events: list[dict[str, Any]] = []
        quiet_deadline = time.monotonic() + 10
        while todo and time.monotonic() < quiet_deadline:
            msgs = consumer.consume(5000, 0.5)
            for m in msgs:
                if m.error() is not None:
                    continue
                event = read_result(m.value() or b"{}")
                if not failures_only or event.get("check_failures"):
                    events.append(event)
            if msgs:
                quiet_deadline = time.monotonic() + 2
            # Transaction markers take offsets too: done when a partition's position hits the end.
            for tp in consumer.position([TopicPartition(topic, p) for p in list(todo)]):
                if tp.offset >= ends[tp.partition][1]:
                    todo.discard(tp.partition)
    finally:
        consumer.close()
    events.sort(key=lambda e: (e.get("time", 0), str(e.get("id")), e.get("row", 0)))
    return events[-limit:]


def results_frame(results: list[dict[str, Any]]) -> pd.DataFrame:
    """Results as a table like the notebooks' ``pipeline.logs()``.

    Columns: ``time`` (UTC timestamps), ``id``, ``row``, ``output`` (the champion's first
    output), ``input``, ``anomalies`` (count of failed checks), ``check_failures``,
    ``outputs`` (every model), ``elapsed_ns``, ``models``, ``spec``.
    """
    import pandas as pd

    rows = []
    for e in results:
        outputs = e.get("outputs") or {}
        champion: list[Any] = next(iter(outputs.values()), [])
        rows.append(
            {
                "time": e.get("time"),
                "id": e.get("id"),
                "row": e.get("row"),
                "output": champion[0] if champion else None,
                "input": e.get("inputs"),
                "anomalies": len(e.get("check_failures") or []),
                "check_failures": list(e.get("check_failures") or []),
                "outputs": outputs,
                "elapsed_ns": e.get("elapsed_ns"),
                "models": e.get("models"),
                "spec": e.get("spec"),
            }
        )
    frame = pd.DataFrame(
        rows,
        columns=[
            "time",
            "id",
            "row",
            "output",
            "input",
            "anomalies",
            "check_failures",
            "outputs",
            "elapsed_ns",
            "models",
            "spec",
        ],
    )
    frame["time"] = pd.to_datetime(frame["time"], unit="ms", utc=True)
    return frame
