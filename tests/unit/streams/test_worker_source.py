"""Deployed specs become worker runtimes whose models are called by their spec names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from driftline.errors import ModelError
from driftline.models import LoadedModel, ModelStore
from driftline.spec import load_spec
from driftline.streams._worker_source import runtime_from_canonical

pytestmark = pytest.mark.unit

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "fraud"


def test_models_are_loaded_and_named_as_the_spec_names_them(tmp_path: Path) -> None:
    spec = load_spec(EXAMPLE / "pipeline.yaml")
    store = ModelStore(tmp_path)
    for m in (spec.champion, *spec.shadows):
        assert m.path is not None
        store.put(m.name, m.path)
    loaded: list[tuple[str, str]] = []

    def load(sha256: str, path: Path, name: str) -> Any:
        loaded.append((sha256, name))
        assert path == store.path(sha256)  # the stored file, named by its hash
        return LoadedModel(path, name)

    runtime = runtime_from_canonical(spec.to_canonical(), tmp_path, load)
    assert [name for _, name in loaded] == ["ccfraud", "fraud_base"]
    assert [m.name for m in runtime.models] == ["ccfraud", "fraud_base"]
    with pytest.raises(ModelError) as info:
        runtime.models[0].runner.run(np.zeros((1, 2), dtype=np.float32))
    assert "'ccfraud'" in str(info.value)
    assert all(sha not in str(info.value) for sha, _ in loaded)
