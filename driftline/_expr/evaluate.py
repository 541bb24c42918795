"""Vectorized evaluation of an expression over the numpy columns of a micro-batch.

Semantics, documented because they differ from plain Python in places:

- every number is computed in float64; booleans used as numbers are 0.0 / 1.0;
- comparisons involving NaN are False (IEEE, as numpy does), ``!=`` with NaN is True;
- a number used as a condition (``and``, ``or``, ``not``, count) is true when it is non-zero
  and not NaN;
- ``x / 0`` is ±inf (NaN for ``0 / 0``), ``sqrt``/``log`` of negatives are NaN, ``log(0)`` is
  -inf; no warning or error is raised for any of these;
- ``min``/``max``/``clip`` propagate NaN;
- string columns (a classifier's label output) and string literals compare with ``==``,
  ``!=`` and ``one_of`` only, and only with strings; anything else on a string (arithmetic,
  ordering, a number, a truth value) raises :class:`~driftline.errors.ExpressionError` (the
  spec compiler refuses such expressions before they run, see :mod:`driftline._expr.types`);
- a whole tensor of each row (``m.outputs[i]``, of any length, possibly a different one per
  row: see :func:`ragged`) is reduced per row by ``len``, ``mean``, ``sum``, ``min`` and
  ``max``; of an empty list, ``len`` is 0, ``sum`` is 0 and ``mean``/``min``/``max`` are NaN;
  NaN inside a list propagates into ``mean``/``sum``/``min``/``max``. Column ``j`` of a tensor
  whose rows differ in length is each row's ``j``-th value, NaN where a row is shorter.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
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
    whole_tensor_message,
)
from driftline.errors import ExpressionError

__all__ = ["as_number", "as_truth", "evaluate", "is_ragged", "is_text", "ragged", "tensor_rows"]

Tensors = Mapping[tuple[str, str], Sequence[np.ndarray]]
Names = Mapping[tuple[str, str], Sequence[str]]


def is_text(value: Any) -> bool:
    """Whether a column (or a literal) holds strings."""
    return np.asarray(value).dtype.kind in "OUS"


def as_number(value: np.ndarray, what: object = None) -> np.ndarray:
    """float64 view of a column (booleans become 0.0 / 1.0); strings are refused."""
    if is_text(value):
        raise ExpressionError(
            f"{what if what is not None else 'a value'} is a string, used as a number; strings "
            'only compare with strings (== "a", != "a", one_of(x, "a", "b"))'
        )
    return np.asarray(value, dtype=np.float64)


def as_truth(value: np.ndarray, what: object = None) -> np.ndarray:
    """Boolean view of a column: non-zero and not NaN is true; strings are refused."""
    value = np.asarray(value)
    if value.dtype == np.bool_:
        return value
    number = as_number(value, what)
    return (number != 0) & ~np.isnan(number)


def ragged(rows: Sequence[Any]) -> np.ndarray:
    """A tensor whose rows differ in length: an ``(n, 1)`` object array holding each row's
    values as a 1-D array (float64 for numbers; JSON ``null`` becomes NaN).

    >>> t = ragged([[0.5, 0.25], [], [1]])
    >>> t.shape, [len(r) for r in tensor_rows(t)]
    ((3, 1), [2, 0, 1])
    """
    out = np.empty((len(rows), 1), dtype=object)
    for i, row in enumerate(rows):
        values = np.asarray(row).reshape(-1)
        if values.dtype.kind not in "OUS" or all(v is None or _numeric(v) for v in values):
            values = np.asarray(values, dtype=np.float64)
        out[i, 0] = values
    return out


def _numeric(value: Any) -> bool:
    return isinstance(value, int | float | np.number | np.bool_)


def is_ragged(tensor: np.ndarray) -> bool:
    """Whether ``tensor`` is a :func:`ragged` tensor."""
    return (
        tensor.dtype == object
        and tensor.ndim == 2
        and tensor.shape[1] == 1
        and tensor.shape[0] > 0
        and isinstance(tensor[0, 0], np.ndarray)
    )


def tensor_rows(tensor: np.ndarray) -> list[np.ndarray]:
    """Each row's values of a 2-D or :func:`ragged` tensor, as 1-D arrays."""
    if is_ragged(tensor):
        return list(tensor[:, 0])
    return list(np.asarray(tensor).reshape(tensor.shape[0], -1))


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
    if is_text(result):
        raise ExpressionError(
            f"{expr} gives strings; a validation, an alert or an assay needs a condition or a "
            f'number: compare it, e.g. {expr} == "a label"'
        )
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


_FOLDS: dict[str, Callable[..., Any]] = {
    "mean": np.mean,
    "sum": np.sum,
    "min": np.min,
    "max": np.max,
}


def _reduce_ragged(fn: str, rows: list[np.ndarray]) -> np.ndarray:
    """``fn`` (mean, sum, min, max) of each row, in one ``reduceat`` over all values rather
    than a numpy call per row; an empty row gives NaN (0 for sum)."""
    lengths = np.fromiter((r.size for r in rows), dtype=np.int64, count=len(rows))
    out = np.zeros(len(rows)) if fn == "sum" else np.full(len(rows), np.nan)
    nonempty = lengths > 0
    if not nonempty.any():
        return out
    flat = np.concatenate([r for r in rows if r.size]).astype(np.float64, copy=False)
    starts = (np.cumsum(lengths) - lengths)[nonempty]
    ufunc = {"min": np.minimum, "max": np.maximum}.get(fn, np.add)
    reduced = ufunc.reduceat(flat, starts)
    out[nonempty] = reduced / lengths[nonempty] if fn == "mean" else reduced
    return out


class _Evaluator:
    def __init__(self, tensors: Tensors, names: Names, n_rows: int) -> None:
        self.tensors = tensors
        self.names = names
        self.n_rows = n_rows
        self.cache: dict[tuple[Any, ...], np.ndarray] = {}

    def eval(self, expr: Expr) -> Any:
        if isinstance(expr, Literal):
            if isinstance(expr.value, str):
                return np.str_(expr.value)
            return np.bool_(expr.value) if isinstance(expr.value, bool) else np.float64(expr.value)
        if isinstance(expr, Variable):
            return self.variable(expr)
        if isinstance(expr, BinOp):
            left = as_number(self.eval(expr.left), expr.left)
            right = as_number(self.eval(expr.right), expr.right)
            if expr.op == "+":
                return left + right
            if expr.op == "-":
                return left - right
            if expr.op == "*":
                return left * right
            return left / right
        if isinstance(expr, Compare):
            raw_left, raw_right = self.eval(expr.left), self.eval(expr.right)
            if is_text(raw_left) or is_text(raw_right):
                return self.text_equal(expr, expr.op, raw_left, raw_right)
            left, right = as_number(raw_left), as_number(raw_right)
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
            result = as_truth(self.eval(expr.values[0]), expr.values[0])
            for value in expr.values[1:]:
                result = combine(result, as_truth(self.eval(value), value))
            return result
        if isinstance(expr, Not):
            return ~as_truth(self.eval(expr.operand), expr.operand)
        if isinstance(expr, Neg):
            return -as_number(self.eval(expr.operand), expr.operand)
        if isinstance(expr, Call):
            return self.call(expr)
        if isinstance(expr, Aggregate):
            raise ExpressionError(
                f"{expr.fn}() is a window aggregate: it is computed by the monitor over a "
                "window, not per row; use it only at the top of an alert condition"
            )
        raise TypeError(f"not an expression node: {expr!r}")

    def text_equal(self, expr: Expr, op: str, left: Any, right: Any) -> np.ndarray:
        """``==`` / ``!=`` between strings; anything else involving a string is an error."""
        if op not in ("==", "!=") or not (is_text(left) and is_text(right)):
            raise ExpressionError(
                f"{expr}: strings only compare with strings, by == and != (or one_of); "
                "compare a label output with a quoted label, or a number with a number"
            )
        equal = np.equal(np.asarray(left).astype(str), np.asarray(right).astype(str))
        return equal if op == "==" else ~equal

    def reduce(self, expr: Call) -> np.ndarray:
        (var,) = expr.args
        assert isinstance(var, Variable)
        tensor = self.tensor(var)
        if not is_ragged(tensor):
            matrix = tensor.reshape(self.n_rows, -1)
            if expr.fn == "len":
                return np.full(self.n_rows, float(matrix.shape[1]))
            if is_text(matrix):
                raise ExpressionError(f"{expr}: {var} holds strings; {expr.fn}() needs numbers")
            if matrix.shape[1] or expr.fn == "sum":
                return _FOLDS[expr.fn](matrix.astype(np.float64), axis=1)
            return np.full(self.n_rows, np.nan)
        rows: list[np.ndarray] = list(tensor[:, 0])
        if expr.fn == "len":
            return np.fromiter((r.size for r in rows), dtype=np.float64, count=len(rows))
        if any(r.dtype.kind in "OUS" for r in rows):
            raise ExpressionError(f"{expr}: {var} holds strings; {expr.fn}() needs numbers")
        return _reduce_ragged(expr.fn, rows)

    def call(self, expr: Call) -> Any:
        if expr.reduction:
            return self.reduce(expr)
        if expr.fn == "one_of":
            raw = [self.eval(a) for a in expr.args]
            if any(is_text(v) for v in raw):
                hit = self.text_equal(expr, "==", raw[0], raw[1])
                for value in raw[2:]:
                    hit = hit | self.text_equal(expr, "==", raw[0], value)
                return hit
        args = [as_number(self.eval(a), a) for a in expr.args]
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

    def tensor(self, var: Variable) -> np.ndarray:
        """The whole tensor ``var`` reads: 2-D (rows first), or :func:`ragged`."""
        seq = self.tensors.get((var.model, var.kind))
        if seq is None:
            raise ExpressionError(f"{var}: no {var.kind} given for model {var.model!r}")
        position = var.index[0]
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
        return tensor

    def variable(self, var: Variable) -> np.ndarray:
        key = (var.model, var.kind, *var.index)
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        if var.whole:
            raise ExpressionError(whole_tensor_message(var))
        column = var.index[1]
        if isinstance(column, str):
            raise ExpressionError(
                f"{var}: the class name {column!r} is resolved to a column when the spec is "
                "compiled; evaluate the compiled expression"
            )
        tensor = self.tensor(var)
        if is_ragged(tensor):
            if any(r.dtype.kind in "OUS" for r in tensor[:, 0]):
                raise ExpressionError(
                    f"{var}: the rows of this string tensor differ in length; "
                    f"use len({var.model}.{var.kind}[{var.index[0]!r}])"
                )
            values = np.array(
                [float(r[column]) if column < r.size else np.nan for r in tensor[:, 0]],
                dtype=np.float64,
            )
            self.cache[key] = values
            return values
        if column >= tensor.shape[1]:
            raise ExpressionError(
                f"{var}: column {column} out of range; the tensor has {tensor.shape[1]} columns"
            )
        column_values = tensor[:, column]
        values = (
            column_values.astype(str)
            if column_values.dtype.kind in "OUS"
            else column_values.astype(np.float64)
        )
        self.cache[key] = values
        return values
