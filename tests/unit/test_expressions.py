from __future__ import annotations

import ast
import builtins
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from driftline.errors import ExpressionError
from driftline.expressions import (
    Aggregate,
    BinOp,
    BoolOp,
    Call,
    Compare,
    Expr,
    Literal,
    ModelRef,
    Neg,
    Not,
    Variable,
    alert_condition,
    evaluate,
    fn,
    from_json,
    parse,
    same,
    to_json,
    to_text,
    variables,
)

pytestmark = pytest.mark.unit

MODELS = ("a", "b")
WIDTH = 3  # columns per tensor in the random data


# -- random trees ------------------------------------------------------------------------------

finite_floats = st.floats(allow_nan=False, allow_infinity=False, width=64)
literals = st.one_of(
    st.integers(min_value=-(10**6), max_value=10**6),
    finite_floats,
    st.booleans(),
).map(Literal)
variables_st = st.builds(
    Variable,
    st.sampled_from(MODELS),
    st.sampled_from(("outputs", "inputs")),
    st.tuples(st.integers(0, 1), st.integers(0, WIDTH - 1)),
)


def _node(children: st.SearchStrategy[Expr]) -> st.SearchStrategy[Expr]:
    two = st.tuples(children, children)
    return st.one_of(
        st.builds(lambda op, lr: BinOp(op, *lr), st.sampled_from("+-*/"), two),
        st.builds(
            lambda op, lr: Compare(op, *lr),
            st.sampled_from(["<", "<=", ">", ">=", "==", "!="]),
            two,
        ),
        st.builds(
            BoolOp,
            st.sampled_from(["and", "or"]),
            st.lists(children, min_size=2, max_size=3).map(tuple),
        ),
        st.builds(
            lambda a, b, op: BoolOp.of(op, a, b), children, children, st.sampled_from(["and", "or"])
        ),
        children.map(Not),
        children.map(lambda e: -e),
        st.builds(
            lambda name, x: Call(name, (x,)),
            st.sampled_from(["abs", "sqrt", "log", "exp", "isnan"]),
            children,
        ),
        st.builds(
            lambda name, xs: Call(name, tuple(xs)),
            st.sampled_from(["min", "max"]),
            st.lists(children, min_size=2, max_size=3),
        ),
        st.builds(lambda x, lo, hi: Call("clip", (x, lo, hi)), children, children, children),
        st.builds(
            lambda x, vs: Call("one_of", (x, *vs)),
            children,
            st.lists(literals, min_size=1, max_size=3),
        ),
    )


row_exprs = st.recursive(st.one_of(literals, variables_st), _node, max_leaves=12)
durations = st.sampled_from([250, 1000, 60_000, 3_600_000, 86_400_000])


@st.composite
def alert_exprs(draw: st.DrawFn) -> Expr:
    interval = draw(durations)
    width = interval * draw(st.integers(1, 10))
    agg = Aggregate(
        draw(st.sampled_from(["count", "sum", "mean", "rate"])), draw(row_exprs), width, interval
    )
    op = draw(st.sampled_from(["<", "<=", ">", ">=", "==", "!="]))
    number = draw(literals.filter(lambda lit: not isinstance(lit.value, bool)))
    return Compare(op, agg, number) if draw(st.booleans()) else Compare(op, number, agg)


any_exprs = st.one_of(row_exprs, alert_exprs())


# -- round trips -------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(any_exprs)
def test_tree_text_tree_round_trip(expr: Expr) -> None:
    text = to_text(expr)
    back = parse(text)
    assert same(back, expr), (text, expr, back)
    assert to_text(back) == text


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(any_exprs)
def test_text_tree_json_tree_text_round_trip(expr: Expr) -> None:
    text = to_text(expr)
    data = orjson.loads(orjson.dumps(to_json(parse(text))))
    rebuilt = from_json(data)
    assert same(rebuilt, expr)
    assert to_text(rebuilt) == text
    assert to_json(rebuilt) == data


def test_json_form_is_stable() -> None:
    expr = parse('count(ccfraud.outputs["probability"][1] > 0.95, "5m", "1s") > 10')
    assert to_json(expr) == {
        "node": "binop",
        "op": ">",
        "left": {
            "node": "aggregate",
            "fn": "count",
            "expr": {
                "node": "binop",
                "op": ">",
                "left": {
                    "node": "variable",
                    "model": "ccfraud",
                    "kind": "outputs",
                    "index": ["probability", 1],
                },
                "right": {"node": "literal", "value": 0.95},
            },
            "width_ms": 300_000,
            "interval_ms": 1_000,
        },
        "right": {"node": "literal", "value": 10},
    }


@pytest.mark.parametrize(
    "bad",
    [
        {"node": "nope"},
        {"node": "literal"},
        {"node": "literal", "value": None},
        {"node": "literal", "value": [1]},
        {"node": "literal", "value": 1, "extra": 2},
        {"node": "variable", "model": "1a", "kind": "outputs", "index": [0, 0]},
        {"node": "variable", "model": "a", "kind": "outputs", "index": 0},
        {
            "node": "binop",
            "op": "**",
            "left": {"node": "literal", "value": 1},
            "right": {"node": "literal", "value": 1},
        },
        {"node": "fn", "fn": "system", "arguments": []},
        {"node": "unary", "op": "~", "operand": {"node": "literal", "value": 1}},
        [1, 2],
    ],
)
def test_from_json_rejects_malformed_trees(bad: Any) -> None:
    with pytest.raises(ExpressionError):
        from_json(bad)


# -- SDK operators -----------------------------------------------------------------------------


def test_sdk_builds_the_same_tree_as_text() -> None:
    m, b = ModelRef("ccfraud"), ModelRef("fraud_base")
    cases: list[tuple[Expr, str]] = [
        (m.outputs[0][0] < 0.95, "ccfraud.outputs[0][0] < 0.95"),
        (
            fn.abs(m.outputs[0][0] - b.outputs[0][0]) <= 0.05,
            "abs(ccfraud.outputs[0][0] - fraud_base.outputs[0][0]) <= 0.05",
        ),
        (
            fn.count(m.outputs[0][0] > 0.95, "5m", "1s") > 10,
            'count(ccfraud.outputs[0][0] > 0.95, "5m", "1s") > 10',
        ),
        (
            (m.outputs[0][0] < 1) & (m.inputs[0][2] > 2) | ~(b.outputs[0][0] == 3),
            "(ccfraud.outputs[0][0] < 1 and ccfraud.inputs[0][2] > 2) "
            "or not fraud_base.outputs[0][0] == 3",
        ),
        (
            2 * m.outputs[0][0] + 1 - 0.5 / b.outputs[0][0],
            "2 * ccfraud.outputs[0][0] + 1 - 0.5 / fraud_base.outputs[0][0]",
        ),
        (-m.outputs[0][0], "-ccfraud.outputs[0][0]"),
        (m.outputs[0][0].one_of(0, 1), "ccfraud.outputs[0][0].one_of(0, 1)"),
        (
            fn.clip(m.outputs["probability"][1], 0, 1),
            'clip(ccfraud.outputs["probability"][1], 0, 1)',
        ),
        (
            fn.max(m.outputs[0][0], 1, fn.sqrt(fn.exp(fn.log(m.outputs[0][1])))),
            "max(ccfraud.outputs[0][0], 1, sqrt(exp(log(ccfraud.outputs[0][1]))))",
        ),
        (
            fn.isnan(m.outputs[0][0]) | (fn.min(m.outputs[0][0], 2) >= 1),
            "isnan(ccfraud.outputs[0][0]) | (min(ccfraud.outputs[0][0], 2) >= 1)",
        ),
        (
            (m.outputs[0][0] > 1) & (m.outputs[0][0] > 2) & (m.outputs[0][0] > 3),
            "ccfraud.outputs[0][0] > 1 and ccfraud.outputs[0][0] > 2 and ccfraud.outputs[0][0] > 3",
        ),
    ]
    for built, text in cases:
        assert same(built, parse(text)), (to_text(built), text)


@pytest.mark.parametrize(
    ("action", "hint"),
    [
        (lambda m: bool(m.outputs[0][0] < 1), "&"),
        (lambda m: (m.outputs[0][0] < 1) and (m.outputs[0][0] > 0), "and"),
        (lambda m: (m.outputs[0][0] < 1) or True, "or"),
        (lambda m: not (m.outputs[0][0] < 1), "not"),
        (lambda m: 1 if m.outputs[0][0] > 0 else 0, "if"),
        (lambda m: abs(m.outputs[0][0]), "fn.abs"),
        (lambda m: float(m.outputs[0][0]), "float"),
        (lambda m: m.outputs[0][0] ** 2, "**"),
        (lambda m: m.outputs[0] < 1, "select a column"),
        (lambda m: fn.count(m.outputs[0][0], "5 minutes", "1s"), "width"),
        (lambda m: fn.count(m.outputs[0][0], "1s", "5m"), "multiple"),
        (lambda m: m.outputs[0][0] < b"high", "b'high'"),
        (lambda m: m.outputs[0][-1], "column index"),
    ],
)
def test_python_constructs_on_expressions_raise_helpful_errors(
    action: Callable[[ModelRef], object], hint: str
) -> None:
    with pytest.raises(ExpressionError) as info:
        action(ModelRef("m"))
    assert hint in str(info.value)


def test_equality_builds_a_comparison_but_sets_work_structurally() -> None:
    m = ModelRef("m")
    assert isinstance(m.outputs[0][0] == 1, Compare)
    assert len({m.outputs[0][0], m.outputs[0][0], m.outputs[0][1]}) == 2
    assert m.outputs[0][0] in [m.outputs[0][1], m.outputs[0][0]]
    with pytest.raises(ExpressionError):
        bool(m.outputs[0][0] == 1)


def test_model_ref_rejects_non_identifier_names() -> None:
    with pytest.raises(ValueError, match="name="):
        ModelRef("fraud-base")


def test_variables_collects_each_variable_once() -> None:
    expr = parse("a.outputs[0][0] + a.outputs[0][0] > b.inputs[0][2] and c.outputs['p'][1] < 1")
    assert {to_text(v) for v in variables(expr)} == {
        "a.outputs[0][0]",
        "b.inputs[0][2]",
        'c.outputs["p"][1]',
    }


# -- parser errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "piece", "column"),
    [
        ("ccfraud.outputs[0][0] < 0.95 + foo", "'foo'", 32),
        ("ccfraud.outputs[0][0] ** 2", "'**'", 1),
        ("ccfraud.outputs[0][0] < __import__('os')", "'__import__'", 25),
        ("ccfraud.outputs[0][x] < 1", "'x'", 20),
        ("ccfraud.outputz[0][0] < 1", "'outputz'", 1),
        ("ccfraud.outputs[0][0] < 1 < 2", "chained", 29),
        ("ccfraud.outputs[0][0] if 1 else 2", "'if' expression", 1),
        ('count(ccfraud.outputs[0][0] > 0.95, "5 minutes", "1s") > 10', "'5 minutes'", 37),
        ('count(ccfraud.outputs[0][0] > 0.95, 5, "1s") > 10', "quoted duration", 37),
        ("ccfraud.outputs[0][0] < b'x'", "b'x'", 25),
        ("ccfraud.outputs[0][0] < -'x'", "negate the string", 25),
        ("  lambda: 1", "lambda", 3),
        ("ccfraud.outputs[0][0] <", "syntax", 23),
        ('a.outputs["é"][0] < 1 + bar', "'bar'", 25),
        ("é.outputs[0][0] < 1", "'é'", 1),
        ("[1, 2]", "a list", 1),
        ("ccfraud.outputs[0][0] in (1, 2)", "'in'", 1),
        ("open('x').read()", "not a function", 1),
    ],
)
def test_parse_errors_name_the_piece_and_column(text: str, piece: str, column: int) -> None:
    with pytest.raises(ExpressionError) as info:
        parse(text)
    assert piece in str(info.value)
    assert info.value.column == column
    assert info.value.source == text


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=80))
def test_fuzz_arbitrary_text_only_raises_expression_error(text: str) -> None:
    try:
        expr = parse(text)
    except ExpressionError:
        return
    assert same(parse(to_text(expr)), expr)


_TOKENS = [
    "a",
    "b",
    ".",
    "outputs",
    "inputs",
    "[",
    "]",
    "0",
    "1",
    "'p'",
    "(",
    ")",
    "<",
    ">=",
    "==",
    "+",
    "-",
    "*",
    "/",
    "and",
    "or",
    "not",
    "&",
    "|",
    "~",
    "abs",
    "min",
    "count",
    ",",
    '"5m"',
    '"1s"',
    "0.5",
    "1e3",
    "__import__",
    "lambda",
    ":",
    "if",
    "else",
    "**",
    "%",
    "import",
    "os",
    "x",
    "=",
    "\n",
    " ",
    "#",
    "\\",
    "'",
    '"',
    "{",
    "}",
    "@",
    "yield",
    "await",
    ";",
]


@settings(max_examples=800, deadline=None)
@given(st.lists(st.sampled_from(_TOKENS), max_size=25).map("".join))
def test_fuzz_token_soup_only_raises_expression_error(text: str) -> None:
    try:
        expr = parse(text)
    except ExpressionError:
        return
    assert same(parse(to_text(expr)), expr)


def test_parser_never_evaluates_or_executes(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    calls: list[str] = []
    real_compile = builtins.compile

    def guarded_compile(
        source: Any, filename: Any, mode: str, flags: int = 0, *a: Any, **k: Any
    ) -> Any:
        if not flags & ast.PyCF_ONLY_AST:
            calls.append("compile")
        return real_compile(source, filename, mode, flags, *a, **k)

    def refuse(*_: Any, **__: Any) -> Any:
        calls.append("eval/exec")
        raise AssertionError("eval/exec called")

    monkeypatch.setattr(builtins, "compile", guarded_compile)
    monkeypatch.setattr(builtins, "eval", refuse)
    monkeypatch.setattr(builtins, "exec", refuse)
    marker = tmp_path / "pwned"
    attacks = [
        f"__import__('os').system('touch {marker}')",
        f"open('{marker}', 'w').write('x')",
        f"a.outputs[0][0] < (lambda: open('{marker}', 'w'))()",
        "a.outputs[0][0].__class__.__mro__[1].__subclasses__()",
        "().__class__.__bases__[0].__subclasses__()",
    ]
    for text in attacks:
        with pytest.raises(ExpressionError):
            parse(text)
    parse("abs(a.outputs[0][0] - b.outputs[0][0]) <= 0.05")
    assert not marker.exists()
    assert calls == []


def test_deep_nesting_and_huge_input_are_refused_cleanly() -> None:
    with pytest.raises(ExpressionError, match="nested"):
        parse("(" * 150 + "a.outputs[0][0]" + ")" * 150 + " + " + "-" * 200 + "1")
    with pytest.raises(ExpressionError, match="limit"):
        parse("a.outputs[0][0] + " * 2000 + "1")
    with pytest.raises(ExpressionError):
        parse("1 + " * 300 + "1")


# -- evaluation --------------------------------------------------------------------------------


def _reference(expr: Expr, row: dict[tuple[str, str], list[list[float]]]) -> Any:
    """Plain, row-at-a-time interpreter the vectorized evaluator must agree with."""

    def num(v: Any) -> float:
        return float(v)

    def truth(v: Any) -> bool:
        if isinstance(v, bool):
            return v
        return v != 0 and not math.isnan(v)

    def go(e: Expr) -> Any:
        if isinstance(e, Literal):
            return e.value if isinstance(e.value, bool) else float(e.value)
        if isinstance(e, Variable):
            return float(row[(e.model, e.kind)][e.index[0]][e.index[1]])  # type: ignore[index]
        if isinstance(e, BinOp):
            left, right = num(go(e.left)), num(go(e.right))
            if e.op == "+":
                return left + right
            if e.op == "-":
                return left - right
            if e.op == "*":
                return left * right
            if right == 0:
                if left == 0 or math.isnan(left):
                    return math.nan
                return math.copysign(math.inf, left) * math.copysign(1.0, right)
            return left / right
        if isinstance(e, Compare):
            left, right = num(go(e.left)), num(go(e.right))
            return {
                "<": left < right,
                "<=": left <= right,
                ">": left > right,
                ">=": left >= right,
                "==": left == right,
                "!=": left != right,
            }[e.op]
        if isinstance(e, BoolOp):
            values = [truth(go(v)) for v in e.values]
            return all(values) if e.op == "and" else any(values)
        if isinstance(e, Not):
            return not truth(go(e.operand))
        if isinstance(e, Neg):
            return -num(go(e.operand))
        if isinstance(e, Call):
            args = [num(go(a)) for a in e.args]
            if e.fn == "abs":
                return abs(args[0])
            if e.fn in ("min", "max"):
                if any(math.isnan(a) for a in args):
                    return math.nan
                pick = np.minimum if e.fn == "min" else np.maximum
                result = args[0]
                for a in args[1:]:
                    result = float(pick(result, a))
                return result
            if e.fn == "clip":
                if any(math.isnan(a) for a in args):
                    return math.nan
                return float(np.minimum(np.maximum(args[0], args[1]), args[2]))
            if e.fn == "isnan":
                return math.isnan(args[0])
            if e.fn == "one_of":
                return any(args[0] == v for v in args[1:])
            with np.errstate(all="ignore"):
                return float(getattr(np, e.fn)(np.float64(args[0])))
        raise AssertionError(e)

    return go(expr)


special = st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -0.0, 1.0, -1.0, 1e308])
cell = st.one_of(special, st.floats(-1e6, 1e6, allow_nan=False), st.floats(allow_nan=True))


@st.composite
def batches(draw: st.DrawFn) -> dict[tuple[str, str], list[np.ndarray]]:
    n = draw(st.integers(1, 6))
    data: dict[tuple[str, str], list[np.ndarray]] = {}
    for model in MODELS:
        for kind in ("outputs", "inputs"):
            data[(model, kind)] = [
                np.array(
                    draw(
                        st.lists(
                            st.lists(cell, min_size=WIDTH, max_size=WIDTH), min_size=n, max_size=n
                        )
                    )
                )
                for _ in range(2)
            ]
    return data


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(row_exprs, batches())
def test_vectorized_evaluator_agrees_with_row_reference(
    expr: Expr, tensors: dict[tuple[str, str], list[np.ndarray]]
) -> None:
    result = evaluate(expr, tensors)
    n = next(iter(tensors.values()))[0].shape[0]
    assert result.shape == (n,)
    expected = [
        _reference(expr, {key: [t[r].tolist() for t in seq] for key, seq in tensors.items()})
        for r in range(n)
    ]
    if result.dtype == np.bool_:
        assert all(isinstance(v, bool) for v in expected)
        assert result.tolist() == expected
    else:
        assert result.dtype == np.float64
        assert not any(isinstance(v, bool) for v in expected)
        np.testing.assert_array_equal(result, np.array(expected, dtype=np.float64))


def test_evaluate_examples_and_nan_semantics() -> None:
    scores = np.array([[0.001], [0.97], [np.nan], [np.inf]], dtype=np.float32)
    base = np.array([[0.002], [0.80], [0.5], [np.inf]], dtype=np.float32)
    tensors = {("ccfraud", "outputs"): [scores], ("fraud_base", "outputs"): [base]}
    assert evaluate(parse("ccfraud.outputs[0][0] < 0.95"), tensors).tolist() == [
        True,
        False,
        False,
        False,
    ]
    assert evaluate(parse("ccfraud.outputs[0][0] >= 0.95"), tensors).tolist() == [
        False,
        True,
        False,
        True,
    ]
    drift = evaluate(
        parse("abs(ccfraud.outputs[0][0] - fraud_base.outputs[0][0]) <= 0.05"), tensors
    )
    assert drift.tolist() == [True, False, False, False]  # inf - inf is NaN: not within tolerance
    assert evaluate(parse("isnan(ccfraud.outputs[0][0])"), tensors).tolist() == [
        False,
        False,
        True,
        False,
    ]
    assert evaluate(parse("not ccfraud.outputs[0][0] - 0.001"), tensors).dtype == np.bool_
    constant = evaluate(parse("1 + 2"), tensors)
    assert constant.tolist() == [3.0] * 4


def test_evaluate_output_names_and_errors() -> None:
    probs = np.array([[0.9, 0.1], [0.2, 0.8]])
    tensors = {("m", "outputs"): [np.array([0, 1]), probs]}
    names = {("m", "outputs"): ["label", "probability"]}
    assert evaluate(parse('m.outputs["probability"][1]'), tensors, names).tolist() == [0.1, 0.8]
    assert evaluate(parse("m.outputs[0][0]"), tensors).tolist() == [0.0, 1.0]
    with pytest.raises(ExpressionError, match="no output named 'proba'"):
        evaluate(parse('m.outputs["proba"][1]'), tensors, names)
    with pytest.raises(ExpressionError, match="column 2 out of range"):
        evaluate(parse("m.outputs[1][2]"), tensors)
    with pytest.raises(ExpressionError, match="tensor index 5 out of range"):
        evaluate(parse("m.outputs[5][0]"), tensors)
    with pytest.raises(ExpressionError, match="no inputs given"):
        evaluate(parse("m.inputs[0][0]"), tensors)
    with pytest.raises(ExpressionError, match="window aggregate"):
        evaluate(parse('count(m.outputs[1][1] > 0.5, "5m", "1s")'), tensors)
    with pytest.raises(ExpressionError, match="n_rows"):
        evaluate(parse("1 < 2"), {})
    assert evaluate(parse("1 < 2"), {}, n_rows=2).tolist() == [True, True]


# -- alert conditions --------------------------------------------------------------------------


def test_alert_condition_normalizes_and_holds() -> None:
    cond = alert_condition(parse('10 < count(m.outputs[0][0] > 0.95, "5m", "1s")'))
    assert (cond.aggregate, cond.op, cond.threshold, cond.width_ms, cond.interval_ms) == (
        "count",
        ">",
        10.0,
        300_000,
        1_000,
    )
    assert same(cond.inner, parse("m.outputs[0][0] > 0.95"))
    assert cond.holds(11) and not cond.holds(10) and not cond.holds(math.nan)
    assert alert_condition(cond.expr) == cond


@pytest.mark.parametrize(
    "text",
    [
        "m.outputs[0][0] > 0.5",
        'count(m.outputs[0][0] > 0.5, "5m", "1s") + 1 > 10',
        'count(m.outputs[0][0] > 0.5, "5m", "1s") > m.outputs[0][0]',
        'count(m.outputs[0][0] > 0.5, "5m", "1s") > True',
        'count(m.outputs[0][0] > 0.5, "5m", "1s") > count(m.outputs[0][0] > 0.5, "5m", "1s")',
        'abs(count(m.outputs[0][0] > 0.5, "5m", "1s")) > 1',
    ],
)
def test_alert_condition_rejects_other_shapes(text: str) -> None:
    with pytest.raises(ExpressionError, match="alert condition"):
        alert_condition(parse(text))


def test_alert_condition_aggregates() -> None:
    values = np.array([[0.99], [0.2], [np.nan], [0.97]])
    tensors = {("m", "outputs"): [values]}
    count = alert_condition(parse('count(m.outputs[0][0] > 0.95, "5m", "1m") > 1'))
    total, n = count.contribution(count.row_values(tensors))
    assert (total, n) == (2.0, 4)
    assert count.value(total, n) == 2.0
    mean = alert_condition(parse('mean(m.outputs[0][0], "5m", "1m") > 0.5'))
    total, n = mean.contribution(mean.row_values(tensors))
    assert n == 3 and mean.value(total, n) == pytest.approx((0.99 + 0.2 + 0.97) / 3)
    assert math.isnan(mean.value(0.0, 0))
    rate = alert_condition(parse('rate(m.outputs[0][0] > 0.95, "1m", "10s") >= 2'))
    assert rate.value(120.0, 500) == 2.0
    total_sum = alert_condition(parse('sum(m.outputs[0][0] > 0.95, "1m", "10s") >= 2'))
    assert total_sum.value(*total_sum.contribution(total_sum.row_values(tensors))) == 2.0
