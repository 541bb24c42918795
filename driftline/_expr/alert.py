"""Alert conditions: ``aggregate(expr, width, interval) OP number``."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal as TLiteral

import numpy as np

from driftline._expr.evaluate import Names, Tensors, as_number, as_truth, evaluate
from driftline._expr.nodes import COMPARE_OPS, Aggregate, Compare, Expr, Literal
from driftline.errors import ExpressionError

__all__ = ["AlertCondition", "alert_condition"]

_FLIP = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}


@dataclass(frozen=True)
class AlertCondition:
    """A window aggregate compared with a threshold.

    ``count`` counts rows where ``inner`` is true (non-zero, not NaN); ``sum`` and ``mean``
    aggregate the values of ``inner`` (NaN rows are skipped); ``rate`` is the count per second
    of window width.
    """

    aggregate: TLiteral["count", "sum", "mean", "rate"]
    inner: Expr
    width_ms: int
    interval_ms: int
    op: str
    threshold: float

    def __post_init__(self) -> None:
        if self.op not in COMPARE_OPS:
            raise ExpressionError(f"alert operator {self.op!r} must be one of {list(COMPARE_OPS)}")

    @property
    def expr(self) -> Expr:
        """The condition as an expression tree (normalized: aggregate on the left)."""
        return Compare(
            self.op,
            Aggregate(self.aggregate, self.inner, self.width_ms, self.interval_ms),
            Literal(self.threshold),
        )

    def holds(self, value: float) -> bool:
        """Whether the window's aggregate ``value`` satisfies the condition (NaN never does).

        >>> from driftline.expressions import parse
        >>> c = alert_condition(parse("count(m.outputs[0][0] > 0.95, '5m', '1s') > 10"))
        >>> c.holds(11), c.holds(10), c.holds(float("nan"))
        (True, False, False)
        """
        if math.isnan(value):
            return False
        t = self.threshold
        return {
            "<": value < t,
            "<=": value <= t,
            ">": value > t,
            ">=": value >= t,
            "==": value == t,
            "!=": value != t,
        }[self.op]

    def row_values(self, tensors: Tensors, names: Names | None = None) -> np.ndarray:
        """Per-row contribution for a micro-batch: 0/1 for count and rate, values otherwise."""
        values = evaluate(self.inner, tensors, names)
        if self.aggregate in ("count", "rate"):
            return as_truth(values).astype(np.float64)
        return as_number(values)

    def contribution(self, row_values: np.ndarray) -> tuple[float, int]:
        """``(total, n)`` a bucket adds for these rows; NaN rows are skipped by sum/mean."""
        row_values = np.asarray(row_values, dtype=np.float64)
        if self.aggregate in ("count", "rate"):
            return float(row_values.sum()), int(row_values.size)
        finite = ~np.isnan(row_values)
        return float(row_values[finite].sum()), int(finite.sum())

    def value(self, total: float, n: int) -> float:
        """The aggregate over a window from its summed ``(total, n)``; mean of nothing is NaN.

        >>> from driftline.expressions import parse
        >>> c = alert_condition(parse("rate(m.outputs[0][0] > 0.5, '1m', '10s') >= 2"))
        >>> c.value(180.0, 1000)
        3.0
        """
        if self.aggregate == "mean":
            return total / n if n else math.nan
        if self.aggregate == "rate":
            return total / (self.width_ms / 1000.0)
        return float(total)


def alert_condition(expr: Expr) -> AlertCondition:
    """Check that ``expr`` is ``aggregate(...) OP number`` (either side) and normalize it.

    >>> from driftline.expressions import parse
    >>> alert_condition(parse("10 < count(m.outputs[0][0] > 0.95, '5m', '1s')")).op
    '>'
    """
    if isinstance(expr, Compare):
        left, right, op = expr.left, expr.right, expr.op
        if isinstance(right, Aggregate) and not isinstance(left, Aggregate):
            left, right, op = right, left, _FLIP[op]
        if (
            isinstance(left, Aggregate)
            and isinstance(right, Literal)
            and not isinstance(right.value, bool)
        ):
            return AlertCondition(
                left.fn, left.expr, left.width_ms, left.interval_ms, op, float(right.value)
            )
    raise ExpressionError(
        "an alert condition must compare one window aggregate with a number, e.g. "
        f'count(m.outputs[0][0] > 0.95, "5m", "1s") > 10; got {expr}'
    )
