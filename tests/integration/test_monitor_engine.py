"""The monitor engine on real Redis, fed directly (no Kafka): windows, lateness, alerts, assays."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from driftline.detectors import Baseline
from driftline.expressions import alert_condition, parse
from driftline.streams._engine import (
    AlertPlan,
    AssayPlan,
    Batch,
    DetectorBaseline,
    PipelineEngine,
    ScanPlan,
    StateLost,
)
from driftline.streams.state import RedisState

pytestmark = pytest.mark.integration

T0 = 1_700_000_000_000  # a multiple of 1000


def _event(t: int, score: float, i: int = 0) -> bytes:
    return orjson.dumps(
        {
            "id": f"r{i}",
            "row": 0,
            "time": t,
            "pipeline": "fraud",
            "spec": "s",
            "inputs": [score, 1.0],
            "outputs": {"m": [[score]]},
            "models": {"m": "x"},
        }
    )


def _engine(redis_client, prefix, partitions=1, lateness=0, assays=()):  # type: ignore[no-untyped-def]
    cond = alert_condition(parse("count(m.outputs[0][0] > 0.9, '3s', '1s') >= 2"))
    alert = AlertPlan("high", cond, severity="critical", notify=("stdout",))
    state = RedisState(redis_client, prefix, "fraud")
    return PipelineEngine(
        "fraud", "sha256:x", ["m"], [alert], list(assays), state, partitions, lateness
    )


def _batch(events, partition=0, first_offset=0, topic="res"):  # type: ignore[no-untyped-def]
    return Batch.of(topic, [(partition, first_offset + i, e) for i, e in enumerate(events)])


def test_sliding_count_alert_fires_and_resolves_once(redis_client, redis_prefix):
    eng = _engine(redis_client, redis_prefix)
    # seconds 0..9; high scores at seconds 3 and 4 only
    scores = [0.1, 0.1, 0.1, 0.95, 0.95, 0.1, 0.1, 0.1, 0.1, 0.1]
    events = [_event(T0 + 1000 * s + 10, x, s) for s, x in enumerate(scores)]
    rep = eng.ingest(_batch(events))
    assert rep.accepted == 10 and not rep.late and not rep.dead
    closed = eng.close()
    eng.commit(closed)
    # watermark = T0+9010 → windows ending T0+1000 .. T0+9000; counts over 3 s width
    notes = [(n.state, n.at - T0, n.value) for n in closed.notifications]
    assert notes == [("firing", 5000, 2.0), ("resolved", 7000, 1.0)]
    assert closed.notifications[0].window == {"start": T0 + 2000, "end": T0 + 5000}
    # nothing new: closing again emits nothing
    assert not eng.close().notifications
    # redelivery of the same batch changes nothing
    assert eng.ingest(_batch(events)).applied == 0


def test_late_events_are_separated_and_dead_letters_kept(redis_client, redis_prefix):
    eng = _engine(redis_client, redis_prefix, lateness=2000)
    events = [
        _event(T0 + 10_000, 0.95),
        _event(T0 + 8_500, 0.95),
        _event(T0 + 7_000, 0.95),
        b"not json",
        orjson.dumps({"time": "x", "outputs": {}}),
    ]
    rep = eng.ingest(_batch(events))
    assert rep.accepted == 2
    assert [off for _, off, _ in rep.late] == [2]
    assert sorted(off for _, off, _, _ in rep.dead) == [3, 4]


def test_events_set_aside_are_handed_over_before_the_batch_is_applied(redis_client, redis_prefix):
    """Once Redis holds a batch's offsets a redelivery skips it, so a late or malformed event
    must be published first: when that fails, nothing of the batch is applied."""
    eng = _engine(redis_client, redis_prefix, lateness=2000)
    events = [_event(T0 + 10_000, 0.95), _event(T0 + 7_000, 0.95), b"not json"]
    batch = _batch(events)

    def refuse(rep: Any) -> None:
        raise ConnectionError("the dead-letter topic is unreachable")

    with pytest.raises(ConnectionError):
        eng.ingest(batch, refuse)
    assert eng.state.snapshot().offsets == {}
    handed: list[Any] = []
    rep = eng.ingest(batch, handed.append)
    assert rep.accepted == 1
    assert [(len(r.late), len(r.dead)) for r in handed] == [(1, 1)]
    assert eng.state.snapshot().offsets == {"res:0": 2}
    # a batch with nothing to set aside calls nobody
    assert eng.ingest(_batch([_event(T0 + 11_000, 0.1)], first_offset=3), refuse).accepted == 1


def test_a_monitor_taking_over_a_partition_judges_lateness_by_what_the_other_applied(
    redis_client, redis_prefix
):
    before = _engine(redis_client, redis_prefix, lateness=1000)  # its view: nothing applied
    other = _engine(redis_client, redis_prefix, lateness=1000)
    other.ingest(_batch([_event(T0 + 9_000, 0.95), _event(T0 + 20_000, 0.1)]))
    # the partition moves to the first engine; its next events continue the offsets
    rep = before.ingest(
        _batch([_event(T0 + 10_000, 0.95), _event(T0 + 20_500, 0.95)], first_offset=2)
    )
    assert [off for _, off, _ in rep.late] == [2]  # 10,000 is before 20,000 - 1,000
    held = {
        s - T0: int(f.get(f"c:{before.alerts[0].counter}", 0))
        for s, f in before.state.read_buckets(1000, 0, 2**62)
    }
    assert held == {9_000: 1, 20_000: 1}
    assert before.offsets == {"res:0": 3} and before.max_times == {0: T0 + 20_500}


def test_watermark_waits_for_every_partition(redis_client, redis_prefix):
    eng = _engine(redis_client, redis_prefix, partitions=2)
    eng.ingest(_batch([_event(T0 + 5000, 0.95), _event(T0 + 5100, 0.95)], partition=0))
    assert eng.close().marks == []
    eng.ingest(_batch([_event(T0 + 3000, 0.1)], partition=1))
    closed = eng.close()
    assert closed.watermark == T0 + 3000
    assert closed.marks == []  # the oldest bucket (3000..4000) is still open
    eng.ingest(_batch([_event(T0 + 6000, 0.1)], partition=1, first_offset=1))
    closed = eng.close()
    assert closed.watermark == T0 + 5100
    assert closed.notifications == []  # the two high scores are in the bucket 5000..6000
    assert closed.marks[0][1] == T0 + 5000
    eng.commit(closed)
    closed = eng.close(floor=T0 + 6000)
    assert [(n.state, n.at - T0) for n in closed.notifications] == [("firing", 6000)]


def test_lost_state_raises(redis_client, redis_prefix):
    eng = _engine(redis_client, redis_prefix)
    eng.ingest(_batch([_event(T0, 0.1)]))
    redis_client.delete(eng.state.key("off"))
    with pytest.raises(StateLost):
        eng.ingest(_batch([_event(T0 + 1, 0.1)], first_offset=1))


def test_closing_on_a_redis_behind_the_engine_raises_instead_of_emitting(
    redis_client, redis_prefix
):
    eng = _engine(redis_client, redis_prefix)
    eng.ingest(_batch([_event(T0 + i * 100, 0.1, i) for i in range(30)]))
    eng.commit(eng.close())
    redis_client.hset(eng.state.key("off"), "res:0", 12)  # back from an older snapshot
    with pytest.raises(StateLost) as lost:
        eng.close(floor=T0 + 10_000)
    assert lost.value.partitions == [0]


def test_assay_scores_equal_the_detector_offline(redis_client, redis_prefix):
    rng = np.random.default_rng(3)
    base = Baseline.from_values(rng.normal(size=2000))
    plan = AssayPlan(
        "drift",
        parse("m.outputs[0][0]"),
        DetectorBaseline(base, "psi", {"warning": 0.1, "alert": 0.25}),
        4000,
        2000,
        "psi",
    )
    eng = _engine(redis_client, redis_prefix, assays=[plan])
    values = np.concatenate([rng.normal(size=300), rng.normal(1.5, 1, size=300)])
    times = T0 + np.sort(rng.integers(0, 12_000, size=600))
    events = [
        _event(int(t), float(v), i) for i, (t, v) in enumerate(zip(times, values, strict=True))
    ]
    for k in range(0, 600, 97):  # uneven batches
        eng.ingest(_batch(events[k : k + 97], first_offset=k))
    closed = eng.close(floor=T0 + 12_000)
    eng.commit(closed)
    assert [r.window_end - T0 for r in closed.assays] == [2000, 4000, 6000, 8000, 10000, 12000]
    for r in closed.assays:
        inside = (times >= r.window_start) & (times < r.window_end)
        offline = base.compare(
            values[inside], metric="psi", thresholds={"warning": 0.1, "alert": 0.25}
        )
        assert r.count == int(inside.sum())
        assert r.score == pytest.approx(offline.score, rel=1e-12)
        assert r.status == offline.status
    assert any(n.kind == "assay" and n.state == "firing" for n in closed.notifications)


def test_assays_of_one_feature_share_counts_and_match_the_detector_at_every_close(
    redis_client, redis_prefix
):
    rng = np.random.default_rng(5)
    base = Baseline.from_values(rng.normal(size=2000))
    out, inp = parse("m.outputs[0][0]"), parse("m.inputs[0][1]")
    plans = [
        AssayPlan("p", out, DetectorBaseline(base, "psi", {"alert": 0.25}), 4000, 1000, "psi"),
        AssayPlan("k", out, DetectorBaseline(base, "ks", {"alpha": 0.01}), 4000, 1000, "ks"),
        AssayPlan("other", inp, DetectorBaseline(base, "psi", None), 4000, 1000, "psi"),
    ]
    eng = _engine(redis_client, redis_prefix, assays=plans)
    values = np.concatenate([rng.normal(size=400), rng.normal(1.0, 1, size=400)])
    times = T0 + np.sort(rng.integers(0, 16_000, size=800))
    events = [
        _event(int(t), float(v), i) for i, (t, v) in enumerate(zip(times, values, strict=True))
    ]
    results: list[Any] = []
    for k in range(0, 800, 61):  # windows close after every batch: final buckets are reused
        eng.ingest(_batch(events[k : k + 61], first_offset=k))
        closed = eng.close()
        eng.commit(closed)
        results += closed.assays
    closed = eng.close(floor=T0 + 16_000)
    eng.commit(closed)
    results += closed.assays
    by = {name: [r for r in results if r.assay == name] for name in ("p", "k", "other")}
    assert [r.window_end - T0 for r in by["p"]] == list(range(1000, 16_001, 1000))
    for name, metric, thresholds in (("p", "psi", {"alert": 0.25}), ("k", "ks", {"alpha": 0.01})):
        for r in by[name]:
            inside = (times >= r.window_start) & (times < r.window_end)
            # the monitor holds fine histograms, so KS is the binned one
            offline = base.compare(
                base.histogram(values[inside]), metric=metric, thresholds=thresholds
            )
            assert r.count == int(inside.sum())
            assert r.score == pytest.approx(offline.score, rel=1e-12), (name, r.window_end)
            assert r.status == offline.status
    # "other" bins the input column (all 1.0), not the output: its own counts
    assert all(r.window_densities != by["p"][i].window_densities for i, r in enumerate(by["other"]))
    fields = set()
    for _, h in eng.state.read_buckets(1000, 0, 2**62):
        fields |= {f.rsplit(":", 1)[0] for f in h if f.startswith("h:")}
    assert len(fields) == 2  # one histogram for "p" and "k", one for "other"


def test_assay_scan_tests_the_merged_last_windows_like_the_detector_offline(
    redis_client, redis_prefix
):  # type: ignore[no-untyped-def]
    """A persistent 0.15σ shift: the per-window PSI stays quiet, the scan of the mean sees it,
    and every scan p-value equals the detector's on the merged windows' raw values."""
    rng = np.random.default_rng(5)
    base = Baseline.from_values(rng.normal(size=20_000))
    scan = ScanPlan("mean", 0.003, (1, 2, 4))
    plan = AssayPlan(
        "drift",
        parse("m.outputs[0][0]"),
        DetectorBaseline(base, "psi", {"warning": 0.2, "alert": 0.5}),
        1000,
        1000,
        "psi",
        scan=scan,
    )
    eng = _engine(redis_client, redis_prefix, assays=[plan])
    # 12 windows of 1 s with 400 events each; the last 6 shifted by 0.15σ
    times = np.repeat(T0 + 1000 * np.arange(12), 400) + np.tile(np.arange(400), 12)
    values = rng.normal(size=times.size) + np.where(times >= T0 + 6000, 0.15, 0.0)
    events = [
        _event(int(t), float(v), i) for i, (t, v) in enumerate(zip(times, values, strict=True))
    ]
    for k in range(0, len(events), 500):
        eng.ingest(_batch(events[k : k + 500], first_offset=k))
    closed = eng.close(floor=T0 + 12_000)
    eng.commit(closed)
    assert [r.window_end - T0 for r in closed.assays] == [1000 * k for k in range(1, 13)]
    statuses = []
    for r in closed.assays:
        assert r.scan is not None
        for s_text, p in r.scan["p_values"].items():
            inside = (times >= r.window_end - int(s_text) * 1000) & (times < r.window_end)
            offline = base.compare(values[inside], metric="mean", thresholds={"alpha": 0.5})
            assert p == pytest.approx(offline.p_value, rel=1e-9, abs=1e-15)
        best = min(r.scan["p_values"].values())
        assert r.scan["p_value"] == pytest.approx(min(1.0, 3 * best))
        per_window = base.compare(
            values[(times >= r.window_start) & (times < r.window_end)],
            thresholds={"warning": 0.2, "alert": 0.5},
        )
        want = "alert" if best <= 0.001 else per_window.status
        assert r.status == want
        statuses.append(r.status)
    # the per-window PSI never alerts; the scan does, only after the shift began
    assert "alert" not in statuses[:6] and "alert" in statuses[6:]


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.tuples(st.integers(0, 1), st.integers(0, 20_000), st.sampled_from([0.1, 0.5, 0.95])),
        min_size=10,
        max_size=120,
    ),
    st.lists(st.integers(1, 30), min_size=1, max_size=6),
    st.lists(st.integers(1, 30), min_size=1, max_size=6),
)
def test_outputs_do_not_depend_on_batch_boundaries(redis_client, events, cuts_a, cuts_b):  # type: ignore[no-untyped-def]
    """The replay guarantee: the same per-partition event order gives the same windows, assay
    results and alert transitions however the events are cut into batches and interleaved."""
    import uuid

    base = Baseline.from_values(np.linspace(0, 1, 200))

    def run_with(cuts: list[int], interleave: bool) -> tuple[Any, ...]:
        prefix = f"test:prop:{uuid.uuid4().hex[:8]}"
        plan = AssayPlan(
            "d", parse("m.outputs[0][0]"), DetectorBaseline(base, "psi", None), 4000, 2000, "psi"
        )
        eng = _engine(redis_client, prefix, partitions=2, lateness=1500, assays=[plan])
        try:
            per_part: dict[int, list[tuple[int, bytes]]] = {0: [], 1: []}
            for i, (p, dt, v) in enumerate(events):
                per_part[p].append((len(per_part[p]), _event(T0 + dt, v, i)))
            streams = [[(p, off, val) for off, val in per_part[p]] for p in (0, 1)]
            order = (
                [r for pair in zip(*streams, strict=False) for r in pair]
                + streams[0][len(streams[1]) :]
                + streams[1][len(streams[0]) :]
                if interleave
                else streams[0] + streams[1]
            )
            outs: list[Any] = []
            k, c = 0, 0
            while k < len(order):
                n = cuts[c % len(cuts)]
                eng.ingest(Batch.of("res", order[k : k + n]))
                k += n
                c += 1
                closed = eng.close()
                outs.append(closed)
                eng.commit(closed)
            closed = eng.close(floor=T0 + 30_000)
            outs.append(closed)
            eng.commit(closed)
            notes = sorted((n.id, n.value) for o in outs for n in o.notifications)
            assays = sorted(
                (a.assay, a.window_end, a.count, round(a.score, 12)) for o in outs for a in o.assays
            )
            return notes, assays
        finally:
            eng.state.clear()

    assert run_with(cuts_a, False) == run_with(cuts_b, True)


def test_a_changed_condition_never_mixes_with_old_counts(redis_client, redis_prefix):
    eng = _engine(redis_client, redis_prefix)
    eng.ingest(_batch([_event(T0 + 100, 0.95), _event(T0 + 200, 0.95)]))
    cond = alert_condition(parse("count(m.outputs[0][0] > 0.99, '3s', '1s') >= 2"))
    changed = PipelineEngine(
        "fraud", "sha256:y", ["m"], [AlertPlan("high", cond)], [], eng.state, 1, 0
    )
    assert changed.alerts[0].counter != eng.alerts[0].counter
    changed.ingest(_batch([_event(T0 + 300, 0.95)], first_offset=2))
    [(_, fields)] = eng.state.read_buckets(1000, T0, T0 + 1000)
    assert fields == {f"c:{eng.alerts[0].counter}": "2"}  # 0.95 is not > 0.99: nothing new
    closed = changed.close(floor=T0 + 5000)
    assert closed.notifications == []


def test_tensor_names_resolve_in_alert_conditions(redis_client, redis_prefix):  # type: ignore[no-untyped-def]
    # The same alert written with the output's name instead of its position.
    cond = alert_condition(parse("count(m.outputs['probability'][0] > 0.9, '3s', '1s') >= 2"))
    eng = PipelineEngine(
        "fraud",
        "sha256:x",
        ["m"],
        [AlertPlan("high", cond, severity="critical", notify=("stdout",))],
        [],
        RedisState(redis_client, redis_prefix, "fraud"),
        1,
        0,
        tensor_names={("m", "outputs"): ["probability"], ("m", "inputs"): ["tensor"]},
    )
    scores = [0.1, 0.1, 0.1, 0.95, 0.95, 0.1, 0.1, 0.1, 0.1, 0.1]
    eng.ingest(_batch([_event(T0 + 1000 * s + 10, x, s) for s, x in enumerate(scores)]))
    closed = eng.close()
    assert [(n.state, n.at - T0) for n in closed.notifications] == [
        ("firing", 5000),
        ("resolved", 7000),
    ]
