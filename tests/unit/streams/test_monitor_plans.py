from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest

from driftline.compile import plans_from_spec
from driftline.spec import load_baseline_values, load_spec
from driftline.streams._decode import build_tensors
from driftline.streams._decode import decode_results as _decode
from driftline.streams._engine import Batch

pytestmark = pytest.mark.unit

MODELS = Path(__file__).resolve().parents[3] / "examples" / "fraud" / "models"

SPEC = f"""
name: fraud
models:
  - {{name: ccfraud, path: {MODELS}/ccfraud.onnx}}
alerts:
  high:
    when: mean(ccfraud.outputs[0][0], "10s", "2s") > 0.5
    for: 4s
    repeat: 10s
    severity: critical
    notify: [email:ops@example.com]
assays:
  drift:
    iopath: ccfraud.outputs[0][0]
    baseline: {{values: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]}}
    window: {{width: 6s, interval: 2s}}
    metric: ks
    bins: {{mode: equal, count: 4}}
    thresholds: {{alpha: 0.01}}
"""


def test_plans_carry_the_spec(tmp_path):  # type: ignore[no-untyped-def]
    path = tmp_path / "p.yaml"
    path.write_text(SPEC)
    spec = load_spec(path)
    alerts, assays = plans_from_spec(spec, lambda a: load_baseline_values(a, tmp_path))
    [a] = alerts
    assert (a.name, a.for_ms, a.repeat_ms, a.severity) == ("high", 4000, 10_000, "critical")
    assert (a.width_ms, a.interval_ms, a.condition.aggregate) == (10_000, 2000, "mean")
    assert a.notify == ("email:ops@example.com",)
    [y] = assays
    assert (y.width_ms, y.interval_ms, y.metric) == (6000, 2000, "ks")
    assert y.baseline.baseline.bins == "equal"
    assert y.baseline.baseline.num_bins == 4 + 2  # explicit outlier bins
    r = y.baseline.compare_counts(
        np.bincount(
            y.baseline.fine_index(np.linspace(0.1, 1.0, 50)), minlength=y.baseline.num_fine_bins
        )
    )
    assert r.metric == "ks" and r.window_count == 50


def test_decode_separates_malformed_events():
    good = orjson.dumps({"time": 5, "outputs": {"m": [[1.0]]}, "inputs": [1.0, 2.0]})
    docs, ok, reasons = _decode(
        [good, b"{", orjson.dumps({"time": True, "outputs": {}}), orjson.dumps({"time": 1})]
    )
    assert ok.tolist() == [True, False, False, False]
    assert reasons[1] == "malformed-result"
    tensors = build_tensors([docs[0], docs[0]], {("m", "outputs"), ("m", "inputs")})
    assert tensors[("m", "outputs")][0].shape == (2, 1)
    assert tensors[("m", "inputs")][0].tolist() == [[1.0, 2.0], [1.0, 2.0]]


def test_decode_rejects_times_that_are_not_int64_milliseconds_and_skips_unused_inputs():
    bad = [
        b'{"time": 1.0, "outputs": {}}',
        b'{"time": 99999999999999999999, "outputs": {}}',
        b'{"time": 5, "outputs": []}',
        b"[1]",
    ]
    good = b'{"time": -5, "outputs": {"m": [[1]]}, "inputs": [1, 2]}'
    docs, ok, reasons = _decode([*bad, good], with_inputs=False)
    assert ok.tolist() == [False] * 4 + [True]
    assert set(reasons[:4]) == {"malformed-result"}
    assert docs[4] is not None and (docs[4].time, docs[4].outputs) == (-5, {"m": [[1]]})
    assert not hasattr(docs[4], "inputs")  # inputs not built
    docs, ok, _ = _decode([good, b'{"time": 5, "outputs": {}}'], with_inputs=True)
    assert docs[0].inputs == [1, 2] and ok.tolist() == [True, False]  # type: ignore[union-attr]


def test_decode_batch_fast_path_agrees_with_one_by_one_and_newlines_do_not_fool_it():
    good = [orjson.dumps({"time": t, "outputs": {"m": [[t / 10]]}}) for t in range(5)]
    docs, ok, _ = _decode(good, with_inputs=False)
    assert ok.all() and [d.time for d in docs] == list(range(5))  # type: ignore[union-attr]
    # a value spanning lines, and one line holding two values: decoded one by one, each alone
    pretty = b'{"time": 7,\n "outputs": {}}'
    two = good[0] + b"\n" + good[1]
    docs, ok, reasons = _decode([good[2], pretty, two, b"", good[3]], with_inputs=False)
    assert ok.tolist() == [True, True, False, False, True]
    assert docs[1] is not None and docs[1].time == 7
    assert reasons[2] == reasons[3] == "malformed-result"


def test_batch_select_keeps_alignment():
    b = Batch.of("t", [(0, 5, b"a"), (1, 7, b"b"), (0, 6, b"c")])
    s = b.select(np.array([True, False, True]))
    assert s.partitions.tolist() == [0, 0] and s.offsets.tolist() == [5, 6]
    assert s.values == [b"a", b"c"]


def test_batch_of_sorts_offsets_per_partition_only_when_needed():
    interleaved = [(0, 5, b"a"), (1, 7, b"b"), (0, 6, b"c")]
    b = Batch.of("t", interleaved)  # already ascending per partition: kept as given
    assert b.values == [b"a", b"b", b"c"] and b.first_offsets() == {0: 5, 1: 7}
    b = Batch.of("t", [(0, 6, b"c"), (1, 7, b"b"), (0, 5, b"a")])
    assert list(zip(b.partitions.tolist(), b.offsets.tolist(), b.values, strict=True)) == [
        (0, 5, b"a"),
        (0, 6, b"c"),
        (1, 7, b"b"),
    ]
