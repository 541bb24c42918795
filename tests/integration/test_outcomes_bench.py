"""bench/performance.py runs end to end at tiny sizes and ends with its goal lines."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_bench_performance_prints_goals(capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location(
        "bench_performance", ROOT / "bench/performance.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        args = ["--labels", "500", "--batch", "100", "--per-event", "50", "--pending", "500"]
        assert module.main([*args, "--windows", "3", "--window-rows", "500"]) == 0
    finally:
        del sys.modules[spec.name]
    out = capsys.readouterr().out.splitlines()
    goals = [line for line in out if line.startswith("goal ")]
    assert len(goals) == 5 and all("(target " in g for g in goals)
    assert out[-len(goals) :] == goals
