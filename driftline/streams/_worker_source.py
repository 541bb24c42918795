"""Deployed pipelines for the worker, from the control topic: canonical specs → runtimes.

Each model version (sha256) is loaded once per process and shared by every pipeline version
that uses it; a version no pipeline uses any more is dropped after the swap. Swaps happen
between micro-batches, so a batch always finishes with the version it started with.
"""

from __future__ import annotations

import logging
import queue
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from driftline.config import KafkaSettings
from driftline.streams._worker_core import PipelineRuntime, RuntimeModel, Validation
from driftline.streams.v2 import InputSpec
from driftline.streams.v2_response import ResponseForm, v2_datatype

__all__ = [
    "ControlSource",
    "RuntimeSource",
    "StaticSource",
    "response_form",
    "runtime_from_canonical",
]

log = logging.getLogger("driftline.worker")


def _validation(expr: Any, names: Mapping[tuple[str, str], list[str]]) -> Validation:
    from driftline.expressions import evaluate

    def run(tensors: Mapping[tuple[str, str], Sequence[np.ndarray]]) -> np.ndarray:
        return evaluate(expr, tensors, names)

    return run


def runtime_from_canonical(
    canonical: Mapping[str, Any],
    model_store: Path,
    load: Callable[[str, Path, str], Any],
) -> PipelineRuntime:
    """Build the runtime of one deployed spec; ``load(sha256, path, name)`` returns the loaded
    model, ``name`` being its name in the spec (what its errors call it).

    Raises :class:`~driftline.errors.SpecError` or :class:`~driftline.errors.ModelError` when
    the spec is malformed or a model is missing from the store.
    """
    from driftline.compile import worker_plan
    from driftline.models import ModelStore

    plan = worker_plan(canonical, ModelStore(model_store).path)
    models = tuple(
        RuntimeModel(m.name, f"sha256:{m.sha256}", load(m.sha256, m.path, m.name), m.shadow)
        for m in plan.models
    )
    info = plan.champion
    inputs = _input_specs(info) if info is not None else None
    return PipelineRuntime(
        name=plan.name,
        version=plan.version,
        models=models,
        validations={k: _validation(e, plan.tensor_names) for k, e in plan.validations.items()},
        input_width=info.input_width if info is not None else None,
        input_names=tuple(t.name for t in info.inputs) if info is not None else None,
        allow_nan=plan.allow_nan,
        max_message_bytes=plan.max_message_bytes,
        inputs=inputs,
        feeds_only=inputs is not None and not _plain_rows(inputs),
        record_inputs=plan.record_inputs,
        recorded_inputs=plan.recorded_inputs,
        response_form=response_form(plan.models[0].name, info)
        if plan.result_format == "v2"
        else None,
    )


def response_form(model: str, info: Any) -> ResponseForm:
    """How the champion's outputs are written in V2 responses, from its declared outputs."""
    if info is None:
        return ResponseForm(model, (), (), ())
    datatypes: list[str | None] = []
    shapes: list[tuple[int, ...] | None] = []
    for t in info.outputs:
        # A ZipMap (sequence of maps) becomes one float32 probability column per class.
        datatypes.append("FP32" if t.dtype.startswith("seq(map") else v2_datatype(t.dtype))
        dims = t.shape[1:]
        fixed = all(isinstance(d, int) and d > 0 for d in dims)
        shapes.append(tuple(dims) if fixed and dims else None)
    return ResponseForm(model, tuple(t.name for t in info.outputs), tuple(datatypes), tuple(shapes))


def _input_specs(info: Any) -> tuple[InputSpec, ...]:
    return tuple(
        InputSpec(
            t.name, t.dtype, tuple(d if isinstance(d, int) and d >= 0 else None for d in t.shape)
        )
        for t in info.inputs
    )


def _plain_rows(inputs: Sequence[InputSpec]) -> bool:
    """Whether flat float rows feed the model (the codec's fast path): one float input of
    shape [batch, width], width fixed, batch free."""
    if len(inputs) != 1:
        return False
    (only,) = inputs
    return (
        only.dtype in ("float32", "float64", "float16")
        and len(only.shape) == 2
        and only.shape[0] is None
        and only.shape[1] is not None
    )


class RuntimeSource(Protocol):
    """Where the worker learns which pipelines are deployed, in which version."""

    def snapshot(self) -> dict[str, PipelineRuntime]:
        """Every deployed pipeline now."""
        ...

    def poll(self) -> list[tuple[str, PipelineRuntime | None]]:
        """Changes since the last call, without blocking; ``None`` means undeployed."""
        ...

    def close(self) -> None: ...


class StaticSource:
    """A source fed by the caller (tests, embedding): ``set()`` deploys, ``set(name, None)``
    undeploys. Thread-safe, so a test can change versions while the worker runs."""

    def __init__(self, runtimes: Iterable[PipelineRuntime] = ()):
        self._initial = {r.name: r for r in runtimes}
        self._changes: queue.SimpleQueue[tuple[str, PipelineRuntime | None]] = queue.SimpleQueue()

    def set(self, name: str, runtime: PipelineRuntime | None) -> None:
        self._changes.put((name, runtime))

    def snapshot(self) -> dict[str, PipelineRuntime]:
        return dict(self._initial)

    def poll(self) -> list[tuple[str, PipelineRuntime | None]]:
        out = []
        while True:
            try:
                out.append(self._changes.get_nowait())
            except queue.Empty:
                return out

    def close(self) -> None:
        pass


class ControlSource:
    """The worker's view of ``driftline.pipelines``, through the control-plane ``Follower``.

    Parameters
    ----------
    kafka:
        Connection and topic prefix.
    model_store:
        Root of the local model store holding every deployed model version.
    intra_op_threads:
        onnxruntime threads per operator (0: let onnxruntime decide).
    pipelines:
        Follow only these pipelines (``None``: all).
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        model_store: Path,
        intra_op_threads: int = 1,
        pipelines: Iterable[str] | None = None,
    ):
        from driftline.streams.control import Follower

        self.model_store = Path(model_store)
        self.threads = intra_op_threads
        self.only = set(pipelines) if pipelines else None
        # By file and spec name: a model's errors name it as the spec does, never by hash.
        self._models: dict[tuple[str, str], Any] = {}
        self._current: dict[str, PipelineRuntime] = {}
        self._follower = Follower(kafka)

    def _load(self, sha256: str, path: Path, name: str) -> Any:
        model = self._models.get((sha256, name))
        if model is None:
            from driftline.models import LoadedModel

            model = LoadedModel(path, name, intra_op_threads=max(self.threads, 1))
            self._models[(sha256, name)] = model
        return model

    def deployed(self) -> set[str]:
        """Names of every pipeline deployed on the control topic (loadable or not)."""
        return set(self._follower.snapshot())

    def external(self) -> dict[str, dict[str, Any]]:
        """Deployed pipelines without models (predictions made elsewhere), by name."""
        return {n: d for n, d in self._follower.snapshot().items() if "source" in d}

    def _build(self, name: str, doc: Mapping[str, Any] | None) -> PipelineRuntime | None:
        if doc is None or "source" in doc:
            # Without models there is nothing to serve here: a worker of its own reads the
            # pipeline's source (streams._worker_external).
            self._current.pop(name, None)
            return None
        from driftline.errors import DriftlineError

        try:
            runtime = runtime_from_canonical(doc, self.model_store, self._load)
        except DriftlineError as exc:
            # Keep serving the previous version rather than stopping the pipeline.
            log.error("pipeline %s: cannot load the new version: %s", name, exc)
            return self._current.get(name)
        self._current[name] = runtime
        return runtime

    def _prune(self) -> None:
        used = {
            (m.sha256.removeprefix("sha256:"), m.name)
            for r in self._current.values()
            for m in r.models
        }
        for key in [k for k in self._models if k not in used]:
            del self._models[key]

    def snapshot(self) -> dict[str, PipelineRuntime]:
        out = {}
        for name, doc in self._follower.snapshot().items():
            if self.only is not None and name not in self.only:
                continue
            runtime = self._build(name, doc)
            if runtime is not None:
                out[name] = runtime
        self._prune()
        return out

    def poll(self) -> list[tuple[str, PipelineRuntime | None]]:
        changes = []
        for name, doc in self._follower.poll(0.0):
            if self.only is not None and name not in self.only:
                continue
            changes.append((name, self._build(name, doc)))
        if changes:
            self._prune()
        return changes

    def close(self) -> None:
        self._follower.close()
