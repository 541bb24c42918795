"""What kind of value an expression gives, checked before it runs: numbers or strings.

String columns (a classifier's label output) compare with string literals by ``==``, ``!=``
and ``one_of`` only. Everything else on a string (arithmetic, ordering, a comparison with a
number, a truth value, a reduction other than ``len``, a window aggregate, an assay) has no
meaning here and is refused when the spec is compiled, naming the piece and the fix, instead
of failing on every row at serving time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal as TLiteral

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

__all__ = ["Kind", "KindOf", "check_kinds"]

#: ``"number"`` (numbers and booleans), ``"string"``, or ``None`` when not known (a model
#: known by hash only): unknown kinds are checked when the expression runs.
Kind = TLiteral["number", "string"] | None
#: The kind of value a variable reads (for a whole tensor: of its elements).
KindOf = Callable[[Variable], Kind]

_FIX = 'compare a string output with a quoted label (m.outputs["output_label"][0] == "setosa")'


def check_kinds(expr: Expr, kind_of: KindOf, *, want_number: bool = True) -> Kind:
    """The kind of value ``expr`` gives; raises :class:`ExpressionError` where a string is
    used as a number or compared with one. ``want_number``: the whole expression must give
    numbers (conditions, assays and alert values all do).

    >>> from driftline.expressions import parse
    >>> kinds = lambda v: "string" if v.index[0] == "label" else "number"
    >>> check_kinds(parse('m.outputs["label"][0] != "setosa"'), kinds)
    'number'
    >>> check_kinds(parse('m.outputs["label"][0] > 1'), kinds)
    Traceback (most recent call last):
    ...
    driftline.errors.ExpressionError: m.outputs["label"][0] > 1 compares the string ...
    """
    kind = _Checker(kind_of).kind(expr)
    if want_number and kind == "string":
        raise ExpressionError(
            f"{expr} gives strings, but a condition, an alert value or an assay needs numbers; "
            f"{_FIX}, and for an assay monitor a number (a probability, or such a comparison)"
        )
    return kind


class _Checker:
    def __init__(self, kind_of: KindOf) -> None:
        self.kind_of = kind_of

    def number(self, expr: Expr, parent: Expr, use: str) -> None:
        if self.kind(expr) == "string":
            raise ExpressionError(f"{parent}: {expr} is a string, used {use}; {_FIX}")

    def kind(self, expr: Expr) -> Kind:
        if isinstance(expr, Literal):
            return "string" if isinstance(expr.value, str) else "number"
        if isinstance(expr, Variable):
            return self.kind_of(expr)
        if isinstance(expr, BinOp):
            for side in (expr.left, expr.right):
                self.number(side, expr, f"in arithmetic ({expr.op})")
            return "number"
        if isinstance(expr, Neg):
            self.number(expr.operand, expr, "as a number (negated)")
            return "number"
        if isinstance(expr, Compare):
            left, right = self.kind(expr.left), self.kind(expr.right)
            if "string" in (left, right):
                if "number" in (left, right):
                    raise ExpressionError(
                        f"{expr} compares the string {_pick(expr, left)} with the number "
                        f"{_pick(expr, left, other=True)}; {_FIX}, or a number with a number"
                    )
                if expr.op not in ("==", "!="):
                    raise ExpressionError(
                        f"{expr} orders strings ({expr.op}); strings compare by == and != "
                        f"only: {_FIX}"
                    )
            return "number"
        if isinstance(expr, BoolOp):
            for value in expr.values:
                self.number(value, expr, f"as a truth value ({expr.op})")
            return "number"
        if isinstance(expr, Not):
            self.number(expr.operand, expr, "as a truth value (not)")
            return "number"
        if isinstance(expr, Call):
            return self.call(expr)
        if isinstance(expr, Aggregate):
            self.number(expr.expr, expr, f"in {expr.fn}(), which counts or adds numbers")
            return "number"
        raise TypeError(f"not an expression node: {expr!r}")

    def call(self, expr: Call) -> Kind:
        if expr.reduction:
            (var,) = expr.args
            assert isinstance(var, Variable)
            if expr.fn != "len" and self.kind_of(var) == "string":
                raise ExpressionError(
                    f"{expr}: {var} holds strings and {expr.fn}() needs numbers; "
                    f"use len({var}), or reduce a numeric output"
                )
            return "number"
        if expr.fn == "one_of":
            kinds = [self.kind(a) for a in expr.args]
            if "string" in kinds and "number" in kinds:
                raise ExpressionError(
                    f"{expr} mixes strings and numbers; one_of compares a string output with "
                    "quoted labels, or a number with numbers"
                )
            return "number"
        for arg in expr.args:
            self.number(arg, expr, f"as a number in {expr.fn}()")
        return "number"


def _pick(expr: Compare, left: Kind, *, other: bool = False) -> Expr:
    """The string side of a comparison (``other``: the number side)."""
    string_left = left == "string"
    return expr.left if string_left != other else expr.right
