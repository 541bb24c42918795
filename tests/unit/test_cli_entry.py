"""How the CLI's one error handler maps what ended a command to an exit code and one line."""

from __future__ import annotations

import pytest
import redis
from confluent_kafka import KafkaError, KafkaException

from driftline.cli.entry import classify, main
from driftline.errors import ConfigError, ExpressionError, ServiceError, SpecError
from driftline.streams.produce import DeadLettered

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("exc", "code", "words"),
    [
        (ServiceError("Kafka at b:9092 does not answer"), 3, ["b:9092"]),
        (SpecError("alerts.x.when", "bad duration '5 minutes'"), 2, ["alerts.x.when"]),
        (ConfigError("--from 'x': use epoch ms"), 2, ["--from"]),
        (DeadLettered("wrong_width", "29 expected"), 2, ["wrong_width"]),
        (
            KafkaException(KafkaError(KafkaError.UNSUPPORTED_VERSION, "broker says no")),
            3,
            ["Kafka", "broker says no", "UNSUPPORTED_VERSION"],
        ),
        (redis.ConnectionError("Error 111 connecting"), 3, ["Redis", "111"]),
        (redis.AuthenticationError("invalid password"), 3, ["Redis", "invalid password"]),
        (ConnectionRefusedError(111, "Connection refused"), 3, ["Connection refused"]),
        (IsADirectoryError(21, "Is a directory", "data"), 2, ["'data'", "Is a directory"]),
        (PermissionError(13, "Permission denied", "/x"), 2, ["'/x'", "Permission denied"]),
        (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"), 2, ["utf-8"]),
        (OverflowError("date value out of range"), 2, ["out of range"]),
        (ValueError("year 292278994 is out of range"), 2, ["292278994"]),
        (RuntimeError("boom\nsecond line"), 70, ["RuntimeError", "boom second line", "bug"]),
    ],
)
def test_each_error_gets_its_exit_code_and_a_message_naming_it(
    exc: BaseException, code: int, words: list[str]
) -> None:
    got, message = classify(exc)
    assert got == code
    for w in words:
        assert w in message
    if not isinstance(exc, SpecError | ConfigError | ServiceError | DeadLettered):
        assert "\n" not in message


def test_a_deliberate_message_keeps_its_lines() -> None:
    # an expression error points at its column under the source: that layout is the message
    exc = ExpressionError("unknown name 'x'", column=3, source="1 + x")
    code, message = classify(exc)
    assert code == 2
    assert message.splitlines()[-1].strip() == "^"


def test_main_turns_a_usage_error_into_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as ended:
        main(["worker", "--metrics-port", "99999"])
    assert ended.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("error: ") and "--metrics-port" in err and "worker --help" in err


def test_main_exits_0_after_a_command_that_succeeds(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as ended:
        main(["--version"])
    assert ended.value.code == 0
    assert capsys.readouterr().out.startswith("driftline ")
