"""Can the worker serve these models? Asked at ``deploy``, by running them once.

``deploy`` must not accept a pipeline the worker cannot run: a model that onnxruntime loads but
whose outputs the worker cannot write into a result event would otherwise pass ``deploy`` and
fail on every request. :func:`check_servable` builds a small synthetic batch from the champion's
declared input, runs the champion and every shadow on it through the same
:class:`~driftline.models.runtime.LoadedModel` the worker uses, and checks what comes back.

What the worker serves, and so what this check accepts:

- any number of named inputs of type float, double, float16, int8/32/64, uint8, bool or
  string, of any rank; free dimensions (batch, height, width, time) are taken from each
  request; a model fixed to batch size 1 is run once per row;
- shadows are fed the champion's inputs by name (or, when both have a single input, that
  input), so they must declare the same names, types and fixed dimensions; a shadow of a
  champion fed plain rows takes the same rows;
- numeric, boolean and string tensor outputs with one entry per row (strings, such as a
  classifier's label output, are carried as JSON strings; booleans as JSON true/false), and
  ZipMap outputs (skl2onnx's default classifier export), served as one probability column
  per class;
- outputs whose rows differ in length: a free non-batch dimension of a model fixed to batch
  size 1 (an object detector's boxes and scores), or a sequence of tensors with one tensor
  per row; each row's values are carried as a list.

The synthetic batch has two rows (one at a time for a batch-1 model) and a size of 16 for
each free non-batch dimension. A model whose run fails on it is refused when every
non-batch dimension is fixed (it would fail on every request); with free dimensions the
failure may be the made-up size, so only a successful run's outputs are judged; the same
holds for string inputs, whose made-up values a category encoder may refuse. Everything
else is refused with the model's spec name, the reason and the fix, for example a sequence
of maps that is not a ZipMap (convert it with ``options={id(model): {'zipmap': False}}``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from driftline.errors import ModelError
from driftline.models.info import ModelInfo

__all__ = ["ServingProblem", "check_servable", "synthetic_batch", "synthetic_feeds"]

#: Rows in the synthetic batch: two, so that a model fixed to batch size 1 shows.
SYNTHETIC_ROWS = 2

#: Size given to each free non-batch dimension in the synthetic batch.
FREE_DIM = 16

_NUMERIC_INPUTS = ("float32", "float64", "float16", "int64", "int32", "int8", "uint8", "bool")
_FEED_INPUTS = (*_NUMERIC_INPUTS, "string")


@dataclass(frozen=True)
class ServingProblem:
    """Why the worker cannot serve one model: ``model`` is its name in the spec."""

    model: str
    reason: str

    def __str__(self) -> str:
        return f"model {self.model!r}: {self.reason}"


def synthetic_batch(info: ModelInfo, rows: int = SYNTHETIC_ROWS) -> np.ndarray | None:
    """A deterministic batch of ``rows`` flat rows for the model's first input (None: width
    free).

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


def synthetic_feeds(info: ModelInfo, rows: int = SYNTHETIC_ROWS) -> dict[str, np.ndarray]:
    """A deterministic batch for every input, by name, in its declared type and shape.

    >>> from driftline.models.info import TensorInfo
    >>> img = TensorInfo("img", (None, 3, "h", "w"), "float32")
    >>> info = ModelInfo("m", "0" * 64, "m.onnx", (img, TensorInfo("k", (1,), "string")), ())
    >>> {k: (v.shape, v.dtype.kind) for k, v in synthetic_feeds(info).items()}
    {'img': ((2, 3, 16, 16), 'f'), 'k': ((2,), 'O')}
    """
    feeds: dict[str, np.ndarray] = {}
    for t in info.inputs:
        dims = [d if isinstance(d, int) and d >= 0 else FREE_DIM for d in t.shape[1:]]
        shape = (rows, *dims)
        grid = np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)
        if t.dtype == "string":
            feeds[t.name] = np.array([f"v{g % 3}" for g in grid.flat], dtype=object).reshape(shape)
        elif t.dtype == "bool":
            feeds[t.name] = grid % 2 == 1
        elif t.dtype in ("float32", "float64", "float16"):
            feeds[t.name] = ((grid % 7) / 7.0).astype(t.dtype)
        else:
            feeds[t.name] = (grid % 3).astype(t.dtype)
    return feeds


def _guessed(info: ModelInfo) -> bool:
    """Whether the synthetic batch had to guess what requests bring: a size for a free
    non-batch dimension, or the values of a string input (categories it knows)."""
    return any(
        t.dtype == "string" or not (isinstance(d, int) and d >= 0)
        for t in info.inputs
        for d in t.shape[1:]
    )


def _plain(info: ModelInfo) -> bool:
    """Whether the worker feeds this model flat float rows (one float input [batch, width])."""
    if len(info.inputs) != 1:
        return False
    (t,) = info.inputs
    return (
        t.dtype in ("float32", "float64", "float16")
        and len(t.shape) == 2
        and not (isinstance(t.shape[0], int) and t.shape[0] >= 0)
        and isinstance(t.shape[1], int)
        and t.shape[1] >= 0
    )


def _input_problem(info: ModelInfo) -> str | None:
    if not info.inputs:
        return "it has no inputs"
    for t in info.inputs:
        if t.dtype not in _FEED_INPUTS:
            return (
                f"input {t.name!r} has type {t.dtype}; the worker feeds tensors of "
                f"{', '.join(_FEED_INPUTS)}: change the exported graph's input type"
            )
        if not t.shape:
            return (
                f"input {t.name!r} is a scalar; the worker feeds batches: export it with a "
                "batch dimension first"
            )
    return None


def _shadow_problem(info: ModelInfo, champion: ModelInfo) -> str | None:
    if _plain(champion):
        if info.input_width != champion.input_width or len(info.inputs) != 1:
            return (
                f"it takes {info.input_width} values per row but the champion "
                f"{champion.name!r} takes {champion.input_width}; a shadow scores the "
                "champion's rows"
            )
        return None
    theirs = {t.name: t for t in champion.inputs}
    pairs = [(t, theirs.get(t.name)) for t in info.inputs]
    if len(info.inputs) == 1 and len(champion.inputs) == 1:
        pairs = [(info.inputs[0], champion.inputs[0])]
    for mine, other in pairs:
        if other is None:
            return (
                f"its input {mine.name!r} is not an input of the champion {champion.name!r} "
                f"({', '.join(theirs)}); a shadow is fed the champion's inputs by name"
            )
        fixed = [
            (a, b)
            for a, b in zip(mine.shape[1:], other.shape[1:], strict=False)
            if isinstance(a, int) and isinstance(b, int)
        ]
        if (
            mine.dtype != other.dtype
            or len(mine.shape) != len(other.shape)
            or any(a != b for a, b in fixed)
        ):
            return (
                f"its input {mine.name!r} ({mine.dtype} {list(mine.shape)}) does not match the "
                f"champion's {other.name!r} ({other.dtype} {list(other.shape)}); a shadow is fed "
                "the champion's inputs"
            )
    return None


def _output_problem(info: ModelInfo) -> str | None:
    # Every tensor type the model inspection names is carried; sequences and maps are judged
    # by running the model: a ZipMap of class probabilities (skl2onnx's default classifier
    # export) is served as one column per class, a sequence of one tensor per row as lists.
    del info
    return None


def _run_problem(model: object, feeds: dict[str, np.ndarray], expected: int) -> str | None:
    from driftline.models.runtime import LoadedModel, OutputShapeError, carried

    assert isinstance(model, LoadedModel)
    try:
        outputs = model.run_feeds(feeds)
    except OutputShapeError as exc:
        return str(exc)  # the model ran: the made-up inputs are not at fault
    except ModelError as exc:
        if _guessed(model.info):
            return None  # the made-up sizes or strings may be at fault; requests bring theirs
        return f"it fails on a synthetic batch of {expected} rows: {exc}"
    for name, out in zip(model.output_names, outputs, strict=True):
        arr = np.asarray(out)
        if not carried(arr):
            return (
                f"output {name!r} comes back as {arr.dtype} values, which the worker cannot "
                "write into results; export numeric or string tensor outputs (for a "
                "scikit-learn classifier: skl2onnx.to_onnx(model, X, options={id(model): "
                "{'zipmap': False}}))"
            )
        if arr.shape[0] != expected:
            return (
                f"output {name!r} has {arr.shape[0]} rows for a batch of {expected}; the "
                "worker needs one output row per input row"
            )
    return None


def _structure_problem(model: object) -> str | None:
    """A sequence or map output that is not a ZipMap: refused whatever the inputs."""
    from driftline.models.runtime import LoadedModel

    assert isinstance(model, LoadedModel)
    for t in model.info.outputs:
        if t.dtype.startswith("seq(tensor("):
            continue  # one tensor per row: judged by running it
        if t.dtype.startswith(("seq", "map")) and t.name not in model.output_classes:
            return (
                f"output {t.name!r} is an ONNX {t.dtype}, not a ZipMap of class probabilities "
                "nor a sequence of tensors; the worker writes tensors into results: export "
                "tensor outputs"
            )
    return None


def check_servable(models: Sequence[tuple[str, ModelInfo, bool]]) -> list[ServingProblem]:
    """Problems that would stop the worker serving these models (empty: it can serve them).

    ``models`` lists ``(spec name, info, shadow)`` with the champion first. Each model is
    loaded and run once on :func:`synthetic_feeds` of the champion's inputs.
    """
    from driftline.models.runtime import LoadedModel

    problems: list[ServingProblem] = []
    champion = next((info for _, info, shadow in models if not shadow), None)
    for name, info, shadow in models:
        why = _input_problem(info) or _output_problem(info)
        if why is None and shadow and champion is not None:
            why = _shadow_problem(info, champion)
        if why is None:
            try:
                loaded = LoadedModel(info.path, name, info=info)
            except ModelError as exc:
                why = str(exc)
            else:
                why = _structure_problem(loaded)
            if why is None:
                feeds = synthetic_feeds(champion if champion is not None else info)
                mine = {t.name: feeds[t.name] for t in info.inputs if t.name in feeds}
                if len(mine) < len(info.inputs):  # a single input under another name
                    mine = {info.inputs[0].name: next(iter(feeds.values()))}
                why = _run_problem(loaded, mine, SYNTHETIC_ROWS)
        if why is not None:
            problems.append(ServingProblem(name, why))
    return problems
