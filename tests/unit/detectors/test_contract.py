"""One contract, one generic suite, applied to every detector.

Each case knows how to build its detector, how to feed it a stream (returning the alarms it
raised) and the false-alarm allowance its documentation states. The suite checks: clone gives
a fresh equal detector, a pickle round trip mid-stream changes nothing, the same input gives
the same output, a long stationary stream stays within the stated rate, a clear step is caught.
"""

from __future__ import annotations

import copy
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from driftline.detectors import (
    ADWIN,
    CUSUM,
    KSWIN,
    METRICS,
    SCAN_TESTS,
    Baseline,
    HalfSpaceTrees,
    KernelMMD,
    Mahalanobis,
    PageHinkley,
    WindowScan,
)

pytestmark = pytest.mark.unit

Alarms = list[int]


@dataclass
class Case:
    name: str
    make: Callable[[], Any]
    feed: Callable[[Any, np.ndarray], Alarms]
    clone: Callable[[Any], Any]
    stationary: Callable[[np.random.Generator], np.ndarray]
    changed: Callable[[np.random.Generator], np.ndarray]
    max_false_alarms: int
    chunk: int  # how many values one feed call takes in the streaming checks


class WindowDetector:
    """Baseline + metric + auto thresholds, fed tumbling windows of fixed size."""

    def __init__(self, metric: str, window: int) -> None:
        rng = np.random.default_rng(100)
        self.baseline = Baseline.from_values(rng.normal(size=5000), seed=1)
        self.metric = metric
        self.window = window

    def feed(self, values: np.ndarray) -> Alarms:
        alarms = []
        for i in range(0, values.size - self.window + 1, self.window):
            w = values[i : i + self.window]
            thresholds = {"auto": 0.01}
            r = self.baseline.compare(w, self.metric, thresholds, n_permutations=100)
            if r.status == "alert":
                alarms.append(i // self.window)
        return alarms


def _window_case(metric: str) -> Case:
    window = 200 if metric == "mmd" else 500
    windows = 30 if metric == "mmd" else 120
    return Case(
        name=f"window-{metric}",
        make=lambda: WindowDetector(metric, window),
        feed=lambda d, v: d.feed(v),
        clone=lambda d: WindowDetector(d.metric, d.window),
        stationary=lambda rng: rng.normal(size=window * windows),
        changed=lambda rng: rng.normal(1.0, 1.0, size=window * 2),
        max_false_alarms=max(3, int(0.01 * windows * 3)),
        chunk=window * 5,
    )


def _scan_feed(det: WindowScan, values: np.ndarray, window: int = 500) -> Alarms:
    return [
        i // window
        for i in range(0, values.size - window + 1, window)
        if det.update(values[i : i + window]).drift
    ]


def _scan_case(test: str) -> Case:
    base = Baseline.from_values(np.random.default_rng(101).normal(size=5000), seed=1)
    return Case(
        name=f"window-scan-{test}",
        make=lambda: WindowScan(base, test=test, alpha=0.01),
        feed=_scan_feed,
        clone=lambda d: d.clone(),
        stationary=lambda rng: rng.normal(size=500 * 120),
        changed=lambda rng: rng.normal(1.0, 1.0, size=500 * 2),
        max_false_alarms=3,
        chunk=500 * 5,
    )


def _seq_case(name: str, make: Callable[[], Any], max_false: int) -> Case:
    return Case(
        name=name,
        make=make,
        feed=lambda d, v: list(d.update(v).drift_indices),
        clone=lambda d: d.clone(),
        stationary=lambda rng: rng.normal(size=20_000),
        changed=lambda rng: rng.normal(2.0, 1.0, size=1000),
        max_false_alarms=max_false,
        chunk=1000,
    )


class MMDStream:
    def __init__(self) -> None:
        self.det = KernelMMD(
            np.random.default_rng(5).normal(size=(300, 3)),
            n_permutations=100,
            seed=2,
            thresholds={"alpha": 0.01},
        )

    def feed(self, values: np.ndarray) -> Alarms:
        rows = values.reshape(-1, 3)
        return [
            i // 100
            for i in range(0, rows.shape[0] - 99, 100)
            if self.det.score(rows[i : i + 100]).status == "alert"
        ]


def _outlier_case(name: str, make: Callable[[], Any], rate: float) -> Case:
    rows = 2000
    return Case(
        name=name,
        make=make,
        feed=lambda d, v: [int(i) for i in np.flatnonzero(d.score(v.reshape(-1, 2)).flags)],
        clone=lambda d: d.clone(),
        stationary=lambda rng: rng.normal(size=rows * 2),
        changed=lambda rng: rng.normal(8.0, 1.0, size=20),
        max_false_alarms=int(rate * rows * 2.5) + 3,
        chunk=400,
    )


_OUTLIER_BASE = np.random.default_rng(9).normal(size=(2000, 2))
_SCAN_BASE = Baseline.from_values(np.arange(100.0))

CASES = [
    *[_window_case(m) for m in METRICS],
    *[_scan_case(t) for t in SCAN_TESTS],
    _seq_case("cusum", lambda: CUSUM(), 8),
    _seq_case("adwin", lambda: ADWIN(), 3),
    _seq_case("pagehinkley", lambda: PageHinkley(threshold=100.0), 3),
    _seq_case("kswin", lambda: KSWIN(alpha=1e-5, seed=3), 4),
    Case(
        name="kernel-mmd",
        make=MMDStream,
        feed=lambda d, v: d.feed(v),
        clone=lambda d: MMDStream(),
        stationary=lambda rng: rng.normal(size=300 * 30),
        changed=lambda rng: rng.normal(1.0, 1.0, size=300 * 2),
        max_false_alarms=3,
        chunk=300 * 5,
    ),
    _outlier_case("mahalanobis", lambda: Mahalanobis(_OUTLIER_BASE, alpha=0.001), 0.001),
    _outlier_case(
        "halfspacetrees",
        lambda: HalfSpaceTrees(_OUTLIER_BASE, n_trees=5, height=6, alpha=0.01, seed=4),
        0.01,
    ),
]


@pytest.fixture(params=CASES, ids=[c.name for c in CASES])
def case(request: pytest.FixtureRequest) -> Case:
    c: Case = request.param
    return c


def _stream(case: Case, det: Any, values: np.ndarray) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for i in range(0, values.size, case.chunk):
        out += [(i, a) for a in case.feed(det, values[i : i + case.chunk])]
    return out


def test_clone_is_fresh_and_equivalent(case: Case) -> None:
    rng = np.random.default_rng(1)
    values = np.concatenate([case.stationary(rng)[: case.chunk * 2], case.changed(rng)])
    original = case.make()
    _stream(case, original, values)  # use it, then clone: the clone starts afresh
    clone = case.clone(original)
    assert _stream(case, clone, values) == _stream(case, case.make(), values)


def test_pickle_round_trip_mid_stream(case: Case) -> None:
    rng = np.random.default_rng(2)
    values = np.concatenate([case.stationary(rng)[: case.chunk * 3], case.changed(rng)])
    det = case.make()
    half = case.chunk
    case.feed(det, values[:half])
    restored = pickle.loads(pickle.dumps(det))
    duplicate = copy.deepcopy(det)
    rest = values[half:]
    expected = _stream(case, det, rest)
    assert _stream(case, restored, rest) == expected
    assert _stream(case, duplicate, rest) == expected


def test_deterministic(case: Case) -> None:
    rng = np.random.default_rng(3)
    values = np.concatenate([case.stationary(rng)[: case.chunk * 2], case.changed(rng)])
    assert _stream(case, case.make(), values) == _stream(case, case.make(), values)


def test_quiet_on_long_stationary_stream(case: Case) -> None:
    rng = np.random.default_rng(4)
    alarms = _stream(case, case.make(), case.stationary(rng))
    assert len(alarms) <= case.max_false_alarms, alarms


def test_catches_clear_step_change(case: Case) -> None:
    rng = np.random.default_rng(5)
    det = case.make()
    _stream(case, det, case.stationary(rng)[: case.chunk * 2])
    assert case.feed(det, case.changed(rng)), "step change not detected"


@pytest.mark.parametrize(
    ("factory", "param"),
    [
        (lambda: CUSUM(std=0.0), "std"),
        (lambda: CUSUM(h=-1.0), "h"),
        (lambda: CUSUM(k=-0.1), "k"),
        (lambda: CUSUM(mean=float("nan")), "mean"),
        (lambda: ADWIN(delta=2.0), "delta"),
        (lambda: ADWIN(clock=0), "clock"),
        (lambda: PageHinkley(mode="sideways"), "mode"),
        (lambda: PageHinkley(threshold=0.0), "threshold"),
        (lambda: KSWIN(window_size=10, stat_size=30), "stat_size"),
        (lambda: KSWIN(alpha=0.0), "alpha"),
        (lambda: KernelMMD(np.zeros((10, 2)), n_permutations=0), "n_permutations"),
        (lambda: KernelMMD(np.zeros((10, 2)), n_permutations=10**6), "n_permutations"),
        (lambda: KernelMMD(np.zeros((10, 2)), bandwidth=-1.0), "bandwidth"),
        (lambda: Mahalanobis(np.zeros((2, 3))), "baseline"),
        (lambda: Mahalanobis(np.zeros((20, 2)), alpha=1.0), "alpha"),
        (lambda: HalfSpaceTrees(np.zeros((300, 2)), height=0), "height"),
        (lambda: WindowScan(np.zeros(10)), "baseline"),  # type: ignore[arg-type]
        (lambda: WindowScan(_SCAN_BASE, test="psi"), "test"),
        (lambda: WindowScan(_SCAN_BASE, alpha=0.0), "alpha"),
        (lambda: WindowScan(_SCAN_BASE, alpha=True), "alpha"),
        (lambda: WindowScan(_SCAN_BASE, scales=()), "scales"),
        (lambda: WindowScan(_SCAN_BASE, scales=(1, 4, 2)), "scales"),
        (lambda: WindowScan(_SCAN_BASE, scales=(0, 1)), "scales"),
        (lambda: WindowScan(_SCAN_BASE, scales=(1, 2.0)), "scales"),  # type: ignore[arg-type]
    ],
)
def test_constructor_errors_name_the_parameter(factory: Callable[[], Any], param: str) -> None:
    with pytest.raises(ValueError, match=param):
        factory()


def test_cusum_matches_reference_loop_and_resets() -> None:
    rng = np.random.default_rng(8)
    x = np.concatenate([rng.normal(size=3000), rng.normal(1.5, 1, size=300), rng.normal(size=500)])
    up = lo = 0.0
    expected = []
    for i, v in enumerate(x):
        up, lo = max(0.0, up + v - 0.5), max(0.0, lo - v - 0.5)
        if up > 8 or lo > 8:
            expected.append(i)
            up = lo = 0.0
    det = CUSUM()
    got: list[int] = []
    for start in range(0, x.size, 377):  # odd batch sizes: state carries across batches
        got += [start + i for i in det.update(x[start : start + 377]).drift_indices]
    assert got == expected and len(expected) >= 2
    assert det.n_seen == x.size


def test_sequential_skips_nan() -> None:
    det = CUSUM()
    r = det.update([np.nan, 0.0, np.nan])
    assert r.n_seen == 1 and not r.drift
