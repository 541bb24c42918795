"""The one notify-target grammar shared by specs, the SDK and the bridge."""

from __future__ import annotations

import pytest

from driftline import notify
from driftline.errors import DriftlineError
from driftline.notify import Target, TargetError, parse_target

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "target"),
    [
        ("email:ops@example.com", Target("email", "ops@example.com")),
        ("email:first.last+drift@mail.example.co.uk", Target("email", "first.last+drift@mail.example.co.uk")),  # noqa: E501
        ("slack:fraud-alerts", Target("slack", "fraud-alerts")),
        ("webhook:pager_duty.v2", Target("webhook", "pager_duty.v2")),
        ("stdout", Target("stdout")),
    ],
)  # fmt: skip
def test_valid_targets_parse_and_print_back(text: str, target: Target) -> None:
    assert parse_target(text) == target
    assert str(parse_target(text)) == text


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("pager:ops", "unknown channel 'pager'"),
        ("Email:ops@example.com", "unknown channel 'Email'"),
        ("slack:", "missing name; write 'slack:CHANNEL'"),
        ("webhook", "missing name; write 'webhook:NAME'"),
        ("stdout:x", "stdout takes no name"),
        ("stdout:", "stdout takes no name"),
        ("email:nobody", "not an email address"),
        ("email:a@x.example,b@y.example", "not an email address"),
        ("email:a@x.example;b@y.example", "not an email address"),
        ("email:a@x.example b@y.example", "not an email address"),
        ("email:a@x.example\r\nBcc: v@evil.example", "not an email address"),
        ("email:a@x.example\n", "not an email address"),
        ("email:Ops <ops@example.com>", "not an email address"),
        ('email:"a,b"@example.com', "not an email address"),
        ("email:a@@example.com", "not an email address"),
        ("email:.a@example.com", "not an email address"),
        ("email:a@-bad.example", "not an email address"),
        ("email:" + "a" * 250 + "@example.com", "not an email address"),
        (" email:ops@example.com", "unknown channel"),
        ("slack:#fraud", "must be a name"),
        ("slack:https://hooks.slack.com/services/T0/B0/x", "must be a name"),
        ("webhook:a b", "must be a name"),
    ],
)
def test_invalid_targets_are_refused_with_the_fix(text: str, words: str) -> None:
    with pytest.raises(TargetError) as info:
        parse_target(text)
    assert words in str(info.value)
    assert repr(text) in str(info.value)
    assert isinstance(info.value, DriftlineError) and isinstance(info.value, ValueError)


def test_non_string_target_is_refused() -> None:
    with pytest.raises(TargetError, match="expected a string"):
        parse_target(5)  # type: ignore[arg-type]


def test_sdk_classes_render_the_same_grammar() -> None:
    targets = [
        notify.Email(to="ops@example.com"),
        notify.Slack(channel="#fraud-alerts"),
        notify.Webhook(name="pager"),
        notify.Stdout(),
    ]
    assert [str(t) for t in targets] == [
        "email:ops@example.com",
        "slack:fraud-alerts",
        "webhook:pager",
        "stdout",
    ]
    assert [parse_target(str(t)) for t in targets] == [
        Target("email", "ops@example.com"),
        Target("slack", "fraud-alerts"),
        Target("webhook", "pager"),
        Target("stdout"),
    ]


@pytest.mark.parametrize("to", ["a@x.example,b@y.example", "ops", "a@x.example\r\nBcc: e@x.y"])
def test_sdk_email_refuses_what_the_spec_refuses(to: str) -> None:
    with pytest.raises(TargetError, match="not an email address"):
        notify.Email(to=to)
