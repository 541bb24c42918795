"""Class names as column indices: ``m.outputs["output_probability"]["virginica"]``.

A ZipMap output (skl2onnx's default classifier export) is served as one probability column
per class, in the model's class order. An expression may name the class instead of its
position; the spec compiler, which has the model file, resolves the name to the column
index against the model's classes, and the canonical spec stores that index: the deployed
form is then read the same way by every process, with or without the model file.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import fields, replace

from driftline._expr.nodes import Expr, Variable
from driftline.errors import ExpressionError

__all__ = ["ClassesOf", "has_class_names", "resolve_classes"]

#: The class labels of the output a variable reads (None: not a ZipMap output, or unknown).
ClassesOf = Callable[[Variable], Sequence[int | str] | None]


def has_class_names(expr: Expr) -> bool:
    """Whether ``expr`` addresses a column by class name."""
    return any(_named(v) for v in _variables(expr))


def resolve_classes(expr: Expr, classes_of: ClassesOf) -> Expr:
    """``expr`` with every class name replaced by its column index.

    >>> from driftline.expressions import parse, to_text
    >>> classes = lambda v: ("setosa", "versicolor", "virginica")
    >>> to_text(resolve_classes(parse('m.outputs["p"]["virginica"] > 0.5'), classes))
    'm.outputs["p"][2] > 0.5'
    >>> resolve_classes(parse('m.outputs["p"]["rose"] > 0.5'), classes)
    Traceback (most recent call last):
    ...
    driftline.errors.ExpressionError: m.outputs["p"]["rose"]: ... classes are ['setosa', ...]
    """
    if not has_class_names(expr):
        return expr
    return _rebuild(expr, classes_of)


def _named(var: Variable) -> bool:
    return len(var.index) == 2 and isinstance(var.index[1], str)


def _variables(expr: Expr) -> list[Variable]:
    from driftline._expr.nodes import children

    out: list[Variable] = []
    stack = [expr]
    while stack:
        node = stack.pop()
        if isinstance(node, Variable):
            out.append(node)
        stack.extend(children(node))
    return out


def _rebuild(expr: Expr, classes_of: ClassesOf) -> Expr:
    if isinstance(expr, Variable):
        if not _named(expr):
            return expr
        name = expr.index[1]
        classes = classes_of(expr)
        tensor = f"{expr.model}.{expr.kind}[{expr.index[0]!r}]"
        if classes is None:
            raise ExpressionError(
                f"{expr}: {tensor} is not a ZipMap output with class names; address its "
                "columns by position (0, 1, ...), or export the classifier with its ZipMap "
                "(skl2onnx's default) to name classes"
            )
        labels = [str(c) for c in classes]
        if name not in labels:
            raise ExpressionError(
                f"{expr}: model {expr.model!r} has no class {name!r}; its classes are {labels}"
            )
        return Variable(expr.model, expr.kind, (expr.index[0], labels.index(str(name))))
    changes: dict[str, object] = {}
    for f in fields(expr):  # type: ignore[arg-type]
        if not f.init:
            continue
        value = getattr(expr, f.name)
        if isinstance(value, Expr):
            changes[f.name] = _rebuild(value, classes_of)
        elif isinstance(value, tuple) and value and all(isinstance(v, Expr) for v in value):
            changes[f.name] = tuple(_rebuild(v, classes_of) for v in value)
    return replace(expr, **changes)  # type: ignore[type-var]
