"""The detection benchmark's verdict rules: pure functions, checked without running it."""

from __future__ import annotations

import doctest
import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench() -> Iterator[ModuleType]:
    spec = importlib.util.spec_from_file_location("bench_detection", ROOT / "bench/detection.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it loads
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


def test_doctests_of_the_benchmark_pass(bench: ModuleType) -> None:
    failures, tried = doctest.testmod(bench, optionflags=doctest.ELLIPSIS)
    assert tried >= 4  # delays, judge, more_alarms_p, sign_test
    assert failures == 0


def test_a_peer_counts_only_when_sooner_beyond_chance_at_no_more_false_alarms(
    bench: ModuleType,
) -> None:
    # sooner in 9 of 9 differing draws: p = 0.002
    p = bench.sign_test(9, 0)
    assert bench.judge(10, 10, 1.2, 1.9, p)
    assert not bench.judge(11, 10, 1.2, 1.9, p)  # one more false alarm
    assert not bench.judge(10, 10, 1.9, 1.9, p)  # level on average
    assert not bench.judge(10, 10, 1.2, 1.9, bench.sign_test(4, 1))  # p = 0.19


def test_screen_rejects_only_clearly_higher_false_alarm_rates(bench: ModuleType) -> None:
    assert bench.more_alarms_p(20, 1, 400) < bench.SCREEN_P
    assert bench.more_alarms_p(3, 1, 400) > bench.SCREEN_P
    assert bench.more_alarms_p(1, 3, 400) == pytest.approx(1.0, abs=0.2)


def test_draws_are_reproducible_and_contest_draws_are_fresh(bench: ModuleType) -> None:
    scen = bench.Scenario("n", "numeric", bench._normal(0, 1), bench._normal(1, 1))
    pairs = [(scen, 100), (scen, 200)]
    a = bench.make_draw(pairs, [bench.SEED, 0], 3, 2)
    b = bench.make_draw(pairs, [bench.SEED, 0], 3, 2)
    fresh = bench.make_draw(pairs, [bench.SEED, 1, 0, 100, 0], 3, 2)
    assert a.windows[("n", 100)].shape == (5, 100)
    assert a.windows[("n", 200)].shape == (5, 200)
    np.testing.assert_array_equal(a.baselines["n"], b.baselines["n"])
    np.testing.assert_array_equal(a.windows[("n", 200)], b.windows[("n", 200)])
    assert not np.array_equal(a.baselines["n"], fresh.baselines["n"])
