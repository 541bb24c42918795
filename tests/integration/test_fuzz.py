"""Fuzz: hostile messages on every topic while the worker, monitor and bridge run as users run them.

Generated messages (hypothesis strategies over each topic's schema, plus the poisons that once
stopped a process) are written to the requests, results, notifications and control topics,
interleaved with valid traffic. Afterwards every process is alive, every valid request was served
exactly once, no request was dead-lettered twice, every known poison was dead-lettered, and no
email went to an address the deployed spec does not name.

``DRIFTLINE_FUZZ_EXAMPLES`` sets how many hostile messages go to each topic and
``DRIFTLINE_FUZZ_SEED`` which ones (``make fuzz`` runs a longer round, on a new seed, than
``make test``); a failure names the seed that reproduces it.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from driftline import Client
from driftline.config import KafkaSettings, Settings
from driftline.demo import SmtpSink
from driftline.spec import spec_from_dict

from ._stack import Stack

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fraud"
HOSTILE = int(os.environ.get("DRIFTLINE_FUZZ_EXAMPLES", "60"))
SEED = int(os.environ.get("DRIFTLINE_FUZZ_SEED", "0"))
VALID = 40
WIDTH = 29
ALLOWED = "ops@example.com"

# -- strategies --------------------------------------------------------------------------------

leaf = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from([10**400, -(10**400), 1e308, 32503680000000, "\r\nBcc: v@evil.example"])
)
tree = st.recursive(
    leaf,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=16,
)
row = st.lists(st.floats(-5, 5, width=32), min_size=WIDTH, max_size=WIDTH)


def _dumps(value: Any) -> bytes:
    # json, not orjson: it writes integers beyond 64 bits and NaN, as a careless producer may
    return json.dumps(value).encode()


def _deep(depth: int) -> bytes:
    return b'{"tensor": ' + b"[" * depth + b"1.0" + b"]" * depth + b"}"


POISON_REQUESTS = [
    b"[" * 100_000,
    _deep(5_000),
    b'{"tensor": [[' + b"9" * 400 + b"]]}",
    _dumps({"tensor": [[0.1] * WIDTH], "time": 32503680000000}),
    b'{"tensor": [[1e400' + b", 0.1" * (WIDTH - 1) + b"]]}",
    b'{"tensor": "' + b"x" * 1_000_100 + b'"}',
    b"\xff\xfe\x00not utf-8",
]

hostile_request = st.one_of(
    st.binary(max_size=80),
    tree.map(_dumps),
    tree.map(lambda t: _dumps({"tensor": t})),
    st.tuples(row, tree).map(lambda rt: _dumps({"tensor": [rt[0]], "time": rt[1]})),
    st.tuples(row, tree).map(lambda rt: _dumps({"tensor": [rt[0]], "id": rt[1]})),
)


def _result(t: Any, outputs: Any) -> bytes:
    return _dumps(
        {
            "id": "x",
            "row": 0,
            "time": t,
            "pipeline": "fuzz",
            "spec": "s",
            "inputs": [0.0] * WIDTH,
            "outputs": outputs,
            "models": {"ccfraud": "x"},
        }
    )


POISON_RESULTS = [
    _result(32503680000000, {"ccfraud": [[0.5]]}),
    _result(10**400, {"ccfraud": [[0.5]]}),
    b"[" * 100_000,
]
hostile_result = st.one_of(
    st.binary(max_size=80),
    tree.map(_dumps),
    st.tuples(tree, tree).map(lambda a: _result(a[0], {"ccfraud": a[1]})),
)


def _notification(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "n-fuzz",
        "alert": "never",
        "pipeline": "fuzz",
        "state": "firing",
        "value": 1.0,
        "condition": "c",
        "window": {"start": 0, "end": 1},
        "at": 1,
        "severity": "critical",
        "notify": [f"email:{ALLOWED}"],
        "spec": "sha256:x",
    }
    base.update(fields)
    return base


POISON_NOTIFICATIONS = [
    _notification(id="n-spoof-1", notify=["email:attacker@evil.example"]),
    _notification(id="n-spoof-2", notify=["email:one@x.example,two@y.example"]),
    _notification(id="n-spoof-3", pipeline="made-up", alert="x"),
    _notification(id="n-bad-1", alert="x\r\nBcc: v@evil.example"),
    _notification(id="n-bad-2", value="abc"),
    _notification(id="n-bad-3", state=5),
    _notification(id=12345),
    _notification(id="n-bad-5", at=1e20),
    _notification(id="n-bad-6", window=[1, 2]),
]
hostile_notification = st.one_of(
    st.binary(max_size=80),
    tree.map(_dumps),
    st.dictionaries(st.sampled_from(sorted(_notification())), tree, min_size=1, max_size=4).map(
        lambda d: _dumps(_notification(**d))
    ),
    st.lists(
        st.sampled_from(
            [f"email:{ALLOWED}", "email:attacker@evil.example", "stdout", "webhook:x", "slack:y"]
        ),
        max_size=4,
    ).map(lambda targets: _dumps(_notification(id="n-targets", notify=targets))),
)
hostile_spec = st.one_of(st.binary(max_size=80), tree.map(_dumps))

# -- reading topics ----------------------------------------------------------------------------


def _read(settings: Settings, topic: str) -> list[Any]:
    c = Consumer(
        settings.kafka.client_config(
            **{
                "group.id": f"fuzz-read-{time.monotonic_ns()}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "enable.partition.eof": True,
            }
        )
    )
    try:
        md = c.list_topics(topic, timeout=10).topics[topic]
        parts = list(md.partitions)
        c.assign([TopicPartition(topic, p, 0) for p in parts])
        done: set[int] = set()
        out: list[Any] = []
        deadline = time.monotonic() + 30
        while len(done) < len(parts) and time.monotonic() < deadline:
            for m in c.consume(1000, 0.5):
                if m.error() is None:
                    out.append(m)
                elif m.error().code() == -191:  # _PARTITION_EOF
                    done.add(m.partition())
        return out
    finally:
        c.close()


def _json(m: Any) -> dict[str, Any]:
    try:
        doc = orjson.loads(m.value())
    except (orjson.JSONDecodeError, TypeError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _headers(m: Any) -> dict[str, str]:
    return {k: (v or b"").decode(errors="replace") for k, v in (m.headers() or [])}


def _source(h: dict[str, str]) -> tuple[str, int, int] | None:
    if "driftline-source-topic" in h:
        return (
            h["driftline-source-topic"],
            int(h["driftline-source-partition"]),
            int(h["driftline-source-offset"]),
        )
    return None


# -- the harness -------------------------------------------------------------------------------


def _examples(strategy: st.SearchStrategy[Any], n: int, seed: int) -> list[Any]:
    """``n`` examples of ``strategy``, from simple to complex, reproducible from ``seed``."""
    out: list[Any] = []

    @settings(
        max_examples=n,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @hypothesis_seed(seed)
    @given(strategy)
    def collect(value: Any) -> None:
        out.append(value)

    collect()
    return out[:n]


def test_hostile_messages_on_every_topic_stop_no_process(
    topic_prefix: str, redis_prefix: str, tmp_path: Path, unique: str
) -> None:
    print(f"reproduce with DRIFTLINE_FUZZ_SEED={SEED} DRIFTLINE_FUZZ_EXAMPLES={HOSTILE}")

    def some(strategy: st.SearchStrategy[bytes]) -> list[bytes]:
        return _examples(strategy, HOSTILE, SEED)

    requests_bad = POISON_REQUESTS + some(hostile_request)
    results_bad = POISON_RESULTS + some(hostile_result)
    notes_bad = [_dumps(n) for n in POISON_NOTIFICATIONS] + some(hostile_notification)
    specs_bad = _examples(hostile_spec, 10, SEED)
    rows = [[0.1 * ((i * 7 + j) % 11) for j in range(WIDTH)] for i in range(VALID)]

    settings_ = Settings(
        model_store=tmp_path / "store", kafka=KafkaSettings(topic_prefix=topic_prefix)
    )
    spec = spec_from_dict(
        {
            "name": "fuzz",
            "models": [{"name": "ccfraud", "path": str(EXAMPLE / "models" / "ccfraud.onnx")}],
            "alerts": {
                "never": {
                    "when": 'count(ccfraud.outputs[0][0] > 2, "1m", "1s") > 1000000',
                    "notify": [f"email:{ALLOWED}"],
                }
            },
            "assays": {
                "score": {
                    "iopath": "ccfraud.outputs[0][0]",
                    "baseline": {"file": "data/baseline.csv", "column": "score"},
                    "window": {"width": "1m"},
                }
            },
        },
        EXAMPLE,
    )
    Client(settings_).deploy(spec)
    k = settings_.kafka
    smtp = SmtpSink().start()
    env = dict(
        os.environ,
        DRIFTLINE_TOPIC_PREFIX=topic_prefix,
        DRIFTLINE_KEY_PREFIX=redis_prefix,
        DRIFTLINE_MODEL_STORE=str(settings_.model_store),
        DRIFTLINE_WORKER_ID=f"fuzz-{unique}",
        DRIFTLINE_MONITOR_GROUP=f"monitor-{unique}",
        DRIFTLINE_BRIDGE_GROUP=f"bridge-{unique}",
        DRIFTLINE_BRIDGE_GROUP_MS="0",
        DRIFTLINE_SMTP_URL=f"smtp://127.0.0.1:{smtp.port}",
        DRIFTLINE_SMTP_FROM="driftline@localhost",
    )
    env.pop("DRIFTLINE_METRICS_PORT", None)
    stack = Stack(env, tmp_path / "logs")
    producer = Producer(k.client_config(**{"message.max.bytes": 2_000_000}))
    requests, results = k.topic("fuzz", "requests"), k.topic("fuzz", "results")
    try:
        stack.start("worker", "worker")
        stack.start("monitor", "monitor")
        stack.start("bridge", "bridge", "--channels", "email,stdout")

        def send(topic: str, key: str, value: bytes) -> None:
            try:
                producer.produce(topic, value, key=key.encode(), partition=0)
            except BufferError:
                producer.flush(30)
                producer.produce(topic, value, key=key.encode(), partition=0)

        # interleave: valid, hostile, valid, hostile ... on each topic
        for i in range(max(len(requests_bad), VALID)):
            if i < VALID:
                send(requests, f"v{i}", orjson.dumps({"id": f"v{i}", "tensor": [rows[i]]}))
            if i < len(requests_bad):
                send(requests, f"h{i}", requests_bad[i])
        for i, value in enumerate(results_bad):
            send(results, f"r{i}", value)
        valid_notes = [
            _notification(
                id=f"n-valid-{i}", value=4242.25 + i, at=1_700_000_000_000 + i, spec=spec.version
            )
            for i in range(3)
        ]
        for i, value in enumerate(notes_bad):
            send(k.topic("notifications"), f"n{i}", value)
            if i < len(valid_notes):
                send(k.topic("notifications"), "fuzz/never", _dumps(valid_notes[i]))
        for i, value in enumerate(specs_bad):
            send(k.topic("pipelines"), f"fuzz-bad-{i}", value)
        assert producer.flush(60) == 0

        def served() -> bool:
            ids = {_json(m).get("id") for m in _read(settings_, results)}
            return all(f"v{i}" in ids for i in range(VALID))

        stack.wait("every valid request served", served, timeout_s=180)
        stack.wait(
            "the valid notifications delivered",
            lambda: all(
                any(f"{4242.25 + i:g}" in str(m) for m in smtp.snapshot())
                for i in range(len(valid_notes))
            ),
            timeout_s=120,
        )
        # after the poison, the monitor still closes windows of valid traffic
        stack.wait(
            "an assay window of the valid traffic",
            lambda: any(
                _json(m).get("pipeline") == "fuzz" for m in _read(settings_, k.topic("assays"))
            ),
            timeout_s=150,
        )
        time.sleep(3)
        assert not stack.dead(), stack.tails()
    finally:
        stack.stop()
        smtp.stop()
        tombstones = Producer(k.client_config())
        for i in range(len(specs_bad)):
            tombstones.produce(k.topic("pipelines"), None, key=f"fuzz-bad-{i}".encode())
        tombstones.flush(30)

    # every valid request served exactly once
    result_ids = Counter(_json(m).get("id") for m in _read(settings_, results))
    for i in range(VALID):
        assert result_ids[f"v{i}"] == 1, (f"v{i}", result_ids[f"v{i}"])

    # no message dead-lettered twice; every poison request and the far-future result dead-lettered
    sources = Counter(
        s for m in _read(settings_, k.topic("fuzz", "deadletter")) if (s := _source(_headers(m)))
    )
    assert all(n == 1 for n in sources.values()), [s for s, n in sources.items() if n > 1]
    request_offsets = {(m.key() or b"").decode(): m.offset() for m in _read(settings_, requests)}
    result_offsets = {(m.key() or b"").decode(): m.offset() for m in _read(settings_, results)}
    for i in range(len(POISON_REQUESTS)):
        assert (requests, 0, request_offsets[f"h{i}"]) in sources, f"poison request {i}"
    for i in range(VALID):
        assert (requests, 0, request_offsets[f"v{i}"]) not in sources, f"valid request {i}"
    assert (results, 0, result_offsets["r0"]) in sources, "the year-3000 result"

    # the bridge dead-lettered every poisoned notification and mailed only the declared address
    bridge_dead = Counter(
        s
        for m in _read(settings_, k.topic("notifications", "deadletter"))
        if (s := _source(_headers(m)))
    )
    note_offsets = {}
    for m in _read(settings_, k.topic("notifications")):
        note_offsets.setdefault((m.key() or b"").decode(), m.offset())
    for i in range(len(POISON_NOTIFICATIONS)):
        assert (k.topic("notifications"), 0, note_offsets[f"n{i}"]) in bridge_dead, (
            f"poisoned notification {i}: {POISON_NOTIFICATIONS[i]}"
        )
    for mail in smtp.snapshot():
        recipients = {a.strip().lower() for a in str(mail["To"]).split(",")}
        assert recipients == {ALLOWED}, mail["To"]
        assert mail["Bcc"] is None
