"""Can the worker serve these models? Asked at ``deploy``, by running them once.

``deploy`` must not accept a pipeline the worker cannot run: a model that onnxruntime loads but
whose outputs the worker cannot write into a result event would otherwise pass ``deploy`` and
fail on every request. :func:`check_servable` builds a small synthetic batch from the champion's
declared input, runs the champion and every shadow on it through the same
:class:`~driftline.models.runtime.LoadedModel` the worker uses, and checks what comes back.

What the worker serves today, and so what this check accepts:

- one numeric input tensor (float, double, int32, int64), whose shape is fixed apart from the
  batch dimension; shadows take the champion's rows, so their input width must match;
- numeric or boolean tensor outputs (a classifier's label and probability tensors), and ZipMap
  outputs (skl2onnx's default classifier export), served as one probability column per class.

Everything else is refused with the model's spec name, the reason and the fix, for example a
classifier with string class labels, or a sequence output that is not a ZipMap (convert it
with ``options={id(model): {'zipmap': False}}``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from driftline.errors import ModelError
from driftline.models.info import ModelInfo

__all__ = ["ServingProblem", "check_servable", "synthetic_batch"]

#: Rows in the synthetic batch: two, so that a model fixed to batch size 1 shows.
SYNTHETIC_ROWS = 2

_NUMERIC_INPUTS = ("float32", "float64", "float16", "int64", "int32")


@dataclass(frozen=True)
class ServingProblem:
    """Why the worker cannot serve one model: ``model`` is its name in the spec."""

    model: str
    reason: str

    def __str__(self) -> str:
        return f"model {self.model!r}: {self.reason}"


def synthetic_batch(info: ModelInfo, rows: int = SYNTHETIC_ROWS) -> np.ndarray | None:
    """A deterministic batch of ``rows`` rows for the model's first input (None: width free).

    >>> from driftline.models.info import TensorInfo
    >>> info = ModelInfo("m", "0" * 64, "m.onnx", (TensorInfo("x", (None, 3), "float32"),), ())
    >>> synthetic_batch(info).shape
    (2, 3)
    """
    width = info.input_width
    if width is None:
        return None
    # Small distinct values: zeros alone can hide a division or a log in the graph.
    grid = np.arange(rows * width, dtype=np.float64).reshape(rows, width)
    return (grid % 7) / 7.0


def _input_problem(info: ModelInfo) -> str | None:
    if not info.inputs:
        return "it has no inputs"
    if len(info.inputs) > 1:
        names = [t.name for t in info.inputs]
        return (
            f"it has {len(info.inputs)} inputs {names}; the worker feeds one input tensor per "
            "model: export the model with a single input (concatenate the features) "
            "before deploying it"
        )
    first = info.inputs[0]
    if first.dtype not in _NUMERIC_INPUTS:
        return (
            f"input {first.name!r} has type {first.dtype}; the worker feeds numeric tensors "
            "(float, double, int32, int64): encode the column numerically in the exported graph"
        )
    if info.input_width is None:
        return (
            f"input {first.name!r} has shape {list(first.shape)}, free beyond the batch "
            "dimension; the worker needs a fixed number of values per row: export it with "
            "fixed feature dimensions"
        )
    batch = first.shape[0] if first.shape else None
    if isinstance(batch, int) and batch >= 1:
        return (
            f"input {first.name!r} is fixed to batch size {batch} (shape {list(first.shape)}); "
            "the worker scores whole micro-batches: export it with a dynamic batch dimension "
            "(e.g. torch.onnx.export(..., dynamic_axes={'input': {0: 'batch'}}))"
        )
    return None


def _output_problem(info: ModelInfo) -> str | None:
    for t in info.outputs:
        if t.dtype == "string":
            return (
                f"output {t.name!r} is a string tensor; the worker writes numeric tensors into "
                "results: train on integer class labels (0..k-1), or export without the label "
                "output and keep the probabilities"
            )
    # Sequences and maps are judged by running the model: a ZipMap of class probabilities
    # (skl2onnx's default classifier export) is served as one column per class; others are not.
    return None


def _run_problem(model: object, x: np.ndarray, expected: int) -> str | None:
    from driftline.models.runtime import LoadedModel

    assert isinstance(model, LoadedModel)
    try:
        outputs = model.run(x)
    except ModelError as exc:
        return f"it fails on a synthetic batch of {expected} rows: {exc}"
    for name, out in zip(model.output_names, outputs, strict=True):
        arr = np.asarray(out)
        if arr.dtype.kind not in "fiub":
            return (
                f"output {name!r} comes back as {arr.dtype} values, which the worker cannot "
                "write into results; export numeric tensor outputs (for a scikit-learn "
                "classifier: skl2onnx.to_onnx(model, X, options={id(model): {'zipmap': False}}))"
            )
        if arr.shape[0] != expected:
            return (
                f"output {name!r} has {arr.shape[0]} rows for a batch of {expected}; the "
                "worker needs one output row per input row"
            )
    return None


def check_servable(models: Sequence[tuple[str, ModelInfo, bool]]) -> list[ServingProblem]:
    """Problems that would stop the worker serving these models (empty: it can serve them).

    ``models`` lists ``(spec name, info, shadow)`` with the champion first. Each model is
    loaded and run once on :func:`synthetic_batch` of the champion's input.
    """
    from driftline.models.runtime import LoadedModel

    problems: list[ServingProblem] = []
    champion = next((info for _, info, shadow in models if not shadow), None)
    x = synthetic_batch(champion) if champion is not None else None
    for name, info, shadow in models:
        why = _input_problem(info) or _output_problem(info)
        if (
            why is None
            and shadow
            and champion is not None
            and info.input_width != champion.input_width
        ):
            why = (
                f"it takes {info.input_width} values per row but the champion "
                f"{champion.name!r} takes {champion.input_width}; a shadow scores the "
                "champion's rows"
            )
        if why is None and x is not None:
            try:
                loaded = LoadedModel(info.path, name, info=info)
            except ModelError as exc:
                why = str(exc)
            else:
                why = _run_problem(loaded, x, x.shape[0])
        if why is not None:
            problems.append(ServingProblem(name, why))
    return problems
