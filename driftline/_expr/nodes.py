"""Expression tree nodes and the operator overloading the SDK builds them with.

Nodes are frozen dataclasses. Because ``==`` on a node builds a :class:`Compare` (as the SDK
needs for ``m.outputs[0][0] == 1``), structural equality is :func:`same`, and nodes hash by
structure so they can live in sets.
"""

from __future__ import annotations

import json
import keyword
import math
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar
from typing import Literal as TLiteral

from driftline._expr.durations import format_duration
from driftline.errors import ExpressionError

__all__ = [
    "AGGREGATES",
    "ARITHMETIC_OPS",
    "BOOL_OPS",
    "COMPARE_OPS",
    "REDUCTIONS",
    "ROW_FUNCTIONS",
    "Aggregate",
    "BinOp",
    "BoolOp",
    "Call",
    "Compare",
    "Expr",
    "Literal",
    "Neg",
    "Not",
    "Variable",
    "as_expr",
    "same",
    "to_text",
]

ARITHMETIC_OPS = ("+", "-", "*", "/")
COMPARE_OPS = ("<", "<=", ">", ">=", "==", "!=")
BOOL_OPS = ("and", "or")
AGGREGATES = ("count", "sum", "mean", "rate")
#: Row function name -> (minimum, maximum) number of arguments (None = unbounded).
ROW_FUNCTIONS: dict[str, tuple[int, int | None]] = {
    "abs": (1, 1),
    "min": (2, None),
    "max": (2, None),
    "clip": (3, 3),
    "sqrt": (1, 1),
    "log": (1, 1),
    "exp": (1, 1),
    "isnan": (1, 1),
    "one_of": (2, None),
    "len": (1, 1),
}
#: Per-row reductions over a whole tensor (``mean(m.outputs["scores"])``): one argument, a
#: tensor without a column index. ``min``/``max`` with two or more arguments stay element-wise,
#: and ``mean``/``sum`` with three are window aggregates.
REDUCTIONS = ("len", "mean", "sum", "min", "max")

_MISUSE = (
    "an expression is not evaluated in Python; {what}. Build conditions with "
    "& (and), | (or), ~ (not) and driftline.fn.abs/min/max instead of Python's abs/and/or/if"
)

Number = int | float | bool
Scalar = int | float | bool | str


class Expr:
    """Base of every expression node; operators build larger expressions."""

    __slots__ = ()
    node: ClassVar[str] = "expr"

    # -- structure ---------------------------------------------------------------------------
    def _key(self) -> tuple[Any, ...]:
        return (type(self).__name__, *(_freeze(getattr(self, f.name)) for f in _fields(self)))

    def __hash__(self) -> int:
        return hash(self._key())

    def __str__(self) -> str:
        return to_text(self)

    # -- arithmetic --------------------------------------------------------------------------
    def __add__(self, other: object) -> BinOp:
        return BinOp("+", self, as_expr(other))

    def __radd__(self, other: object) -> BinOp:
        return BinOp("+", as_expr(other), self)

    def __sub__(self, other: object) -> BinOp:
        return BinOp("-", self, as_expr(other))

    def __rsub__(self, other: object) -> BinOp:
        return BinOp("-", as_expr(other), self)

    def __mul__(self, other: object) -> BinOp:
        return BinOp("*", self, as_expr(other))

    def __rmul__(self, other: object) -> BinOp:
        return BinOp("*", as_expr(other), self)

    def __truediv__(self, other: object) -> BinOp:
        return BinOp("/", self, as_expr(other))

    def __rtruediv__(self, other: object) -> BinOp:
        return BinOp("/", as_expr(other), self)

    def __neg__(self) -> Expr:
        return negate(self)

    def __pos__(self) -> Expr:
        return self

    # -- comparisons -------------------------------------------------------------------------
    def __lt__(self, other: object) -> Compare:
        return Compare("<", self, as_expr(other))

    def __le__(self, other: object) -> Compare:
        return Compare("<=", self, as_expr(other))

    def __gt__(self, other: object) -> Compare:
        return Compare(">", self, as_expr(other))

    def __ge__(self, other: object) -> Compare:
        return Compare(">=", self, as_expr(other))

    def __eq__(self, other: object) -> Compare:  # type: ignore[override]
        return Compare("==", self, as_expr(other), _both_exprs=isinstance(other, Expr))

    def __ne__(self, other: object) -> Compare:  # type: ignore[override]
        return Compare("!=", self, as_expr(other), _both_exprs=isinstance(other, Expr))

    # -- boolean logic -----------------------------------------------------------------------
    def __and__(self, other: object) -> BoolOp:
        return BoolOp.of("and", self, as_expr(other))

    def __rand__(self, other: object) -> BoolOp:
        return BoolOp.of("and", as_expr(other), self)

    def __or__(self, other: object) -> BoolOp:
        return BoolOp.of("or", self, as_expr(other))

    def __ror__(self, other: object) -> BoolOp:
        return BoolOp.of("or", as_expr(other), self)

    def __invert__(self) -> Not:
        return Not(self)

    def one_of(self, *values: object) -> Call:
        """True where the value equals one of ``values``: ``m.outputs[0][0].one_of(0, 1)``."""
        return Call("one_of", (self, *(as_expr(v) for v in values)))

    # -- Python constructs that cannot work on an unevaluated expression -----------------------
    def __bool__(self) -> bool:
        raise ExpressionError(
            _MISUSE.format(
                what=f"it has no truth value ({self}); `and`, `or`, `not` and `if` need one"
            )
        )

    def __abs__(self) -> Expr:
        raise ExpressionError(_MISUSE.format(what=f"use fn.abs({self}), not abs()"))

    def __float__(self) -> float:
        raise ExpressionError(_MISUSE.format(what=f"{self} has no float value"))

    def __int__(self) -> int:
        raise ExpressionError(_MISUSE.format(what=f"{self} has no int value"))

    def __index__(self) -> int:
        raise ExpressionError(_MISUSE.format(what=f"{self} cannot be used as an index"))

    def __round__(self, ndigits: int | None = None) -> Expr:
        raise ExpressionError(_MISUSE.format(what=f"round({self}) is not available"))

    def __iter__(self) -> Any:
        raise ExpressionError(_MISUSE.format(what=f"{self} cannot be iterated"))

    def __pow__(self, other: object) -> Expr:
        raise ExpressionError(_MISUSE.format(what="`**` is not part of the language; use *"))


def _fields(node: Expr) -> list[Any]:
    return [f for f in fields(node) if f.compare]  # type: ignore[arg-type]


def _freeze(value: Any) -> Any:
    if isinstance(value, Expr):
        return value._key()
    if isinstance(value, tuple):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, float) and value == 0.0:
        # keep -0.0 and 0.0 apart so that same() means "renders identically"
        return ("float", math.copysign(1.0, value))
    if isinstance(value, bool | int | float):
        return (type(value).__name__, value)
    return value


def same(a: Expr, b: Expr) -> bool:
    """Structural equality of two expression trees (``==`` builds a comparison instead).

    >>> from driftline.expressions import parse
    >>> same(parse("a.outputs[0][0] < 1"), parse("a.outputs[0][0]<1"))
    True
    >>> same(parse("a.outputs[0][0] < 1"), parse("a.outputs[0][0] < 1.0"))
    False
    """
    return a._key() == b._key()


def as_expr(value: object) -> Expr:
    """Wrap a Python number or string as a :class:`Literal`; pass expressions through."""
    if isinstance(value, Expr):
        return value
    if isinstance(value, bool | int | float | str):
        return Literal(value)
    try:
        import numpy as np

        if isinstance(value, np.bool_ | np.integer | np.floating):
            return Literal(value.item())
    except ImportError:  # pragma: no cover - numpy is a dependency
        pass
    raise ExpressionError(
        f"cannot use {value!r} ({type(value).__name__}) in an expression; "
        "use numbers, strings or expressions such as m.outputs[0][0]"
    )


@dataclass(frozen=True, eq=False, repr=True)
class Literal(Expr):
    """A number (int, float), boolean or string constant (strings compare with string
    columns, such as a classifier's label output)."""

    value: Scalar
    node: ClassVar[str] = "literal"

    def __post_init__(self) -> None:
        if not isinstance(self.value, bool | int | float | str):
            raise ExpressionError(
                f"literal must be a number, boolean or string, got {self.value!r}"
            )
        if isinstance(self.value, float) and not math.isfinite(self.value):
            raise ExpressionError(
                f"literal {self.value!r} is not a finite number; use a finite constant or isnan()"
            )


@dataclass(frozen=True, eq=False, repr=True)
class Variable(Expr):
    """``<model>.<kind>[i][j]``: column ``j`` of tensor ``i`` (a position or an output name).

    ``j`` may be a class name for a ZipMap output (a classifier's per-class probabilities,
    resolved against the model's classes when the spec is compiled). ``<model>.<kind>[i]``
    alone is the whole tensor of each row, allowed only as the argument of a reduction
    (``len``, ``mean``, ``sum``, ``min``, ``max``).
    """

    model: str
    kind: TLiteral["outputs", "inputs"]
    index: tuple[int | str, ...]
    node: ClassVar[str] = "variable"

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not is_model_name(self.model):
            raise ExpressionError(
                f"model name {self.model!r} is not an identifier; use letters, digits and '_'"
            )
        if self.kind not in ("outputs", "inputs"):
            raise ExpressionError(f"variable kind {self.kind!r} must be 'outputs' or 'inputs'")
        index = tuple(self.index)
        object.__setattr__(self, "index", index)
        if len(index) not in (1, 2):
            raise ExpressionError(
                f"{self.model}.{self.kind} needs two indices, [tensor][column], got {list(index)}"
            )
        tensor, column = index[0], index[-1]
        if isinstance(tensor, bool) or not (
            (isinstance(tensor, int) and tensor >= 0) or (isinstance(tensor, str) and tensor)
        ):
            raise ExpressionError(
                f"{self.model}.{self.kind}[{tensor!r}]: the tensor index must be a "
                "non-negative integer or a tensor name"
            )
        good_column = (isinstance(column, int) and column >= 0) or (
            isinstance(column, str) and column != ""
        )
        if len(index) == 2 and (isinstance(column, bool) or not good_column):
            raise ExpressionError(
                f"{self.model}.{self.kind}[{tensor!r}][{column!r}]: the column index must be a "
                "non-negative integer or a class name"
            )

    @property
    def whole(self) -> bool:
        """Whether this is a whole tensor (``m.outputs[i]``), not one column of it."""
        return len(self.index) == 1


@dataclass(frozen=True, eq=False, repr=True)
class BinOp(Expr):
    """Arithmetic: ``left op right`` with op in ``+ - * /``."""

    op: str
    left: Expr
    right: Expr
    node: ClassVar[str] = "binop"

    def __post_init__(self) -> None:
        if self.op not in ARITHMETIC_OPS:
            raise ExpressionError(f"unknown arithmetic operator {self.op!r}")
        _check_children(self, self.left, self.right)


@dataclass(frozen=True, eq=False, repr=True)
class Compare(Expr):
    """Comparison ``left op right``; NaN compares False (IEEE, as numpy does)."""

    op: str
    left: Expr
    right: Expr
    _both_exprs: bool = field(default=False, compare=False, repr=False)
    node: ClassVar[str] = "binop"

    def __post_init__(self) -> None:
        if self.op not in COMPARE_OPS:
            raise ExpressionError(f"unknown comparison operator {self.op!r}")
        _check_children(self, self.left, self.right)

    def __bool__(self) -> bool:
        # `a == b` between two expressions is also how containers (sets, `in`) ask whether two
        # trees are the same; answer that structurally, as SQLAlchemy does.
        if self._both_exprs and self.op in ("==", "!="):
            equal = same(self.left, self.right)
            return equal if self.op == "==" else not equal
        return Expr.__bool__(self)


@dataclass(frozen=True, eq=False, repr=True)
class BoolOp(Expr):
    """``and`` / ``or`` over two or more operands."""

    op: str
    values: tuple[Expr, ...]
    node: ClassVar[str] = "boolop"

    def __post_init__(self) -> None:
        if self.op not in BOOL_OPS:
            raise ExpressionError(f"unknown boolean operator {self.op!r}")
        values = tuple(self.values)
        object.__setattr__(self, "values", values)
        if len(values) < 2:
            raise ExpressionError(f"{self.op!r} needs at least two operands")
        _check_children(self, *values)

    @classmethod
    def of(cls, op: str, left: Expr, right: Expr) -> BoolOp:
        """Combine, flattening ``(a & b) & c`` into one ``and`` as the parser does."""
        values: list[Expr] = []
        for position, side in enumerate((left, right)):
            if position == 0 and isinstance(side, BoolOp) and side.op == op:
                values.extend(side.values)
            else:
                values.append(side)
        return cls(op, tuple(values))


@dataclass(frozen=True, eq=False, repr=True)
class Not(Expr):
    """Logical negation."""

    operand: Expr
    node: ClassVar[str] = "unary"

    def __post_init__(self) -> None:
        _check_children(self, self.operand)


@dataclass(frozen=True, eq=False, repr=True)
class Neg(Expr):
    """Arithmetic negation of a non-literal (``-literal`` is folded into the literal)."""

    operand: Expr
    node: ClassVar[str] = "unary"

    def __post_init__(self) -> None:
        _check_children(self, self.operand)
        if isinstance(self.operand, Literal) and not isinstance(self.operand.value, bool):
            raise ExpressionError("negate a number with a negative literal, not Neg(Literal)")


@dataclass(frozen=True, eq=False, repr=True)
class Call(Expr):
    """A row function: abs, min, max, clip, sqrt, log, exp, isnan, one_of, or a reduction
    over a whole tensor of the row: len, mean, sum, min, max."""

    fn: str
    args: tuple[Expr, ...]
    node: ClassVar[str] = "fn"

    @property
    def reduction(self) -> bool:
        """Whether this reduces a whole tensor of each row to one number."""
        return self.fn in REDUCTIONS and len(self.args) == 1

    def __post_init__(self) -> None:
        args = tuple(self.args)
        object.__setattr__(self, "args", args)
        if self.reduction:
            (arg,) = args
            if not (isinstance(arg, Variable) and arg.whole):
                raise ExpressionError(
                    f"{self.fn}() of one argument reduces a whole tensor, such as "
                    f'{self.fn}(m.outputs["scores"]); got {arg!r}'
                    if not isinstance(arg, Expr)
                    else f"{self.fn}({arg}): the argument must be a whole tensor, such as "
                    f'm.outputs["scores"] (no column index)'
                )
            return
        if self.fn in AGGREGATES:
            raise ExpressionError(
                f"{self.fn}() is a window aggregate: write {self.fn}(expr, width, interval)"
            )
        if self.fn not in ROW_FUNCTIONS:
            raise ExpressionError(
                f"unknown function {self.fn!r}; available: "
                + ", ".join(sorted([*ROW_FUNCTIONS, *AGGREGATES]))
            )
        low, high = ROW_FUNCTIONS[self.fn]
        if len(args) < low or (high is not None and len(args) > high):
            want = str(low) if low == high else f"at least {low}"
            raise ExpressionError(f"{self.fn}() takes {want} argument(s), got {len(args)}")
        _check_children(self, *args)


@dataclass(frozen=True, eq=False, repr=True)
class Aggregate(Expr):
    """A window aggregate ``fn(expr, width, interval)``; only at the top of alert conditions."""

    fn: TLiteral["count", "sum", "mean", "rate"]
    expr: Expr
    width_ms: int
    interval_ms: int
    node: ClassVar[str] = "aggregate"

    def __post_init__(self) -> None:
        if self.fn not in AGGREGATES:
            raise ExpressionError(f"unknown aggregate {self.fn!r}; use one of {list(AGGREGATES)}")
        _check_children(self, self.expr)
        if _contains_aggregate(self.expr):
            raise ExpressionError(f"{self.fn}(): aggregates cannot be nested")
        for name, value in (("width", self.width_ms), ("interval", self.interval_ms)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ExpressionError(f"{self.fn}(): {name} must be a positive duration")
        if self.width_ms < self.interval_ms or self.width_ms % self.interval_ms:
            raise ExpressionError(
                f"{self.fn}(): the window width ({self.width_ms} ms) must be a positive multiple "
                f"of the interval ({self.interval_ms} ms)"
            )


def _check_children(parent: Expr, *children: object) -> None:
    for child in children:
        if not isinstance(child, Expr):
            raise ExpressionError(
                f"{type(parent).__name__}: operand {child!r} is not an expression"
            )
        if isinstance(child, Variable) and child.whole:
            raise ExpressionError(whole_tensor_message(child))


def whole_tensor_message(var: Variable) -> str:
    """Why a whole tensor cannot stand where a value is needed, and what to write."""
    return (
        f"{var} is a whole tensor; select a column ({var}[0]) or reduce it per row with "
        f"len({var}), mean({var}), sum({var}), min({var}) or max({var})"
    )


def _contains_aggregate(expr: Expr) -> bool:
    if isinstance(expr, Aggregate):
        return True
    return any(_contains_aggregate(c) for c in children(expr))


def children(expr: Expr) -> tuple[Expr, ...]:
    """The direct sub-expressions of ``expr``."""
    if isinstance(expr, BinOp | Compare):
        return (expr.left, expr.right)
    if isinstance(expr, BoolOp):
        return expr.values
    if isinstance(expr, Not | Neg):
        return (expr.operand,)
    if isinstance(expr, Call):
        return expr.args
    if isinstance(expr, Aggregate):
        return (expr.expr,)
    return ()


def negate(expr: Expr) -> Expr:
    """``-expr``, folding the sign into numeric literals so ``-0.5`` is one literal."""
    if isinstance(expr, Literal) and isinstance(expr.value, str):
        raise ExpressionError(f"cannot negate the string {expr.value!r}")
    if isinstance(expr, Literal) and isinstance(expr.value, int | float):
        if isinstance(expr.value, bool):
            return Neg(expr)
        return Literal(-expr.value)
    return Neg(expr)


def is_model_name(name: str) -> bool:
    """Model names are Python identifiers that are not keywords (``ccfraud``, ``fraud_base``)."""
    return name.isidentifier() and name.isascii() and not keyword.iskeyword(name)


# -- text ---------------------------------------------------------------------------------

# Python's own precedence, so the text parses back into the same tree.
_OR, _AND, _NOT, _COMPARE, _ADD, _MUL, _UNARY, _ATOM = 1, 2, 3, 4, 6, 7, 8, 10
_BINOP_PREC = {"+": _ADD, "-": _ADD, "*": _MUL, "/": _MUL}


def to_text(expr: Expr) -> str:
    """The canonical text of ``expr``.

    >>> from driftline.expressions import parse
    >>> to_text(parse("abs( a.outputs[0][0]-b.outputs[0][0] )<=0.05"))
    'abs(a.outputs[0][0] - b.outputs[0][0]) <= 0.05'
    """
    return _render(expr)[0]


def _wrap(expr: Expr, min_prec: int) -> str:
    text, prec = _render(expr)
    return f"({text})" if prec < min_prec else text


def _literal(value: Scalar) -> tuple[str, int]:
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False), _ATOM
    text = repr(value)
    negative = not isinstance(value, bool) and (value < 0 or text.startswith("-"))
    return text, _UNARY if negative else _ATOM


def _render(expr: Expr) -> tuple[str, int]:
    if isinstance(expr, Literal):
        return _literal(expr.value)
    if isinstance(expr, Variable):
        parts = "".join(
            f"[{json.dumps(i, ensure_ascii=False) if isinstance(i, str) else i}]"
            for i in expr.index
        )
        return f"{expr.model}.{expr.kind}{parts}", _ATOM
    if isinstance(expr, BinOp):
        prec = _BINOP_PREC[expr.op]
        return f"{_wrap(expr.left, prec)} {expr.op} {_wrap(expr.right, prec + 1)}", prec
    if isinstance(expr, Compare):
        left = _wrap(expr.left, _COMPARE + 1)
        return f"{left} {expr.op} {_wrap(expr.right, _COMPARE + 1)}", _COMPARE
    if isinstance(expr, BoolOp):
        prec = _OR if expr.op == "or" else _AND
        return f" {expr.op} ".join(_wrap(v, prec + 1) for v in expr.values), prec
    if isinstance(expr, Not):
        return f"not {_wrap(expr.operand, _NOT)}", _NOT
    if isinstance(expr, Neg):
        return f"-{_wrap(expr.operand, _UNARY)}", _UNARY
    if isinstance(expr, Call):
        return f"{expr.fn}({', '.join(_wrap(a, 0) for a in expr.args)})", _ATOM
    if isinstance(expr, Aggregate):
        width, interval = format_duration(expr.width_ms), format_duration(expr.interval_ms)
        return f'{expr.fn}({_wrap(expr.expr, 0)}, "{width}", "{interval}")', _ATOM
    raise TypeError(f"not an expression node: {expr!r}")
