"""Parse expression text with Python's own ``ast`` and a whitelist of node types.

The text is only ever parsed, never compiled or evaluated: ``ast.parse`` builds a syntax tree
and every node is checked against the language below before it becomes an :class:`Expr`.
"""

from __future__ import annotations

import ast
from typing import NoReturn

from driftline._expr.durations import parse_duration
from driftline._expr.nodes import (
    AGGREGATES,
    REDUCTIONS,
    ROW_FUNCTIONS,
    Aggregate,
    BinOp,
    BoolOp,
    Call,
    Compare,
    Expr,
    Literal,
    Not,
    Variable,
    as_expr,
    is_model_name,
    negate,
    whole_tensor_message,
)
from driftline.errors import ExpressionError

__all__ = ["MAX_LENGTH", "parse"]

#: Longer texts are refused before parsing (they are never legitimate conditions).
MAX_LENGTH = 10_000
_MAX_DEPTH = 100

_ARITH = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}
_BITWISE_BOOL = {ast.BitAnd: "and", ast.BitOr: "or"}
_COMPARE = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!="}
_DESCRIBE = {
    ast.Pow: "'**'",
    ast.Mod: "'%'",
    ast.FloorDiv: "'//'",
    ast.MatMult: "'@'",
    ast.LShift: "'<<'",
    ast.RShift: "'>>'",
    ast.BitXor: "'^'",
    ast.In: "'in'",
    ast.NotIn: "'not in'",
    ast.Is: "'is'",
    ast.IsNot: "'is not'",
    ast.Lambda: "lambda",
    ast.IfExp: "an 'if' expression",
    ast.NamedExpr: "':='",
    ast.Await: "await",
    ast.Starred: "'*' unpacking",
    ast.JoinedStr: "an f-string",
    ast.List: "a list",
    ast.Tuple: "a tuple",
    ast.Dict: "a dict",
    ast.Set: "a set",
    ast.ListComp: "a comprehension",
    ast.SetComp: "a comprehension",
    ast.DictComp: "a comprehension",
    ast.GeneratorExp: "a generator",
    ast.Slice: "a slice",
}


def parse(text: str) -> Expr:
    """Parse ``text`` into an expression tree.

    Raises :class:`~driftline.errors.ExpressionError` naming the offending piece and its
    1-based column for anything outside the language.

    >>> parse("ccfraud.outputs[0][0] < 0.95")  # doctest: +NORMALIZE_WHITESPACE
    Compare(op='<', left=Variable(model='ccfraud', kind='outputs', index=(0, 0)),
            right=Literal(value=0.95))
    >>> parse("ccfraud.outputs[0][0] < __import__('os')")
    Traceback (most recent call last):
    ...
    driftline.errors.ExpressionError: unknown function '__import__'; ... (column 25)
    ...
    """
    if not isinstance(text, str):
        raise ExpressionError(f"expression must be text, got {type(text).__name__}")
    if len(text) > MAX_LENGTH:
        raise ExpressionError(
            f"expression is {len(text)} characters long; the limit is {MAX_LENGTH}"
        )
    stripped = text.lstrip()
    if not stripped.strip():
        raise ExpressionError("expression is empty", 1, text)
    return _Parser(text, len(text) - len(stripped)).run(stripped)


class _Parser:
    def __init__(self, source: str, lead: int) -> None:
        self.source = source
        self.lead = lead
        self.lines = source[lead:].splitlines(keepends=True) or [""]

    # -- errors ------------------------------------------------------------------------------
    def column(self, lineno: int | None, byte_offset: int | None) -> int | None:
        """1-based column in the whole text from ast's (line, UTF-8 byte offset)."""
        if lineno is None or byte_offset is None:
            return None
        line_index = max(0, min(lineno - 1, len(self.lines) - 1))
        before = sum(len(line) for line in self.lines[:line_index])
        line = self.lines[line_index].encode("utf-8")
        chars = len(line[: max(0, byte_offset)].decode("utf-8", errors="ignore"))
        return self.lead + before + chars + 1

    def fail(self, message: str, node: ast.AST | None = None) -> NoReturn:
        column = None
        if node is not None:
            column = self.column(getattr(node, "lineno", None), getattr(node, "col_offset", None))
        raise ExpressionError(message, column, self.source)

    def piece(self, node: ast.AST) -> str:
        try:
            segment = ast.get_source_segment(self.source[self.lead :], node)
        except Exception:
            segment = None
        return repr(segment) if segment else type(node).__name__

    # -- entry -------------------------------------------------------------------------------
    def run(self, text: str) -> Expr:
        try:
            tree = ast.parse(text, mode="eval")
        except SyntaxError as exc:
            # an error at the very end of the input comes with offset 0: point at the end
            column = len(self.source.rstrip()) or 1
            if exc.lineno is not None and exc.offset is not None and exc.offset >= 1:
                line_index = max(0, min(exc.lineno - 1, len(self.lines) - 1))
                before = sum(len(line) for line in self.lines[:line_index])
                column = min(self.lead + before + exc.offset, len(self.source) or 1)
            raise ExpressionError(f"syntax error: {exc.msg}", column, self.source) from None
        except (ValueError, RecursionError, MemoryError) as exc:
            raise ExpressionError(f"cannot parse expression: {exc}", None, self.source) from None
        try:
            return self.convert(tree.body, 0)
        except RecursionError:
            raise ExpressionError("expression is nested too deeply", None, self.source) from None

    # -- conversion --------------------------------------------------------------------------
    def convert(self, node: ast.expr, depth: int, *, whole: bool = False) -> Expr:
        """``node`` as an expression; a whole tensor (``m.outputs[i]``) only when ``whole``."""
        if depth > _MAX_DEPTH:
            self.fail(f"expression is nested more than {_MAX_DEPTH} levels deep", node)
        try:
            expr = self._convert(node, depth + 1)
            if not whole and isinstance(expr, Variable) and expr.whole:
                raise ExpressionError(whole_tensor_message(expr))
            return expr
        except ExpressionError as exc:
            if exc.source is not None:
                raise
            # a node constructor refused the values: point at this node
            self.fail(exc.reason, node)

    def _convert(self, node: ast.expr, depth: int) -> Expr:
        if isinstance(node, ast.Constant):
            return self.constant(node)
        if isinstance(node, ast.Subscript | ast.Attribute):
            return self.variable(node)
        if isinstance(node, ast.Name):
            if node.id in ("nan", "inf"):
                self.fail(f"{node.id!r} is not a constant here; use isnan(x) to test for NaN", node)
            self.fail(
                f"bare name {node.id!r} is not a value; refer to a model's data as "
                f"{node.id}.outputs[i][j] or {node.id}.inputs[i][j]",
                node,
            )
        if isinstance(node, ast.BinOp):
            bin_op = type(node.op)
            if bin_op in _ARITH:
                return BinOp(
                    _ARITH[bin_op], self.convert(node.left, depth), self.convert(node.right, depth)
                )
            if bin_op in _BITWISE_BOOL:
                return BoolOp.of(
                    _BITWISE_BOOL[bin_op],
                    self.convert(node.left, depth),
                    self.convert(node.right, depth),
                )
            self.fail(f"operator {_DESCRIBE.get(bin_op, bin_op.__name__)} is not supported", node)
        if isinstance(node, ast.UnaryOp):
            operand = self.convert(node.operand, depth)
            if isinstance(node.op, ast.USub):
                return negate(operand)
            if isinstance(node.op, ast.UAdd):
                return operand
            if isinstance(node.op, ast.Not | ast.Invert):
                return Not(operand)
        if isinstance(node, ast.BoolOp):
            bool_op = "and" if isinstance(node.op, ast.And) else "or"
            return BoolOp(bool_op, tuple(self.convert(v, depth) for v in node.values))
        if isinstance(node, ast.Compare):
            if len(node.ops) != 1:
                self.fail(
                    "chained comparisons are not supported; write (a < b) and (b < c)",
                    node.comparators[1],
                )
            cmp_op = type(node.ops[0])
            if cmp_op not in _COMPARE:
                what = _DESCRIBE.get(cmp_op, cmp_op.__name__)
                self.fail(f"operator {what} is not supported", node)
            return Compare(
                _COMPARE[cmp_op],
                self.convert(node.left, depth),
                self.convert(node.comparators[0], depth),
            )
        if isinstance(node, ast.Call):
            return self.call(node, depth)
        what = _DESCRIBE.get(type(node), type(node).__name__)
        self.fail(f"{what} ({self.piece(node)}) is not part of the expression language", node)

    def constant(self, node: ast.Constant) -> Expr:
        value = node.value
        if isinstance(value, bool | int | float) and not isinstance(value, complex):
            if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**53:
                self.fail(f"integer {value} is too large; use a float", node)
            try:
                return as_expr(value)
            except ExpressionError as exc:
                self.fail(exc.reason, node)
        if isinstance(value, str):
            # compared with string columns (a classifier's labels); type-checked at compile
            return Literal(value)
        self.fail(f"constant {self.piece(node)} is not a number or a string", node)

    def variable(self, node: ast.Subscript | ast.Attribute) -> Variable:
        indices: list[int | str] = []
        index_nodes: list[ast.expr] = []
        current: ast.expr = node
        while isinstance(current, ast.Subscript):
            index_nodes.append(current.slice)
            current = current.value
        if not isinstance(current, ast.Attribute) or not isinstance(current.value, ast.Name):
            self.fail(
                f"{self.piece(node)} is not a model variable; write model.outputs[i][j] "
                "or model.inputs[i][j]",
                node,
            )
        model, kind = current.value.id, current.attr
        if not is_model_name(model):
            self.fail(f"model name {model!r} is not an identifier", current.value)
        if kind not in ("outputs", "inputs"):
            self.fail(
                f"{model}.{kind}: unknown attribute {kind!r}; "
                f"use {model}.outputs or {model}.inputs",
                current,
            )
        index_nodes.reverse()
        # one index is a whole tensor, valid only inside a reduction (checked by the nodes)
        if len(index_nodes) not in (1, 2):
            self.fail(
                f"{model}.{kind} needs exactly two indices, [tensor][column], "
                f"got {len(index_nodes)}",
                node,
            )
        for position, index in enumerate(index_nodes):
            value = index.value if isinstance(index, ast.Constant) else None
            ok_int = isinstance(value, int) and not isinstance(value, bool) and value >= 0
            ok_str = isinstance(value, str) and value != ""
            if not (ok_int or ok_str):
                allowed = (
                    "a non-negative integer or a tensor name"
                    if position == 0
                    else ("a non-negative integer or a class name")
                )
                self.fail(f"index {self.piece(index)} of {model}.{kind} must be {allowed}", index)
            assert isinstance(value, int | str)
            indices.append(value)
        return Variable(model, kind, tuple(indices))  # type: ignore[arg-type]

    def call(self, node: ast.Call, depth: int) -> Expr:
        if node.keywords:
            self.fail("keyword arguments are not supported", node.keywords[0].value)
        for arg in node.args:
            if isinstance(arg, ast.Starred):
                self.fail("'*' unpacking is not supported", arg)
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr == "one_of":
            # x.one_of(a, b) is the SDK's spelling of one_of(x, a, b)
            receiver = self.convert(func.value, depth)
            return Call("one_of", (receiver, *(self.convert(a, depth) for a in node.args)))
        if not isinstance(func, ast.Name):
            self.fail(f"{self.piece(func)} is not a function of the expression language", func)
        name = func.id
        if name in REDUCTIONS and len(node.args) == 1:
            return Call(name, (self.convert(node.args[0], depth, whole=True),))
        if name in AGGREGATES:
            return self.aggregate(name, node, depth)
        if name not in ROW_FUNCTIONS:
            self.fail(
                f"unknown function {name!r}; available: "
                + ", ".join(sorted({*ROW_FUNCTIONS, *AGGREGATES, *REDUCTIONS})),
                func,
            )
        return Call(name, tuple(self.convert(a, depth) for a in node.args))

    def aggregate(self, name: str, node: ast.Call, depth: int) -> Aggregate:
        if len(node.args) != 3:
            self.fail(
                f'{name}() takes (expr, width, interval), e.g. {name}(expr, "5m", "1s"); '
                f"got {len(node.args)} argument(s)",
                node,
            )
        inner = self.convert(node.args[0], depth)
        durations: list[int] = []
        for label, arg in zip(("width", "interval"), node.args[1:], strict=True):
            if not (isinstance(arg, ast.Constant) and isinstance(arg.value, str)):
                self.fail(f'{name}(): the {label} must be a quoted duration such as "5m"', arg)
            try:
                durations.append(parse_duration(arg.value))
            except ValueError as exc:
                self.fail(f"{name}(): {label} {exc}", arg)
            if durations[-1] <= 0:
                self.fail(f"{name}(): the {label} must be positive", arg)
        return Aggregate(name, inner, durations[0], durations[1])  # type: ignore[arg-type]
