"""The driftline expression language: parse, build (SDK), serialize and evaluate.

Text and SDK objects build the same frozen tree::

    >>> from driftline.expressions import ModelRef, fn, parse, same
    >>> m = ModelRef("ccfraud")
    >>> built = fn.abs(m.outputs[0][0] - 0.5) <= 0.05
    >>> same(parse("abs(ccfraud.outputs[0][0] - 0.5) <= 0.05"), built)
    True

Python's ``abs``, ``and``, ``or``, ``not`` and ``if`` cannot work on an unevaluated expression and
raise :class:`~driftline.errors.ExpressionError`; use ``fn.abs``, ``&``, ``|`` and ``~``.
Trees compare structurally with :func:`same` (``==`` builds a comparison).
"""

from __future__ import annotations

from typing import Any, overload
from typing import Literal as TLiteral

from driftline._expr.alert import AlertCondition, alert_condition
from driftline._expr.classes import has_class_names, resolve_classes
from driftline._expr.durations import format_duration, parse_duration
from driftline._expr.evaluate import as_number, as_truth, evaluate, ragged
from driftline._expr.nodes import (
    AGGREGATES,
    ROW_FUNCTIONS,
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
    as_expr,
    children,
    is_model_name,
    same,
    to_text,
)
from driftline._expr.parse import parse
from driftline._expr.serialize import from_json, to_json
from driftline._expr.types import Kind, KindOf, check_kinds
from driftline.errors import ExpressionError

__all__ = [
    "AGGREGATES",
    "ROW_FUNCTIONS",
    "Aggregate",
    "AlertCondition",
    "BinOp",
    "BoolOp",
    "Call",
    "Compare",
    "Expr",
    "Kind",
    "KindOf",
    "Literal",
    "ModelRef",
    "Neg",
    "Not",
    "Variable",
    "alert_condition",
    "as_expr",
    "as_number",
    "as_truth",
    "check_kinds",
    "contains_aggregate",
    "evaluate",
    "fn",
    "format_duration",
    "from_json",
    "has_class_names",
    "is_model_name",
    "parse",
    "parse_duration",
    "ragged",
    "resolve_classes",
    "same",
    "to_json",
    "to_text",
    "variables",
]


def variables(expr: Expr) -> set[Variable]:
    """Every model variable ``expr`` reads.

    >>> expr = parse("a.outputs[0][0] - b.inputs[0][3] > a.outputs[0][0]")
    >>> sorted(str(v) for v in variables(expr))
    ['a.outputs[0][0]', 'b.inputs[0][3]']
    """
    found: dict[tuple[Any, ...], Variable] = {}
    stack = [expr]
    while stack:
        node = stack.pop()
        if isinstance(node, Variable):
            found.setdefault(node._key(), node)
        stack.extend(children(node))
    return set(found.values())


def contains_aggregate(expr: Expr) -> bool:
    """Whether a window aggregate occurs anywhere in ``expr``."""
    stack = [expr]
    while stack:
        node = stack.pop()
        if isinstance(node, Aggregate):
            return True
        stack.extend(children(node))
    return False


class _Functions:
    """Functions for SDK expressions: ``fn.abs(x)``, ``fn.count(cond, "5m", "1s")``, ..."""

    def abs(self, x: object) -> Call:
        return Call("abs", (as_expr(x),))

    def min(self, *xs: object) -> Call:
        """Element-wise minimum of two or more values, or the per-row minimum of a whole
        tensor: ``fn.min(m.outputs["scores"])`` (NaN for an empty row)."""
        return Call("min", _arguments(xs))

    def max(self, *xs: object) -> Call:
        """Element-wise maximum, or the per-row maximum of a whole tensor (see :meth:`min`)."""
        return Call("max", _arguments(xs))

    def len(self, tensor: object) -> Call:
        """Number of values of a whole tensor in each row: ``fn.len(m.outputs[1])``."""
        return Call("len", _arguments((tensor,)))

    def clip(self, x: object, lower: object, upper: object) -> Call:
        return Call("clip", (as_expr(x), as_expr(lower), as_expr(upper)))

    def sqrt(self, x: object) -> Call:
        return Call("sqrt", (as_expr(x),))

    def log(self, x: object) -> Call:
        return Call("log", (as_expr(x),))

    def exp(self, x: object) -> Call:
        return Call("exp", (as_expr(x),))

    def isnan(self, x: object) -> Call:
        return Call("isnan", (as_expr(x),))

    def one_of(self, x: object, *values: object) -> Call:
        return Call("one_of", (as_expr(x), *(as_expr(v) for v in values)))

    def count(self, expr: object, width: str, interval: str) -> Aggregate:
        return self._aggregate("count", expr, width, interval)

    @overload
    def sum(self, expr: object) -> Call: ...
    @overload
    def sum(self, expr: object, width: str, interval: str) -> Aggregate: ...
    def sum(
        self, expr: object, width: str | None = None, interval: str | None = None
    ) -> Call | Aggregate:
        """``fn.sum(m.outputs[1])``: per-row sum of a whole tensor (0 for an empty row);
        ``fn.sum(expr, width, interval)``: the window aggregate."""
        if width is None and interval is None:
            return Call("sum", _arguments((expr,)))
        return self._aggregate("sum", expr, str(width), str(interval))

    @overload
    def mean(self, expr: object) -> Call: ...
    @overload
    def mean(self, expr: object, width: str, interval: str) -> Aggregate: ...
    def mean(
        self, expr: object, width: str | None = None, interval: str | None = None
    ) -> Call | Aggregate:
        """``fn.mean(m.outputs["scores"])``: per-row mean of a whole tensor (NaN for an
        empty row); ``fn.mean(expr, width, interval)``: the window aggregate."""
        if width is None and interval is None:
            return Call("mean", _arguments((expr,)))
        return self._aggregate("mean", expr, str(width), str(interval))

    def rate(self, expr: object, width: str, interval: str) -> Aggregate:
        return self._aggregate("rate", expr, width, interval)

    @staticmethod
    def _aggregate(
        name: TLiteral["count", "sum", "mean", "rate"], expr: object, width: str, interval: str
    ) -> Aggregate:
        durations = []
        for label, text in (("width", width), ("interval", interval)):
            try:
                durations.append(parse_duration(text))
            except ValueError as exc:
                raise ExpressionError(f"fn.{name}(): {label} {exc}") from None
        return Aggregate(name, as_expr(expr), durations[0], durations[1])

    def __repr__(self) -> str:
        return "driftline.fn"


def _arguments(values: tuple[object, ...]) -> tuple[Expr, ...]:
    """Function arguments as expressions; ``m.outputs[i]`` alone is a whole tensor."""
    return tuple(
        Variable(v.model, v.kind, (v.position,)) if isinstance(v, _Column) else as_expr(v)
        for v in values
    )


#: The SDK's function namespace (``from driftline import fn``).
fn = _Functions()


class _Column:
    """``model.outputs[i]``: needs a column index before it is a value."""

    __slots__ = ("kind", "model", "position")

    def __init__(self, model: str, kind: TLiteral["outputs", "inputs"], position: int | str):
        self.model, self.kind, self.position = model, kind, position

    def __getitem__(self, column: int | str) -> Variable:
        """Column ``column``: a position, or a class name of a ZipMap output."""
        return Variable(self.model, self.kind, (self.position, column))

    def _misuse(self, *_: object) -> Any:
        raise ExpressionError(
            f"{self.model}.{self.kind}[{self.position!r}] is a whole tensor; select a column, "
            f"e.g. {self.model}.{self.kind}[{self.position!r}][0], or reduce it per row with "
            "fn.len, fn.mean, fn.sum, fn.min or fn.max"
        )

    __lt__ = __le__ = __gt__ = __ge__ = __add__ = __sub__ = __mul__ = __truediv__ = _misuse
    __eq__ = __ne__ = __and__ = __or__ = __bool__ = _misuse
    __hash__ = None  # type: ignore[assignment]


class _Tensors:
    __slots__ = ("kind", "model")

    def __init__(self, model: str, kind: TLiteral["outputs", "inputs"]):
        self.model, self.kind = model, kind

    def __getitem__(self, position: int | str) -> _Column:
        return _Column(self.model, self.kind, position)


class ModelRef:
    """A handle on a model by name for building expressions: ``ModelRef("m").outputs[0][0]``."""

    def __init__(self, name: str):
        if not isinstance(name, str) or not is_model_name(name):
            raise ValueError(f"name={name!r}: a model name must be an identifier such as 'ccfraud'")
        self.name = name

    @property
    def outputs(self) -> _Tensors:
        return _Tensors(self.name, "outputs")

    @property
    def inputs(self) -> _Tensors:
        return _Tensors(self.name, "inputs")

    def __repr__(self) -> str:
        return f"ModelRef({self.name!r})"
