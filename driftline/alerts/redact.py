"""Keep secrets (SMTP password, webhook URLs, signing keys) out of logs, metrics and events."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from urllib.parse import quote, unquote, urlsplit

from pydantic import SecretStr

from driftline.config import BridgeSettings

__all__ = ["MASK", "RedactingFilter", "Redactor", "secret_values"]

MASK = "***"


def _variants(secret: str) -> set[str]:
    """The secret and the forms it takes once quoted or parsed (URL parts that carry tokens)."""
    out = {secret, quote(secret, safe=""), quote(secret), unquote(secret)}
    if "://" in secret:
        parts = urlsplit(secret)
        if parts.password:
            out |= {parts.password, unquote(parts.password)}
        # Slack and most webhook URLs carry their token in the path or the query.
        if len(parts.path) > 1:
            out.add(parts.path)
        if parts.query:
            out.add(parts.query)
    return {v for v in out if v}


class Redactor:
    """Replace every configured secret value in text with ``***``.

    >>> r = Redactor(["https://hooks.example/T0/B1/xyz", "hunter2"])
    >>> r.redact("POST https://hooks.example/T0/B1/xyz failed; password hunter2")
    'POST *** failed; password ***'
    >>> r.redact("GET /T0/B1/xyz")
    'GET ***'
    """

    def __init__(self, secrets: Iterable[str]):
        found: set[str] = set()
        for s in secrets:
            if s:
                found |= _variants(s)
        # Longest first, so a URL is masked whole before its path would be.
        self._secrets = sorted(found, key=len, reverse=True)

    def __bool__(self) -> bool:
        return bool(self._secrets)

    def redact(self, text: str) -> str:
        for s in self._secrets:
            if s in text:
                text = text.replace(s, MASK)
        return text


class RedactingFilter(logging.Filter):
    """A logging filter that renders each record and masks secrets in the message and traceback."""

    def __init__(self, redactor: Redactor):
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record still must not leak its arguments
            message = str(record.msg)
        record.msg = self.redactor.redact(message)
        record.args = ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redactor.redact(record.exc_text)
        record.exc_info = None
        return True


def secret_values(settings: BridgeSettings) -> list[str]:
    """Every secret string in the bridge settings (SMTP URL, Slack URLs, webhook URLs and keys)."""
    values: list[SecretStr] = []
    if settings.smtp_url is not None:
        values.append(settings.smtp_url)
    values.extend(settings.slack_webhooks.values())
    for conf in settings.webhooks.values():
        values.extend(conf.values())
    return [v.get_secret_value() for v in values if v.get_secret_value()]
