"""The entry point of the ``driftline`` console script and ``python -m driftline``.

This is the one place where errors become exit codes, so that no traceback reaches a user:
bad arguments and unreadable input exit 2, an unreachable or failing service exits 3, and
anything unexpected prints one line asking for a bug report and exits 70.
"""

from __future__ import annotations

import sys
from typing import NoReturn

import typer
from rich.markup import escape

from driftline._console import err
from driftline.cli.app import EXIT_BUG, EXIT_SERVICE, EXIT_USAGE, app
from driftline.errors import DriftlineError, ServiceError

try:
    # typer vendors its own click (0.2x on); the errors it raises are that copy's classes.
    from typer._click import exceptions as click
except ImportError:  # pragma: no cover - typer releases that use the click package
    from click import exceptions as click  # type: ignore[no-redef]

__all__ = ["classify", "main"]

_BUG_HINT = "this is a bug in driftline; please report it with the command you ran"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _kafka_message(exc: BaseException) -> str:
    first = exc.args[0] if exc.args else None
    describe = getattr(first, "str", None)
    name = getattr(first, "name", None)
    if callable(describe) and callable(name):
        return f"Kafka: {describe()} ({name()})"
    return f"Kafka: {exc}"


def classify(exc: BaseException) -> tuple[int, str]:
    """The exit code and the one-line message for an error that ended a command.

    >>> classify(ServiceError("Kafka at localhost:9092 does not answer"))
    (3, 'Kafka at localhost:9092 does not answer')
    >>> classify(IsADirectoryError(21, "Is a directory", "data"))
    (2, "'data': Is a directory")
    >>> classify(OverflowError("date value out of range"))
    (2, 'date value out of range')
    >>> classify(KeyError("x"))[0]
    70
    """
    from confluent_kafka import KafkaException
    from redis import RedisError

    if isinstance(exc, ServiceError):
        return EXIT_SERVICE, str(exc)
    if isinstance(exc, DriftlineError):
        # A deliberate error may span lines on purpose (an expression with a caret under it).
        return EXIT_USAGE, str(exc)
    if isinstance(exc, KafkaException):
        return EXIT_SERVICE, _one_line(_kafka_message(exc))
    if isinstance(exc, RedisError):
        return EXIT_SERVICE, _one_line(f"Redis: {exc}")
    if isinstance(exc, ConnectionError | TimeoutError):
        return EXIT_SERVICE, _one_line(f"connection failed: {exc}")
    if isinstance(exc, OSError):
        if exc.filename is not None:
            return EXIT_USAGE, _one_line(f"{str(exc.filename)!r}: {exc.strerror or exc}")
        return EXIT_USAGE, _one_line(str(exc))
    if isinstance(exc, OverflowError | ValueError):
        # Input the argument checks let through: out-of-range times, undecodable text.
        return EXIT_USAGE, _one_line(str(exc) or type(exc).__name__)
    return EXIT_BUG, _one_line(f"unexpected {type(exc).__name__}: {exc} — {_BUG_HINT}")


def _usage_line(exc: click.UsageError) -> str:
    ctx = exc.ctx
    where = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
    return _one_line(exc.format_message()) + where


def _fail(code: int, message: str) -> NoReturn:
    err.print(f"[red]error:[/] {escape(message)}", soft_wrap=True)
    sys.exit(code)


def main(args: list[str] | None = None) -> None:
    """Run the ``driftline`` command line and exit with its status."""
    try:
        code = app(args=args, standalone_mode=False)
    except click.NoArgsIsHelpError as exc:
        # ``driftline`` or ``driftline model`` alone: the help is the answer, still a usage exit.
        # typer's rich help prints itself while the error is built; plain help comes as text.
        if exc.format_message().strip():
            print(exc.format_message())
        sys.exit(EXIT_USAGE)
    except click.UsageError as exc:
        _fail(EXIT_USAGE, _usage_line(exc))
    except click.ClickException as exc:
        _fail(exc.exit_code, _one_line(exc.format_message()))
    except typer.Abort:
        _fail(130, "aborted")
    except Exception as exc:
        _fail(*classify(exc))
    sys.exit(code if isinstance(code, int) else 0)
