"""Vectorized evaluation of an expression over the numpy columns of a micro-batch.

Semantics, documented because they differ from plain Python in places:

- every number is computed in float64; booleans used as numbers are 0.0 / 1.0;
- comparisons involving NaN are False (IEEE, as numpy does), ``!=`` with NaN is True;
- a number used as a condition (``and``, ``or``, ``not``, count) is true when it is non-zero
  and not NaN;
- ``x / 0`` is ±inf (NaN for ``0 / 0``), ``sqrt``/``log`` of negatives are NaN, ``log(0)`` is
  -inf; no warning or error is raised for any of these;
- ``min``/``max``/``clip`` propagate NaN.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from driftline._expr.nodes import (
    Aggregate,
    BinOp,
    BoolOp,
    Call,
    Compare,
    Expr,
    Literal,
    Neg,
    Not,
    Variable,
)
from driftline.errors import ExpressionError

__all__ = ["as_number", "as_truth", "evaluate"]

Tensors = Mapping[tuple[str, str], Sequence[np.ndarray]]
Names = Mapping[tuple[str, str], Sequence[str]]


def as_number(value: np.ndarray) -> np.ndarray:
    """float64 view of a column (booleans become 0.0 / 1.0)."""
    return np.asarray(value, dtype=np.float64)


def as_truth(value: np.ndarray) -> np.ndarray:
    """Boolean view of a column: non-zero and not NaN is true."""
    value = np.asarray(value)
    if value.dtype == np.bool_:
        return value
    number = value.astype(np.float64, copy=False)
    return (number != 0) & ~np.isnan(number)


def evaluate(
    expr: Expr,
    tensors: Tensors,
    names: Names | None = None,
    *,
    n_rows: int | None = None,
) -> np.ndarray:
    """Evaluate ``expr`` for every row of a micro-batch.

    Parameters
    ----------
    expr:
        A row expression (no window aggregates).
    tensors:
        ``tensors[(model, "outputs")][i]`` is the model's i-th output as a 2-D array of shape
        ``(n_rows, k_i)`` (each row's tensor flattened); likewise ``(model, "inputs")``.
    names:
        ``names[(model, "outputs")]`` lists tensor names, for string indices such as
        ``m.outputs["probability"][1]``.
    n_rows:
        Number of rows; needed only when ``tensors`` is empty.

    Returns
    -------
    numpy.ndarray
        1-D, one value per row: bool for conditions, float64 otherwise.

    Examples
    --------
    >>> import numpy as np
    >>> from driftline.expressions import parse
    >>> scores = np.array([[0.1], [0.97], [np.nan]])
    >>> evaluate(parse("m.outputs[0][0] < 0.95"), {("m", "outputs"): [scores]})
    array([ True, False, False])
    """
    if n_rows is None:
        n_rows = _infer_rows(tensors)
    with np.errstate(all="ignore"):
        result = np.asarray(_Evaluator(tensors, names or {}, n_rows).eval(expr))
    if result.dtype != np.bool_:
        result = result.astype(np.float64, copy=False)
    if result.shape != (n_rows,):
        result = np.broadcast_to(result, (n_rows,)).copy()
    return result


def _infer_rows(tensors: Tensors) -> int:
    for seq in tensors.values():
        for tensor in seq:
            return int(np.shape(tensor)[0])
    raise ExpressionError("no tensors given; pass n_rows= to evaluate a constant expression")


class _Evaluator:
    def __init__(self, tensors: Tensors, names: Names, n_rows: int) -> None:
        self.tensors = tensors
        self.names = names
        self.n_rows = n_rows
        self.cache: dict[tuple[Any, ...], np.ndarray] = {}

    def eval(self, expr: Expr) -> Any:
        if isinstance(expr, Literal):
            return np.bool_(expr.value) if isinstance(expr.value, bool) else np.float64(expr.value)
        if isinstance(expr, Variable):
            return self.variable(expr)
        if isinstance(expr, BinOp):
            left, right = as_number(self.eval(expr.left)), as_number(self.eval(expr.right))
            if expr.op == "+":
                return left + right
            if expr.op == "-":
                return left - right
            if expr.op == "*":
                return left * right
            return left / right
        if isinstance(expr, Compare):
            left, right = as_number(self.eval(expr.left)), as_number(self.eval(expr.right))
            return {
                "<": np.less,
                "<=": np.less_equal,
                ">": np.greater,
                ">=": np.greater_equal,
                "==": np.equal,
                "!=": np.not_equal,
            }[expr.op](left, right)
        if isinstance(expr, BoolOp):
            combine = np.logical_and if expr.op == "and" else np.logical_or
            result = as_truth(self.eval(expr.values[0]))
            for value in expr.values[1:]:
                result = combine(result, as_truth(self.eval(value)))
            return result
        if isinstance(expr, Not):
            return ~as_truth(self.eval(expr.operand))
        if isinstance(expr, Neg):
            return -as_number(self.eval(expr.operand))
        if isinstance(expr, Call):
            return self.call(expr)
        if isinstance(expr, Aggregate):
            raise ExpressionError(
                f"{expr.fn}() is a window aggregate: it is computed by the monitor over a "
                "window, not per row; use it only at the top of an alert condition"
            )
        raise TypeError(f"not an expression node: {expr!r}")

    def call(self, expr: Call) -> Any:
        args = [as_number(self.eval(a)) for a in expr.args]
        name = expr.fn
        if name == "abs":
            return np.abs(args[0])
        if name in ("min", "max"):
            combine = np.minimum if name == "min" else np.maximum
            result = args[0]
            for arg in args[1:]:
                result = combine(result, arg)
            return result
        if name == "clip":
            return np.minimum(np.maximum(args[0], args[1]), args[2])
        if name == "sqrt":
            return np.sqrt(args[0])
        if name == "log":
            return np.log(args[0])
        if name == "exp":
            return np.exp(args[0])
        if name == "isnan":
            return np.isnan(args[0])
        if name == "one_of":
            hit = np.equal(args[0], args[1])
            for arg in args[2:]:
                hit = hit | np.equal(args[0], arg)
            return hit
        raise ExpressionError(f"unknown function {name!r}")

    def variable(self, var: Variable) -> np.ndarray:
        key = (var.model, var.kind, *var.index)
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        seq = self.tensors.get((var.model, var.kind))
        if seq is None:
            raise ExpressionError(f"{var}: no {var.kind} given for model {var.model!r}")
        position, column = var.index
        assert isinstance(column, int)  # Variable guarantees it
        if isinstance(position, str):
            tensor_names = list(self.names.get((var.model, var.kind), ()))
            if position not in tensor_names:
                raise ExpressionError(
                    f"{var}: model {var.model!r} has no {var.kind[:-1]} named {position!r}; "
                    f"its names are {tensor_names}"
                )
            position = tensor_names.index(position)
        if position >= len(seq):
            raise ExpressionError(
                f"{var}: tensor index {position} out of range; model {var.model!r} has "
                f"{len(seq)} {var.kind}"
            )
        tensor = np.asarray(seq[position])
        if tensor.ndim != 2:
            tensor = tensor.reshape(self.n_rows, -1)
        if tensor.shape[0] != self.n_rows:
            raise ExpressionError(
                f"{var}: tensor has {tensor.shape[0]} rows, expected {self.n_rows}"
            )
        if column >= tensor.shape[1]:
            raise ExpressionError(
                f"{var}: column {column} out of range; the tensor has {tensor.shape[1]} columns"
            )
        values = tensor[:, column].astype(np.float64)
        self.cache[key] = values
        return values
