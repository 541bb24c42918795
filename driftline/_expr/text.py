"""Render an expression tree as text the parser reads back to the same tree."""

from __future__ import annotations

import json

from driftline._expr.durations import format_duration
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

__all__ = ["to_text"]

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


def _literal(value: bool | int | float) -> tuple[str, int]:
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
