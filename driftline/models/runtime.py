"""Run an ONNX model on a micro-batch, with one session created once per process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from driftline.errors import ModelError
from driftline.models.info import ModelInfo, inspect_model, zipmap_classes

__all__ = ["LoadedModel", "OutputShapeError", "carried", "merge_rows"]


class OutputShapeError(ModelError):
    """The model ran, but an output does not have one entry (or one tensor) per row."""


_NUMPY_TYPES = {
    "float32": np.float32,
    "float64": np.float64,
    "float16": np.float16,
    "int64": np.int64,
    "int32": np.int32,
}


class LoadedModel:
    """An ONNX model ready to score batches.

    Parameters
    ----------
    path:
        The ``.onnx`` file.
    name:
        Name to report (defaults to the file stem).
    intra_op_threads:
        Threads onnxruntime may use inside one operator. The default of 1 suits small tabular
        models on a shared machine, where batching matters far more than threads.
    info:
        A :class:`ModelInfo` already computed for this file (skips a second inspection).
    """

    def __init__(
        self,
        path: str | Path,
        name: str | None = None,
        *,
        intra_op_threads: int = 1,
        info: ModelInfo | None = None,
    ) -> None:
        if intra_op_threads < 1:
            raise ValueError(f"intra_op_threads={intra_op_threads}: must be at least 1")
        self.info = info if info is not None else inspect_model(path, name)
        if not self.info.inputs:
            raise ModelError(f"model {self.info.name!r} has no inputs")
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:
            raise ModelError(f"model {self.info.name!r} cannot be loaded: {exc}") from None
        first = self.info.inputs[0]
        self._input_name = first.name
        # None: the first input is not a float matrix; such a model is fed by run_feeds only.
        self._input_dtype = _NUMPY_TYPES.get(first.dtype)
        for t in self.info.inputs:
            if t.dtype not in _FEED_TYPES:
                raise ModelError(
                    f"model {self.info.name!r}: input {t.name!r} has type {t.dtype}; the worker "
                    f"feeds {', '.join(_FEED_TYPES)} tensors"
                )
        self._output_names = [t.name for t in self.info.outputs]
        self._classes = dict(self.info.classes) or zipmap_classes(Path(path), self._output_names)

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def input_width(self) -> int | None:
        """Features per row of the first input (None when the model leaves it free)."""
        return self.info.input_width

    @property
    def output_names(self) -> list[str]:
        return list(self._output_names)

    @property
    def output_classes(self) -> dict[str, list[int | str]]:
        """Class labels of each ZipMap output (a classifier's per-class probabilities), in
        the order of the columns :meth:`run` returns for it."""
        return {name: list(labels) for name, labels in self._classes.items()}

    @property
    def input_specs(self) -> tuple[tuple[str, str, tuple[int | None, ...]], ...]:
        """``(name, dtype, shape)`` of every input, free dimensions as ``None``."""
        return tuple(
            (t.name, t.dtype, tuple(d if isinstance(d, int) and d >= 0 else None for d in t.shape))
            for t in self.info.inputs
        )

    def run_feeds(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Score one batch given by input name (arrays batch-first, in the declared ranks).

        Each output comes back as (n_rows, ...) as the model returns it, ZipMap outputs as one
        column per class. A model fixed to batch size 1 is run once per row.
        """
        missing = [t.name for t in self.info.inputs if t.name not in feeds]
        if missing:
            raise ModelError(f"model {self.name!r}: no value for input(s) {missing}")
        batch = {t.name: _cast(feeds[t.name], t.dtype) for t in self.info.inputs}
        n = int(next(iter(batch.values())).shape[0])
        if n == 0:
            raise ModelError(f"model {self.name!r}: a batch of 0 rows")
        if self._batch_one and n > 1:
            parts = [self.run_feeds({k: v[r : r + 1] for k, v in batch.items()}) for r in range(n)]
            return [merge_rows(cols) for cols in zip(*parts, strict=True)]
        try:
            outputs = self._session.run(self._output_names, batch)
        except Exception as exc:
            raise ModelError(f"model {self.name!r} failed on a batch of {n}: {exc}") from None
        return [
            self._output(name, o, n) for name, o in zip(self._output_names, outputs, strict=True)
        ]

    @property
    def _batch_one(self) -> bool:
        """Whether the model is fixed to batch size 1 (run once per row)."""
        first = self.info.inputs[0].shape
        return bool(first) and first[0] == 1

    def _output(self, name: str, output: Any, n: int) -> np.ndarray:
        if name in self._classes:
            return _columns(output, self._classes[name], n)
        if self._batch_one and n == 1 and not isinstance(output, list | tuple | dict):
            # A batch-1 model's output is the row's, with or without a batch dimension
            # (an object detector's boxes: [N, 4] for the one image).
            return np.asarray(output).reshape(1, -1)
        dtype = next((t.dtype for t in self.info.outputs if t.name == name), "tensor")
        return _rows_first(output, n, name, dtype)

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        """Score a batch: ``x`` has shape (n_rows, input_width); each output is (n_rows, -1)."""
        if self._input_dtype is None or len(self.info.inputs) > 1:
            raise ModelError(
                f"model {self.name!r} takes named or non-float inputs; feed it with run_feeds"
            )
        batch = np.asarray(x, dtype=self._input_dtype)
        if batch.ndim != 2:
            raise ModelError(
                f"model {self.name!r}: expected a 2-D batch (rows, features), got shape "
                f"{batch.shape}"
            )
        width = self.input_width
        if width is not None and batch.shape[1] != width:
            raise ModelError(
                f"model {self.name!r}: rows have {batch.shape[1]} features, the model's input "
                f"{self._input_name!r} takes {width}"
            )
        n = batch.shape[0]
        if n == 0:
            return [np.empty((0, t.width or 0)) for t in self.info.outputs]
        shape = self.info.inputs[0].shape
        if len(shape) > 2 and width is not None:
            batch = batch.reshape((n, *(int(d) for d in shape[1:])))  # type: ignore[arg-type]
        if self._batch_one and n > 1:
            parts = [self.run(batch[r : r + 1].reshape(1, -1)) for r in range(n)]
            return [merge_rows(cols) for cols in zip(*parts, strict=True)]
        try:
            outputs = self._session.run(self._output_names, {self._input_name: batch})
        except Exception as exc:
            raise ModelError(f"model {self.name!r} failed on a batch of {n}: {exc}") from None
        outs = [
            self._output(name, o, n) for name, o in zip(self._output_names, outputs, strict=True)
        ]
        return [o if _is_ragged(o) else o.reshape(n, -1) for o in outs]

    def __repr__(self) -> str:
        return f"LoadedModel({self.name!r}, sha256={self.info.sha256[:12]})"


#: Input types the worker can feed (strings as numpy object arrays of str).
_FEED_TYPES = (*_NUMPY_TYPES, "int8", "uint8", "bool", "string")


def _cast(values: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "string":
        return np.asarray(values, dtype=object)
    return np.ascontiguousarray(values, dtype=np.dtype(dtype))


def _rows_first(output: Any, n: int, name: str, dtype: str = "sequence") -> np.ndarray:
    """An output as an array with one entry per row, or a :class:`ModelError` naming it.

    A sequence of tensors with one tensor per row (an ONNX ``seq(tensor)`` output) is each
    row's values, of any length (:func:`driftline.expressions.ragged`)."""
    if isinstance(output, list | tuple) and all(isinstance(t, np.ndarray) for t in output):
        if len(output) != n:
            raise OutputShapeError(
                f"output {name!r} is an ONNX {dtype} of {len(output)} tensor(s) for {n} rows; "
                "the worker needs one tensor per row: export one tensor per row, or tensor "
                "outputs"
            )
        return merge_rows([t.reshape(1, -1) for t in output])
    if isinstance(output, list | tuple | dict):
        raise OutputShapeError(
            f"output {name!r} is a {type(output).__name__} (an ONNX sequence or map that is not "
            "a ZipMap of class probabilities or a sequence of tensors, one per row), which the "
            "worker cannot write into results; export tensor outputs"
        )
    values = np.asarray(output)
    if values.ndim == 0 or values.shape[0] != n:
        raise OutputShapeError(
            f"output {name!r} has shape {list(values.shape)}, not one entry for each of {n} "
            "rows; export it with the batch dimension first"
        )
    return values


def merge_rows(parts: list[np.ndarray]) -> np.ndarray:
    """Stack per-row (or per-message) outputs: rows of one width as a 2-D array, rows of
    varying length as a ragged tensor (:func:`driftline.expressions.ragged`).

    >>> merge_rows([np.ones((1, 2)), np.zeros((1, 2))]).shape
    (2, 2)
    >>> [r.tolist() for r in merge_rows([np.ones((1, 2)), np.zeros((1, 0))])[:, 0]]
    [[1.0, 1.0], []]
    """
    from driftline._expr.evaluate import ragged

    flat = [
        np.asarray(p).reshape(np.asarray(p).shape[0], -1) if not _is_ragged(p) else p for p in parts
    ]
    if all(not _is_ragged(p) for p in flat) and len({p.shape[1] for p in flat}) == 1:
        return np.concatenate(flat, axis=0)
    rows: list[np.ndarray] = []
    for p in flat:
        rows.extend(p[:, 0] if _is_ragged(p) else list(p))
    return ragged(rows)


def _is_ragged(values: np.ndarray) -> bool:
    from driftline._expr.evaluate import is_ragged

    return is_ragged(np.asarray(values))


def carried(values: np.ndarray) -> bool:
    """Whether a result event can carry an output: numbers, booleans, strings (a
    classifier's labels), and rows of numbers of varying length.

    >>> carried(np.array([["setosa"]], dtype=object)), carried(np.array([[{0: 1.0}]]))
    (True, False)
    """
    if values.dtype.kind in "biufU":
        return True
    if values.dtype.kind != "O":
        return False
    return all(
        isinstance(v, str)
        or (isinstance(v, np.ndarray) and v.ndim == 1 and v.dtype.kind in "biufU")
        for v in values.flat
    )


def _columns(maps: Any, classes: tuple[int | str, ...], n: int) -> np.ndarray:
    """A ZipMap output as one probability column per class, in the node's class order.

    >>> _columns([{0: 0.25, 1: 0.75}, {0: 1.0, 1: 0.0}], (0, 1), 2).tolist()
    [[0.25, 0.75], [1.0, 0.0]]
    """
    rows = list(maps)
    if len(rows) != n:
        raise ModelError(f"a ZipMap output has {len(rows)} maps for {n} rows")
    try:
        return np.array([[row[c] for c in classes] for row in rows], dtype=np.float32).reshape(
            n, len(classes)
        )
    except (KeyError, TypeError) as exc:
        raise ModelError(f"a ZipMap output lacks class {exc} in some row") from None
