from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from driftline.models import LoadedModel

pytestmark = pytest.mark.unit

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "fraud"


@pytest.fixture(scope="module")
def gen() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fraud_generate_test", EXAMPLE / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def models() -> dict[str, LoadedModel]:
    return {n: LoadedModel(EXAMPLE / "models" / f"{n}.onnx", n) for n in ("ccfraud", "fraud_base")}


def _score(model: LoadedModel, rows: np.ndarray) -> np.ndarray:
    return model.run(rows)[0][:, 0]


def test_generators_are_reproducible(gen: ModuleType) -> None:
    for make in (gen.normal_rows, gen.fraud_rows):
        a, b = make(50, seed=3), make(50, seed=3)
        assert a.dtype == np.float32 and a.shape == (50, 29)
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, make(50, seed=4))
    assert gen.drifted_rows(10, 2.0, seed=1).shape == (10, 29)


def test_models_separate_normal_from_fraud(gen: ModuleType, models: dict[str, LoadedModel]) -> None:
    normal = _score(models["ccfraud"], gen.normal_rows(1000, seed=5))
    fraud = _score(models["ccfraud"], gen.fraud_rows(100, seed=5))
    assert np.median(normal) < 0.01 and (normal > 0.95).mean() < 0.01
    assert (fraud > 0.95).mean() > 0.95


def test_drift_moves_the_score_distribution(
    gen: ModuleType, models: dict[str, LoadedModel]
) -> None:
    normal = _score(models["ccfraud"], gen.normal_rows(2000, seed=6))
    drifted = _score(models["ccfraud"], gen.drifted_rows(2000, 2.0, seed=6))
    assert np.quantile(drifted, 0.9) > 3 * np.quantile(normal, 0.9)


@pytest.mark.parametrize(
    ("name", "check"),
    [
        ("smoke_test", lambda c, b: c < 0.95 and abs(c - b) <= 0.05),
        ("high_fraud", lambda c, b: c > 0.95),
        ("drifted", lambda c, b: c < 0.95 and abs(c - b) > 0.05),
    ],
)
def test_sample_requests_do_what_their_names_say(
    models: dict[str, LoadedModel], name: str, check
) -> None:  # type: ignore[no-untyped-def]
    request = json.loads((EXAMPLE / "data" / f"{name}.json").read_text())
    rows = np.asarray(request["tensor"], dtype=np.float32)
    assert rows.shape == (1, 29)
    champion, challenger = (float(_score(models[n], rows)[0]) for n in ("ccfraud", "fraud_base"))
    assert check(champion, challenger), (champion, challenger)


def test_shipped_models_are_small() -> None:
    for path in (EXAMPLE / "models").glob("*.onnx"):
        assert path.stat().st_size < 1_000_000
