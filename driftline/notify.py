"""Notification targets for alerts: ``notify.Email(to=...)``, ``notify.Slack(channel=...)``.

Each renders to the ``"email:..."``, ``"slack:..."`` or ``"webhook:..."`` string a YAML spec
uses; secrets (SMTP passwords, webhook URLs) never appear here, only names and addresses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["SCHEMES", "Email", "Slack", "Webhook", "parse_target"]

SCHEMES = ("email", "slack", "webhook")
_EMAIL = re.compile(r"[^@\s,;]+@[^@\s,;]+\.[^@\s,;]+")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}")


@dataclass(frozen=True)
class Email:
    """Send alerts by email to ``to``."""

    to: str

    def __post_init__(self) -> None:
        parse_target(str(self))

    def __str__(self) -> str:
        return f"email:{self.to}"


@dataclass(frozen=True)
class Slack:
    """Post alerts to a Slack channel (its webhook URL is configured on the bridge)."""

    channel: str

    def __post_init__(self) -> None:
        parse_target(str(self))

    def __str__(self) -> str:
        return f"slack:{self.channel.removeprefix('#')}"


@dataclass(frozen=True)
class Webhook:
    """Call the webhook configured on the bridge under ``name``."""

    name: str

    def __post_init__(self) -> None:
        parse_target(str(self))

    def __str__(self) -> str:
        return f"webhook:{self.name}"


def parse_target(target: str) -> tuple[str, str]:
    """Split and check ``"scheme:address"``; ``ValueError`` says what is accepted.

    >>> parse_target("email:ops@example.com")
    ('email', 'ops@example.com')
    >>> parse_target("pager:ops")
    Traceback (most recent call last):
    ...
    ValueError: notify target 'pager:ops': use email:ADDRESS, slack:CHANNEL or webhook:NAME
    """
    scheme, sep, address = str(target).partition(":")
    usage = f"notify target {target!r}: use email:ADDRESS, slack:CHANNEL or webhook:NAME"
    if not sep or scheme not in SCHEMES:
        raise ValueError(usage)
    if scheme == "email" and not _EMAIL.fullmatch(address):
        raise ValueError(f"notify target {target!r}: {address!r} is not an email address")
    if scheme in ("slack", "webhook") and not _NAME.fullmatch(address):
        raise ValueError(
            f"notify target {target!r}: {address!r} must be a name of letters, digits, '.', "
            "'_' or '-' (channel URLs and secrets belong in the bridge's settings)"
        )
    return scheme, address
