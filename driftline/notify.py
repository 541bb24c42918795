"""Notify targets: the one grammar used by specs, the SDK and the bridge.

A target is ``email:ADDRESS``, ``slack:CHANNEL``, ``webhook:NAME`` or ``stdout``. An address
is one mailbox (no lists, no display names, no spaces or line breaks); channel and webhook
names are the keys the bridge's settings map to URLs, so secrets never appear in a spec. The
SDK builds the same strings with :class:`Email`, :class:`Slack`, :class:`Webhook` and
:class:`Stdout`::

    add_alert("high_fraud_5m", cond, [notify.Email(to="ops@example.com"), notify.Stdout()])
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from driftline.errors import DriftlineError

__all__ = [
    "CHANNELS",
    "SCHEMES",
    "Email",
    "Slack",
    "Stdout",
    "Target",
    "TargetError",
    "Webhook",
    "parse_target",
]

#: Every channel kind a target may name.
CHANNELS: tuple[str, ...] = ("email", "slack", "webhook", "stdout")
#: Older name of :data:`CHANNELS`.
SCHEMES = CHANNELS
_USAGE = "use email:ADDRESS, slack:CHANNEL, webhook:NAME or stdout"
# RFC 5321/5322 dot-atom local part and a dotted host name: everything a mail header could
# read as a second recipient or a new header (',', ';', '<', quotes, spaces, CR/LF) is outside.
_LOCAL = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_EMAIL = re.compile(rf"(?P<local>{_LOCAL})@(?P<domain>{_LABEL}(?:\.{_LABEL})+)")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}")
_MAX_ADDRESS = 254


class TargetError(DriftlineError, ValueError):
    """A notify target does not follow the grammar; the message says what is accepted."""


@dataclass(frozen=True, order=True)
class Target:
    """Where a notification goes: a channel kind and a name within it (empty for stdout).

    ``str(target)`` is the canonical spelling, the one specs and notifications carry.
    """

    kind: str
    name: str = ""

    def __str__(self) -> str:
        return self.kind if not self.name else f"{self.kind}:{self.name}"


def parse_target(text: str) -> Target:
    """Parse and check one target; :class:`TargetError` names the target and the fix.

    >>> parse_target("email:ops@example.com")
    Target(kind='email', name='ops@example.com')
    >>> str(parse_target("stdout"))
    'stdout'
    >>> parse_target("pager:ops")
    Traceback (most recent call last):
    ...
    driftline.notify.TargetError: notify target 'pager:ops': unknown channel 'pager'; use ...
    >>> parse_target("email:a@x.example,b@y.example")
    Traceback (most recent call last):
    ...
    driftline.notify.TargetError: notify target ...: 'a@x.example,b@y.example' is not an email ...
    """
    if not isinstance(text, str):
        raise TargetError(f"notify target {text!r}: expected a string; {_USAGE}")
    kind, sep, name = text.partition(":")
    if kind == "stdout":
        if sep:
            raise TargetError(f"notify target {text!r}: stdout takes no name; write 'stdout'")
        return Target("stdout")
    if kind not in CHANNELS:
        raise TargetError(f"notify target {text!r}: unknown channel {kind!r}; {_USAGE}")
    if not sep or not name:
        upper = {"email": "ADDRESS", "slack": "CHANNEL", "webhook": "NAME"}[kind]
        raise TargetError(f"notify target {text!r}: missing name; write '{kind}:{upper}'")
    if kind == "email":
        if len(name) > _MAX_ADDRESS or not _EMAIL.fullmatch(name):
            raise TargetError(
                f"notify target {text!r}: {name!r} is not an email address; write one address "
                "per target (email:ops@example.com), without spaces, commas or a display name"
            )
    elif not _NAME.fullmatch(name):
        raise TargetError(
            f"notify target {text!r}: {name!r} must be a name of letters, digits, '.', '_' or "
            "'-' (channel URLs and secrets belong in the bridge's settings)"
        )
    return Target(kind, name)


@dataclass(frozen=True)
class Email:
    """Send alerts by email to the single address ``to``."""

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


@dataclass(frozen=True)
class Stdout:
    """Print alerts on the bridge's standard output (development)."""

    def __str__(self) -> str:
        return "stdout"
