"""Expressions over every common kind of output: string labels, whole tensors reduced per
row (variable-length lists included), class names; parsing, kinds and evaluation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driftline.errors import ExpressionError
from driftline.expressions import (
    Literal,
    ModelRef,
    Variable,
    check_kinds,
    evaluate,
    fn,
    from_json,
    parse,
    ragged,
    same,
    to_json,
    to_text,
)

pytestmark = pytest.mark.unit

LABELS = np.array([["setosa"], ["virginica"], ["versicolor"]], dtype=object)
SCORES = ragged([[0.5, 0.75], [], [0.25]])
TENSORS = {("m", "outputs"): [LABELS, SCORES]}
NAMES = {("m", "outputs"): ["output_label", "scores"]}


def run(text: str) -> list[object]:
    out: list[object] = evaluate(parse(text), TENSORS, NAMES).tolist()
    return out


def kinds(var: Variable) -> str:
    return "string" if var.index[0] in ("output_label", 0) else "number"


# -- strings -----------------------------------------------------------------------------


def test_string_literals_compare_with_string_columns() -> None:
    assert run('m.outputs["output_label"][0] != "setosa"') == [False, True, True]
    assert run('m.outputs[0][0] == "virginica"') == [False, True, False]
    assert run('"virginica" == m.outputs[0][0]') == [False, True, False]
    assert run('one_of(m.outputs[0][0], "setosa", "versicolor")') == [True, False, True]
    assert run('m.outputs[0][0].one_of("versicolor")') == [False, False, True]
    assert run('m.outputs[0][0] == "setosa" or len(m.outputs[1]) == 0') == [True, True, False]


def test_sdk_builds_the_same_string_comparison() -> None:
    m = ModelRef("m")
    built = m.outputs["output_label"][0] != "setosa"
    assert same(built, parse('m.outputs["output_label"][0] != "setosa"'))
    assert same(fn.one_of(m.outputs[0][0], "a", "b"), parse('one_of(m.outputs[0][0], "a", "b")'))


def test_string_literals_round_trip_through_text_and_json() -> None:
    for text in ['m.outputs[0][0] == "it\'s \\"quoted\\""', 'm.outputs[0][0] != "été"']:
        expr = parse(text)
        assert same(parse(to_text(expr)), expr)
        assert same(from_json(to_json(expr)), expr)
    assert to_json(parse('m.outputs[0][0] == "a"'))["right"] == {"node": "literal", "value": "a"}


@pytest.mark.parametrize(
    ("text", "hint"),
    [
        ('m.outputs[0][0] > "setosa"', "orders strings"),
        ("m.outputs[0][0] == 1", "compares the string m.outputs[0][0] with the number 1"),
        ("m.outputs[0][0] + 1", "used in arithmetic"),
        ("abs(m.outputs[0][0])", "as a number in abs()"),
        ("not m.outputs[0][0]", "truth value"),
        ('one_of(m.outputs[0][0], "a", 2)', "mixes strings and numbers"),
        ("mean(m.outputs[0])", "mean() needs numbers"),
        ("m.outputs[0][0]", "needs numbers"),
        ('count(m.outputs[0][0], "5m", "1s") > 1', "count()"),
    ],
)
def test_strings_used_as_numbers_are_refused_by_kind_and_at_run_time(text: str, hint: str) -> None:
    with pytest.raises(ExpressionError) as info:
        check_kinds(parse(text), kinds)  # type: ignore[arg-type]
    assert hint in str(info.value)
    assert "m.outputs" in str(info.value)  # the message names the expression
    if "count(" not in text:
        with pytest.raises(ExpressionError):
            run(text)


def test_unknown_kinds_pass_the_check_and_numbers_stay_numbers() -> None:
    assert check_kinds(parse("m.outputs[0][0] == 1"), lambda v: None) == "number"
    assert check_kinds(parse('len(m.outputs[0]) > 0 and m.outputs[0][0] != "a"'), kinds) == (
        "number"
    )


# -- whole tensors, reductions, variable-length rows ---------------------------------------


def test_reductions_over_variable_length_rows_define_empty_lists() -> None:
    assert run("len(m.outputs[1])") == [2.0, 0.0, 1.0]
    assert run('sum(m.outputs["scores"])') == [1.25, 0.0, 0.25]
    mean, low, high = run("mean(m.outputs[1])"), run("min(m.outputs[1])"), run("max(m.outputs[1])")
    assert mean[0] == 0.625 and np.isnan(mean[1]) and mean[2] == 0.25
    assert low[0] == 0.5 and np.isnan(low[1]) and high[0] == 0.75 and np.isnan(high[1])
    # a column of a ragged tensor is each row's j-th value, NaN where the row is shorter
    second = run("m.outputs[1][1]")
    assert second[0] == 0.75 and np.isnan(second[1]) and np.isnan(second[2])
    # NaN (an empty row's mean) is false in a comparison, as everywhere
    assert run("mean(m.outputs[1]) > 0.1") == [True, False, True]


def test_reductions_over_fixed_width_tensors_and_nan() -> None:
    probs = np.array([[0.2, 0.8], [np.nan, 0.5]])
    tensors = {("c", "outputs"): [probs]}
    assert evaluate(parse("max(c.outputs[0])"), tensors)[0] == 0.8
    assert np.isnan(evaluate(parse("max(c.outputs[0])"), tensors)[1])
    assert evaluate(parse("len(c.outputs[0])"), tensors).tolist() == [2.0, 2.0]
    assert evaluate(parse("mean(c.outputs[0])"), tensors)[0] == pytest.approx(0.5)
    empty = {("c", "outputs"): [np.zeros((2, 0))]}
    assert np.isnan(evaluate(parse("mean(c.outputs[0])"), empty)).all()
    assert evaluate(parse("sum(c.outputs[0])"), empty).tolist() == [0.0, 0.0]


def test_min_and_max_keep_their_element_wise_form_and_mean_its_window_form() -> None:
    expr = parse("max(m.outputs[0][0], 1)")
    assert not expr.reduction  # type: ignore[attr-defined]
    alert = parse('mean(max(m.outputs[1]), "5m", "1s") > 0.5')
    assert "aggregate" in str(to_json(alert))
    assert to_text(parse('count(mean(m.outputs["s"]) < 0.5, "5m", "1s") > 2')) == (
        'count(mean(m.outputs["s"]) < 0.5, "5m", "1s") > 2'
    )


@pytest.mark.parametrize(
    ("text", "hint"),
    [
        ("m.outputs[1] > 0", "whole tensor"),
        ("m.outputs[1]", "whole tensor"),
        ("abs(m.outputs[1])", "whole tensor"),
        ("mean(m.outputs[1][0])", "must be a whole tensor"),
        ("len(m.outputs[1], m.outputs[0])", "whole tensor"),
        ("len(m.outputs[0][0], 1)", "len() takes 1"),
    ],
)
def test_whole_tensors_only_inside_reductions(text: str, hint: str) -> None:
    with pytest.raises(ExpressionError) as info:
        parse(text)
    assert hint in str(info.value)


def test_sdk_reductions_take_a_whole_tensor() -> None:
    m = ModelRef("m")
    assert same(fn.len(m.outputs[1]) > 0, parse("len(m.outputs[1]) > 0"))
    assert same(fn.mean(m.outputs["scores"]) < 0.5, parse('mean(m.outputs["scores"]) < 0.5'))
    assert same(fn.max(m.outputs[1]), parse("max(m.outputs[1])"))
    assert same(fn.min(m.outputs[1]), parse("min(m.outputs[1])"))
    assert same(fn.sum(m.outputs[1]), parse("sum(m.outputs[1])"))
    assert same(fn.max(m.outputs[0][0], 1), parse("max(m.outputs[0][0], 1)"))


def test_class_names_parse_as_column_indices() -> None:
    expr = parse('m.outputs["output_probability"]["virginica"] > 0.5')
    assert expr.left == Variable("m", "outputs", ("output_probability", "virginica"))  # type: ignore[attr-defined]
    assert same(ModelRef("m").outputs["output_probability"]["virginica"] > 0.5, expr)
    with pytest.raises(ExpressionError, match="resolved to a column"):
        evaluate(expr, {("m", "outputs"): [np.zeros((1, 3))]}, {("m", "outputs"): ["x"]})


def test_literal_accepts_strings_only_as_text() -> None:
    assert Literal("a").value == "a"
    with pytest.raises(ExpressionError):
        Literal(None)  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.lists(st.one_of(st.floats(-1e6, 1e6), st.just(float("nan"))), max_size=5),
        min_size=1,
        max_size=12,
    )
)
def test_reductions_of_ragged_rows_equal_numpy_row_by_row(rows: list[list[float]]) -> None:
    tensors = {("m", "outputs"): [ragged(rows)]}
    for name, fold in (("mean", np.mean), ("sum", np.sum), ("min", np.min), ("max", np.max)):
        got = evaluate(parse(f"{name}(m.outputs[0])"), tensors)
        want = [fold(r) if r or name == "sum" else np.nan for r in rows]
        np.testing.assert_allclose(got, np.asarray(want, dtype=np.float64), rtol=1e-9)
    lengths = evaluate(parse("len(m.outputs[0])"), tensors)
    assert lengths.tolist() == [float(len(r)) for r in rows]
