"""Senders: deliver one grouped message to one target over SMTP, Slack or a signed webhook.

Each sender raises :class:`DeliveryError` with a short reason code, whether a retry can help
and the receiver's ``Retry-After``. Error texts never contain URLs or credentials; the bridge
still passes them through its redactor before they reach a log or a topic.
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TextIO
from urllib.parse import parse_qs, unquote, urlsplit

import httpx
import orjson
from pydantic import SecretStr

from driftline.alerts.render import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    email_message,
    sign,
    slack_payload,
    stdout_line,
    webhook_body,
)
from driftline.alerts.retry import is_retryable_status, parse_retry_after
from driftline.errors import ConfigError, DriftlineError
from driftline.events import Notification
from driftline.notify import Target

__all__ = [
    "DeliveryError",
    "EmailSender",
    "Sender",
    "SlackSender",
    "SmtpConfig",
    "StdoutSender",
    "WebhookSender",
    "parse_smtp_url",
]


class DeliveryError(DriftlineError):
    """One failed delivery attempt.

    ``reason`` is a short code (``http-500``, ``timeout``, ``smtp-451`` ...) used as a metric
    label; ``permanent`` means retrying cannot help; ``retry_after`` is the receiver's wish.
    """

    def __init__(
        self,
        reason: str,
        detail: str = "",
        *,
        permanent: bool = False,
        retry_after: float | None = None,
    ) -> None:
        self.reason = reason
        self.detail = detail
        self.permanent = permanent
        self.retry_after = retry_after
        super().__init__(f"{reason}: {detail}" if detail else reason)


class Sender(Protocol):
    """Delivers one message (a burst of notifications) to one target of its channel."""

    def knows(self, target: Target) -> bool:
        """Whether the target is configured (a Slack channel with a URL, a known webhook)."""
        ...

    async def send(self, target: Target, notifications: Sequence[Notification]) -> None:
        """Deliver or raise :class:`DeliveryError`."""
        ...


async def _post(
    client: httpx.AsyncClient, url: str, content: bytes, headers: dict[str, str]
) -> None:
    try:
        response = await client.post(url, content=content, headers=headers)
    except httpx.TimeoutException:
        raise DeliveryError("timeout", "the receiver did not answer in time") from None
    except httpx.HTTPError as exc:
        # httpx error texts may quote the URL; keep only the kind of failure.
        raise DeliveryError("connection", type(exc).__name__) from None
    status = response.status_code
    if 200 <= status < 300:
        return
    body = response.text[:200].replace("\n", " ")
    raise DeliveryError(
        f"http-{status}",
        body,
        permanent=not is_retryable_status(status),
        retry_after=parse_retry_after(response.headers.get("retry-after"), time.time()),
    )


class SlackSender:
    """Slack incoming webhooks: ``slack:<channel>`` → the channel's configured URL."""

    def __init__(self, client: httpx.AsyncClient, webhooks: Mapping[str, SecretStr]) -> None:
        self._client = client
        self._webhooks = dict(webhooks)

    def knows(self, target: Target) -> bool:
        return target.name in self._webhooks

    async def send(self, target: Target, notifications: Sequence[Notification]) -> None:
        url = self._webhooks[target.name].get_secret_value()
        body = orjson.dumps(slack_payload(notifications))
        await _post(self._client, url, body, {"Content-Type": "application/json"})


class WebhookSender:
    """Generic webhooks: JSON POST signed with HMAC-SHA256 over ``"<timestamp>." + body``."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        webhooks: Mapping[str, Mapping[str, SecretStr]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._webhooks = {k: dict(v) for k, v in webhooks.items()}
        self._clock = clock

    def knows(self, target: Target) -> bool:
        return target.name in self._webhooks

    async def send(self, target: Target, notifications: Sequence[Notification]) -> None:
        conf = self._webhooks[target.name]
        body = webhook_body(notifications)
        ts = int(self._clock())
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: str(ts),
            SIGNATURE_HEADER: sign(conf["secret"].get_secret_value(), ts, body),
            # Receivers can de-duplicate at-least-once deliveries on this.
            "X-Driftline-Delivery": ",".join(n.id for n in notifications),
        }
        await _post(self._client, conf["url"].get_secret_value(), body, headers)


@dataclass(frozen=True)
class SmtpConfig:
    """Where and how to send mail; ``password`` stays a secret type."""

    host: str
    port: int
    username: str | None = None
    password: SecretStr | None = None
    starttls: bool = False
    implicit_tls: bool = False
    cafile: str | None = None


def parse_smtp_url(url: SecretStr) -> SmtpConfig:
    """Read ``smtp://user:password@host:port?starttls=true`` (or ``smtps://`` for implicit TLS).

    ``cafile=<path>`` trusts a private CA. Errors name the variable, never its value.

    >>> c = parse_smtp_url(SecretStr("smtp://ops:p%40ss@mail.local:2525?starttls=true"))
    >>> (c.host, c.port, c.username, c.password.get_secret_value(), c.starttls)
    ('mail.local', 2525, 'ops', 'p@ss', True)
    >>> parse_smtp_url(SecretStr("http://x"))
    Traceback (most recent call last):
    ...
    driftline.errors.ConfigError: DRIFTLINE_SMTP_URL: scheme must be smtp:// or smtps://, e.g. smtp://user:password@host:587?starttls=true
    """
    example = "e.g. smtp://user:password@host:587?starttls=true"
    parts = urlsplit(url.get_secret_value())
    if parts.scheme not in ("smtp", "smtps"):
        raise ConfigError(f"DRIFTLINE_SMTP_URL: scheme must be smtp:// or smtps://, {example}")
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(f"DRIFTLINE_SMTP_URL: the port is not a number, {example}") from None
    if not parts.hostname:
        raise ConfigError(f"DRIFTLINE_SMTP_URL: no host, {example}")
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    flag = query.get("starttls", "false").lower()
    if flag not in ("true", "false", "1", "0", "yes", "no"):
        raise ConfigError(f"DRIFTLINE_SMTP_URL: starttls must be true or false, {example}")
    implicit = parts.scheme == "smtps"
    return SmtpConfig(
        host=parts.hostname,
        port=port or (465 if implicit else 25),
        username=unquote(parts.username) if parts.username else None,
        password=SecretStr(unquote(parts.password)) if parts.password else None,
        starttls=flag in ("true", "1", "yes"),
        implicit_tls=implicit,
        cafile=query.get("cafile"),
    )


class EmailSender:
    """SMTP with STARTTLS (or implicit TLS) and login when configured; one mail per delivery."""

    def __init__(self, config: SmtpConfig, sender: str, timeout_s: float) -> None:
        self._config = config
        self._from = sender
        self._timeout = timeout_s

    def knows(self, target: Target) -> bool:
        return True

    async def send(self, target: Target, notifications: Sequence[Notification]) -> None:
        message = email_message(notifications, self._from, target.name)
        await asyncio.to_thread(self._send_sync, message)

    def _send_sync(self, message: object) -> None:
        c = self._config
        context = ssl.create_default_context(cafile=c.cafile)
        try:
            smtp: smtplib.SMTP
            if c.implicit_tls:
                smtp = smtplib.SMTP_SSL(c.host, c.port, timeout=self._timeout, context=context)
            else:
                smtp = smtplib.SMTP(c.host, c.port, timeout=self._timeout)
            with smtp:
                if c.starttls:
                    smtp.starttls(context=context)
                if c.username and c.password is not None:
                    smtp.login(c.username, c.password.get_secret_value())
                smtp.send_message(message)  # type: ignore[arg-type]
        except smtplib.SMTPResponseException as exc:
            code = int(exc.smtp_code)
            raw = exc.smtp_error
            text = (raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw))[:200]
            # 4xx is transient by SMTP's own definition; 5xx (bad login, refused) is not.
            raise DeliveryError(f"smtp-{code}", text, permanent=code >= 500) from None
        except smtplib.SMTPRecipientsRefused:
            raise DeliveryError("smtp-recipient-refused", permanent=True) from None
        except (TimeoutError, OSError, smtplib.SMTPException) as exc:
            raise DeliveryError("smtp-connection", type(exc).__name__) from None


class StdoutSender:
    """Development: one line per delivery on standard output."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream

    def knows(self, target: Target) -> bool:
        return True

    async def send(self, target: Target, notifications: Sequence[Notification]) -> None:
        stream = self._stream or sys.stdout
        print(stdout_line(notifications), file=stream, flush=True)
