"""A pipeline without models on the real broker: V2 requests and responses written by another
system are paired into result events once each, across crashes in the middle of a
transaction; what cannot be paired or read is dead-lettered once, with its reason."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, Producer

from driftline.config import KafkaSettings, WorkerSettings
from driftline.kafka.admin import ensure_topics
from driftline.kafka.deadletter import read_dead_letter
from driftline.spec import spec_from_dict
from driftline.streams._worker_external import ExternalWorker
from driftline.streams.control import ControlPlane

pytestmark = pytest.mark.integration

WIDTH = 4


def _spec(prefix: str, fmt: str = "v2-pairs") -> dict[str, Any]:
    source: dict[str, Any] = {
        "topic": f"{prefix}.src-responses",
        "format": fmt,
        "model": "scorer",
        "pair_timeout": "2s",
    }
    if fmt == "v2-pairs":
        source["requests"] = f"{prefix}.src-requests"
    return {
        "name": "ext",
        "models": [],
        "source": source,
        "inputs": [{"name": "x", "shape": [WIDTH], "dtype": "float32"}],
        "outputs": [{"name": "p", "shape": [1], "dtype": "float32"}],
        "validations": {"low": "scorer.outputs[0][0] < 0.5"},
    }


def _deploy(kafka: KafkaSettings, doc: dict[str, Any]) -> dict[str, Any]:
    spec = spec_from_dict(doc)
    ensure_topics(kafka, [doc["source"]["topic"]], partitions=3)
    if doc["source"].get("requests"):
        ensure_topics(kafka, [doc["source"]["requests"]], partitions=3)
    ControlPlane(kafka).deploy(spec)
    return spec.to_canonical()


def _request(rid: str, i: int) -> bytes:
    row = [i / 100, 1.0, 2.0, 3.0]
    return orjson.dumps(
        {"id": rid, "inputs": [{"name": "x", "shape": [1, WIDTH], "datatype": "FP32", "data": row}]}
    )


def _response(rid: str, i: int) -> bytes:
    out = [{"name": "p", "shape": [1, 1], "datatype": "FP32", "data": [(i % 10) / 10]}]
    return orjson.dumps({"model_name": "scorer", "id": rid, "outputs": out})


def _read(kafka: KafkaSettings, topic: str) -> list[Any]:
    consumer = Consumer(
        kafka.client_config(
            **{
                "group.id": f"read-{time.monotonic_ns()}",
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
            }
        )
    )
    consumer.subscribe([topic])
    out: list[Any] = []
    quiet = time.monotonic()
    while time.monotonic() - quiet < 3:
        msgs = [m for m in consumer.consume(500, 0.5) if m.error() is None]
        if msgs:
            quiet = time.monotonic()
        out += msgs
    consumer.close()
    return out


class _Crash(Exception):
    pass


class _CrashingWorker(ExternalWorker):
    """Dies in the middle of its ``crash_at``-th transaction: results produced, not committed."""

    def __init__(self, *args: Any, crash_at: int, **kw: Any):
        super().__init__(*args, **kw)
        self.crash_at = crash_at
        self.calls = 0

    def _commit(self, built: Any, changes: Any, offsets: Any, messages: int) -> None:
        self.calls += 1
        if self.calls == self.crash_at:
            assert self._producer is not None
            self._producer.begin_transaction()
            for key, value, partition, _when in built.results:
                self._producer.produce(self.results_topic, value, key, partition=partition % 3)
            self._producer.flush(10)
            raise _Crash
        super()._commit(built, changes, offsets, messages)


def test_pairs_become_results_exactly_once_across_crashes(topic_prefix: str) -> None:
    kafka = KafkaSettings(topic_prefix=topic_prefix)
    doc = _spec(topic_prefix)
    canonical = _deploy(kafka, doc)
    n = 400
    ids = [f"r{i}" for i in range(n)]
    producer = Producer(kafka.client_config())
    # Requests first, their responses later and in another order: most pairs wait across
    # batches, so the pairing state is saved, crashed over and restored.
    for i, rid in enumerate(ids):
        producer.produce(doc["source"]["requests"], _request(rid, i), rid.encode())
    producer.produce(doc["source"]["requests"], _request("lonely-req", 0), b"lonely-req")
    # A second request with an id already waiting (same key, same partition: after it).
    producer.produce(doc["source"]["requests"], _request("lonely-req", 1), b"lonely-req")
    producer.flush(30)
    for i, rid in reversed(list(enumerate(ids))):
        producer.produce(doc["source"]["topic"], _response(rid, i), rid.encode())
    producer.produce(doc["source"]["topic"], _response("lonely-resp", 0), b"lonely-resp")
    producer.produce(doc["source"]["topic"], b"{not json", b"broken")
    producer.produce(doc["source"]["topic"], b'{"outputs": []}')  # no key, no id
    producer.flush(30)

    settings = WorkerSettings(worker_batch_size=37, worker_group=f"g{topic_prefix}")
    crashes = 0
    for crash_at in (2, 4, 3):
        worker = _CrashingWorker(kafka, settings, canonical, crash_at=crash_at)
        with pytest.raises(_Crash):
            worker.run(max_idle_s=10)
        crashes += 1
    # The last one runs to the end: the lonely messages wait out their pair timeout.
    final = ExternalWorker(kafka, settings, canonical)
    stats = final.run(max_idle_s=8)
    assert crashes == 3 and stats.results > 0

    results = [orjson.loads(m.value()) for m in _read(kafka, kafka.topic("ext", "results"))]
    counts = Counter(r["id"] for r in results)
    assert sorted(counts) == sorted(ids)
    assert set(counts.values()) == {1}, [k for k, v in counts.items() if v > 1]
    by_id = {r["id"]: r for r in results}
    for i, rid in enumerate(ids):
        r = by_id[rid]
        assert r["outputs"] == {"scorer": [[pytest.approx((i % 10) / 10, abs=1e-6)]]}
        assert r["inputs"][0] == pytest.approx(i / 100, abs=1e-6)
        assert r["check_failures"] == ([] if i % 10 < 5 else ["low"])
        assert r["pipeline"] == "ext" and r["spec"] == final.builder.version

    letters = _read(kafka, kafka.topic("ext", "deadletter"))
    got = Counter(
        (read_dead_letter(m.headers())["driftline-error"], (m.key() or b"").decode())
        for m in letters
    )
    assert got == Counter(
        {
            ("unpaired", "lonely-req"): 1,
            ("unpaired", "lonely-resp"): 1,
            ("duplicate_id", "lonely-req"): 1,
            ("malformed_json", "broken"): 1,
            ("missing_id", ""): 1,
        }
    )


def test_driftline_format_events_are_checked_and_forwarded(topic_prefix: str) -> None:
    kafka = KafkaSettings(topic_prefix=topic_prefix)
    doc = _spec(topic_prefix, fmt="driftline")
    doc["options"] = {"max_message_bytes": 4096}
    canonical = _deploy(kafka, doc)
    producer = Producer(kafka.client_config())
    t0 = int(time.time() * 1000) - 300_000
    for i in range(50):
        event = {"id": f"e{i}", "time": t0 + i, "inputs": [1.0, 2.0, 3.0, 4.0]}
        event["outputs"] = {"scorer": [[i / 50]]}
        producer.produce(doc["source"]["topic"], orjson.dumps(event), f"e{i}".encode())
    producer.produce(doc["source"]["topic"], b'{"id": "bad", "inputs": [1], "outputs": {}}')
    stale = {"id": "old", "time": 1_000_000, "inputs": [1, 2, 3, 4], "outputs": {"scorer": [[0]]}}
    producer.produce(doc["source"]["topic"], orjson.dumps(stale))
    huge = {"id": "huge", "inputs": [1, 2, 3, 4], "outputs": {"scorer": [[0]]}, "pad": "x" * 5000}
    producer.produce(doc["source"]["topic"], orjson.dumps(huge))
    producer.flush(30)
    worker = ExternalWorker(kafka, WorkerSettings(worker_group=f"g{topic_prefix}"), canonical)
    thread = threading.Thread(target=worker.run, kwargs={"max_idle_s": 3})
    thread.start()
    thread.join(120)
    assert not thread.is_alive()
    results = [orjson.loads(m.value()) for m in _read(kafka, kafka.topic("ext", "results"))]
    assert sorted(r["id"] for r in results) == sorted(f"e{i}" for i in range(50))
    # Each result's record timestamp is its event time: replay seeks by it.
    records = _read(kafka, kafka.topic("ext", "results"))
    assert sorted(m.timestamp()[1] for m in records) == [t0 + i for i in range(50)]
    assert sum(r["check_failures"] == ["low"] for r in results) == 25
    letters = _read(kafka, kafka.topic("ext", "deadletter"))
    reasons = sorted(read_dead_letter(m.headers())["driftline-error"] for m in letters)
    assert reasons == ["missing_tensor", "time_out_of_range", "too_large"]


def test_the_inference_worker_leaves_an_external_pipeline_to_its_own_worker(
    topic_prefix: str, tmp_path: Any
) -> None:
    from driftline.errors import DriftlineError
    from driftline.streams._worker_external import run_external
    from driftline.streams._worker_source import ControlSource

    kafka = KafkaSettings(topic_prefix=topic_prefix)
    canonical = _deploy(kafka, _spec(topic_prefix))
    source = ControlSource(kafka, tmp_path)
    try:
        # Nothing to load or serve: the worker of every pipeline neither crashes nor serves it.
        assert "ext" not in source.snapshot()
        assert source.external() == {"ext": canonical}
        assert "ext" in source.deployed()
    finally:
        source.close()
    with pytest.raises(DriftlineError, match="a worker of its own"):
        run_external(["ext", "other"], {"ext": canonical}, kafka, WorkerSettings())


def test_a_second_worker_fences_the_first_and_every_pair_is_served_once(
    topic_prefix: str,
) -> None:
    from driftline.errors import ServiceError

    kafka = KafkaSettings(topic_prefix=topic_prefix)
    doc = _spec(topic_prefix)
    canonical = _deploy(kafka, doc)
    producer = Producer(kafka.client_config())

    def send(ids: list[str]) -> None:
        for i, rid in enumerate(ids):
            producer.produce(doc["source"]["requests"], _request(rid, i), rid.encode())
            producer.produce(doc["source"]["topic"], _response(rid, i), rid.encode())
        producer.flush(30)

    settings = WorkerSettings(worker_group=f"g{topic_prefix}")
    first = ExternalWorker(kafka, settings, canonical)
    failures: list[BaseException] = []

    def run_first() -> None:
        try:
            first.run(max_idle_s=120)
        except ServiceError as exc:
            failures.append(exc)

    thread = threading.Thread(target=run_first)
    thread.start()
    send([f"a{i}" for i in range(50)])
    deadline = time.monotonic() + 60
    while first.stats.results < 50 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert first.stats.results == 50
    # The second takes over (its init_transactions fences the first); the first finds out at
    # its next transaction and stops.
    second = ExternalWorker(kafka, settings, canonical)
    done: list[Any] = []
    other = threading.Thread(target=lambda: done.append(second.run(max_idle_s=5)))
    other.start()
    time.sleep(1)
    send([f"b{i}" for i in range(50)])
    thread.join(120)
    other.join(120)
    assert not thread.is_alive() and not other.is_alive()
    assert failures and "another worker" in str(failures[0]), failures
    results = [orjson.loads(m.value()) for m in _read(kafka, kafka.topic("ext", "results"))]
    counts = Counter(r["id"] for r in results)
    assert sorted(counts) == sorted([f"a{i}" for i in range(50)] + [f"b{i}" for i in range(50)])
    assert set(counts.values()) == {1}


def test_a_payload_loggers_single_topic_is_paired_by_cloudevents_headers(
    topic_prefix: str,
) -> None:
    """KServe's payload logger, through a Knative Kafka sink in binary mode, writes a request
    and its response to one topic as CloudEvents: ``ce_id`` shared by both halves,
    ``ce_type`` saying which half, no Kafka key and no ``id`` in the bodies."""
    kafka = KafkaSettings(topic_prefix=topic_prefix)
    doc = _spec(topic_prefix)
    doc["source"]["requests"] = doc["source"]["topic"]
    canonical = _deploy(kafka, doc)
    producer = Producer(kafka.client_config())
    kinds = "org.kubeflow.serving.inference."
    for i in range(40):
        ce = [("ce_specversion", b"1.0"), ("ce_id", f"ev-{i}".encode())]
        request = orjson.loads(_request("unused", i))
        response = orjson.loads(_response("unused", i))
        del request["id"], response["id"]
        halves = [(orjson.dumps(request), b"request"), (orjson.dumps(response), b"response")]
        for value, kind in halves[:: 1 if i % 2 else -1]:  # responses first for half of them
            producer.produce(
                doc["source"]["topic"], value, headers=[*ce, ("ce_type", kinds.encode() + kind)]
            )
    producer.produce(doc["source"]["topic"], _request("x", 0), headers=[("ce_id", b"ev-x")])
    producer.flush(30)
    worker = ExternalWorker(kafka, WorkerSettings(worker_group=f"g{topic_prefix}"), canonical)
    thread = threading.Thread(target=worker.run, kwargs={"max_idle_s": 4})
    thread.start()
    thread.join(120)
    assert not thread.is_alive()
    results = [orjson.loads(m.value()) for m in _read(kafka, kafka.topic("ext", "results"))]
    assert sorted(r["id"] for r in results) == sorted(f"ev-{i}" for i in range(40))
    by_id = {r["id"]: r for r in results}
    for i in range(40):  # FP32 data, as the schema declares
        assert by_id[f"ev-{i}"]["outputs"]["scorer"] == [[pytest.approx((i % 10) / 10)]]
    assert all(by_id[f"ev-{i}"]["inputs"][0] == pytest.approx(i / 100) for i in range(40))
    letters = _read(kafka, kafka.topic("ext", "deadletter"))
    assert [read_dead_letter(m.headers())["driftline-error"] for m in letters] == ["unknown_side"]


def test_an_external_pipeline_writes_v2_responses_when_its_spec_asks(topic_prefix: str) -> None:
    """``options.result_format: v2`` holds for predictions made elsewhere too: each result is
    an Open Inference Protocol response, read back as driftline's event by one reader."""
    from driftline.streams._decode import read_result

    kafka = KafkaSettings(topic_prefix=topic_prefix)
    doc = _spec(topic_prefix)
    doc["options"] = {"result_format": "v2"}
    canonical = _deploy(kafka, doc)
    producer = Producer(kafka.client_config())
    for i in range(10):
        producer.produce(doc["source"]["requests"], _request(f"q{i}", i), f"q{i}".encode())
        producer.produce(doc["source"]["topic"], _response(f"q{i}", i), f"q{i}".encode())
    producer.flush(30)
    worker = ExternalWorker(kafka, WorkerSettings(worker_group=f"g{topic_prefix}"), canonical)
    thread = threading.Thread(target=worker.run, kwargs={"max_idle_s": 4})
    thread.start()
    thread.join(120)
    assert not thread.is_alive()
    values = [m.value() for m in _read(kafka, kafka.topic("ext", "results"))]
    responses = [orjson.loads(v) for v in values]
    assert sorted(r["id"] for r in responses) == sorted(f"q{i}" for i in range(10))
    assert {r["model_name"] for r in responses} == {"scorer"}
    assert {(o["name"], o["datatype"]) for r in responses for o in r["outputs"]} == {("p", "FP32")}
    events = {e["id"]: e for e in map(read_result, values)}
    for i in range(10):
        assert events[f"q{i}"]["outputs"]["scorer"] == [[pytest.approx((i % 10) / 10)]]
        assert events[f"q{i}"]["check_failures"] == ([] if i % 10 < 5 else ["low"])
