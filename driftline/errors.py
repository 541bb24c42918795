"""The exceptions driftline raises on purpose.

Every error a user can cause derives from :class:`DriftlineError`; its message names the
field or argument, the offending value and what to do about it.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DriftlineError",
    "ExpressionError",
    "ModelError",
    "ServiceError",
    "SpecError",
]


class DriftlineError(Exception):
    """Root of every error driftline raises deliberately."""


class ConfigError(DriftlineError):
    """A setting (environment variable or file) is missing or invalid."""


class ServiceError(DriftlineError):
    """A local service (Kafka, Redis) cannot be installed, started or reached."""


class ExpressionError(DriftlineError):
    """An expression does not parse or does not type-check.

    Parameters
    ----------
    message:
        What is wrong.
    column:
        1-based column of the offending piece in the source text, when known.
    source:
        The expression text, when known.
    """

    def __init__(self, message: str, column: int | None = None, source: str | None = None):
        self.column = column
        self.source = source
        where = f" (column {column})" if column is not None else ""
        text = f"{message}{where}"
        if source is not None:
            text += f"\n    {source}"
            if column is not None:
                text += "\n    " + " " * (column - 1) + "^"
        super().__init__(text)
        self.reason = message


class SpecError(DriftlineError):
    """A pipeline spec is invalid; ``field`` is the dotted path of the offending entry."""

    def __init__(self, field: str, message: str):
        self.field = field
        self.reason = message
        super().__init__(f"{field}: {message}")


class ModelError(DriftlineError):
    """A model file cannot be stored, loaded or run."""
