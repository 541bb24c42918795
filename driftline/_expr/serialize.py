"""The stable JSON tree form of expressions (for specs, diffs and audits)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from driftline._expr.nodes import (
    COMPARE_OPS,
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

__all__ = ["from_json", "to_json"]


def to_json(expr: Expr) -> dict[str, Any]:
    """The JSON tree of ``expr`` (plain dicts, lists, strings and numbers).

    >>> from driftline.expressions import parse
    >>> to_json(parse("m.outputs[0][1] < 0.5"))  # doctest: +NORMALIZE_WHITESPACE
    {'node': 'binop', 'op': '<',
     'left': {'node': 'variable', 'model': 'm', 'kind': 'outputs', 'index': [0, 1]},
     'right': {'node': 'literal', 'value': 0.5}}
    """
    if isinstance(expr, Literal):
        return {"node": "literal", "value": expr.value}
    if isinstance(expr, Variable):
        return {
            "node": "variable",
            "model": expr.model,
            "kind": expr.kind,
            "index": list(expr.index),
        }
    if isinstance(expr, BinOp | Compare):
        return {
            "node": "binop",
            "op": expr.op,
            "left": to_json(expr.left),
            "right": to_json(expr.right),
        }
    if isinstance(expr, BoolOp):
        return {"node": "boolop", "op": expr.op, "values": [to_json(v) for v in expr.values]}
    if isinstance(expr, Not):
        return {"node": "unary", "op": "not", "operand": to_json(expr.operand)}
    if isinstance(expr, Neg):
        return {"node": "unary", "op": "-", "operand": to_json(expr.operand)}
    if isinstance(expr, Call):
        return {"node": "fn", "fn": expr.fn, "arguments": [to_json(a) for a in expr.args]}
    if isinstance(expr, Aggregate):
        return {
            "node": "aggregate",
            "fn": expr.fn,
            "expr": to_json(expr.expr),
            "width_ms": expr.width_ms,
            "interval_ms": expr.interval_ms,
        }
    raise TypeError(f"not an expression node: {expr!r}")


_KEYS = {
    "literal": {"value"},
    "variable": {"model", "kind", "index"},
    "binop": {"op", "left", "right"},
    "boolop": {"op", "values"},
    "unary": {"op", "operand"},
    "fn": {"fn", "arguments"},
    "aggregate": {"fn", "expr", "width_ms", "interval_ms"},
}


def from_json(data: Mapping[str, Any]) -> Expr:
    """Rebuild an expression from :func:`to_json`'s form; malformed input is an ExpressionError.

    >>> from driftline.expressions import parse, to_text
    >>> to_text(from_json(to_json(parse("count(m.outputs[0][0] > 0.9, '5m', '1s') > 10"))))
    'count(m.outputs[0][0] > 0.9, "5m", "1s") > 10'
    """
    try:
        return _from_json(data)
    except ExpressionError:
        raise
    except (TypeError, ValueError, KeyError, AttributeError, RecursionError) as exc:
        raise ExpressionError(f"malformed expression tree: {exc!r}") from None


def _from_json(data: Mapping[str, Any]) -> Expr:
    if not isinstance(data, Mapping):
        raise ExpressionError(f"malformed expression tree: expected an object, got {data!r}")
    kind = data.get("node")
    if kind not in _KEYS:
        raise ExpressionError(f"malformed expression tree: unknown node {kind!r}")
    extra = set(data) - _KEYS[kind] - {"node"}
    missing = _KEYS[kind] - set(data)
    if extra or missing:
        raise ExpressionError(
            f"malformed expression tree: {kind} node has unknown keys {sorted(extra)} "
            f"or lacks {sorted(missing)}"
        )
    if kind == "literal":
        return Literal(data["value"])
    if kind == "variable":
        index = data["index"]
        if not isinstance(index, list | tuple):
            raise ExpressionError(f"malformed expression tree: index {index!r} is not a list")
        return Variable(data["model"], data["kind"], tuple(index))
    if kind == "binop":
        left, right = _from_json(data["left"]), _from_json(data["right"])
        if data["op"] in COMPARE_OPS:
            return Compare(data["op"], left, right)
        return BinOp(data["op"], left, right)
    if kind == "boolop":
        return BoolOp(data["op"], tuple(_from_json(v) for v in _list(data["values"])))
    if kind == "unary":
        operand = _from_json(data["operand"])
        if data["op"] == "not":
            return Not(operand)
        if data["op"] == "-":
            return Neg(operand)
        raise ExpressionError(f"malformed expression tree: unknown unary op {data['op']!r}")
    if kind == "fn":
        return Call(data["fn"], tuple(_from_json(a) for a in _list(data["arguments"])))
    return Aggregate(data["fn"], _from_json(data["expr"]), data["width_ms"], data["interval_ms"])


def _list(value: Any) -> list[Any]:
    if not isinstance(value, list | tuple):
        raise ExpressionError(f"malformed expression tree: expected a list, got {value!r}")
    return list(value)
