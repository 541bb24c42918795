"""Notification targets: ``email:<address>``, ``slack:<channel>``, ``webhook:<name>``, stdout."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CHANNELS", "Target", "parse_target"]

CHANNELS: tuple[str, ...] = ("email", "slack", "webhook", "stdout")


@dataclass(frozen=True, order=True)
class Target:
    """Where one notification goes: a channel kind and a name within it (empty for stdout)."""

    kind: str
    name: str = ""

    def __str__(self) -> str:
        return self.kind if not self.name else f"{self.kind}:{self.name}"


def parse_target(text: str) -> Target:
    """Parse a target string of a notification's ``notify`` list.

    >>> parse_target("slack:fraud-alerts")
    Target(kind='slack', name='fraud-alerts')
    >>> str(parse_target(" email:ops@example.com "))
    'email:ops@example.com'
    >>> parse_target("pager:x")
    Traceback (most recent call last):
    ...
    ValueError: target 'pager:x': unknown channel 'pager'; use one of email, slack, webhook, stdout
    """
    raw = text.strip()
    kind, sep, name = raw.partition(":")
    kind = kind.strip().lower()
    name = name.strip()
    if kind not in CHANNELS:
        raise ValueError(
            f"target {raw!r}: unknown channel {kind!r}; use one of {', '.join(CHANNELS)}"
        )
    if kind == "stdout":
        if name:
            raise ValueError(f"target {raw!r}: stdout takes no name; write 'stdout'")
        return Target("stdout")
    if not sep or not name:
        raise ValueError(f"target {raw!r}: missing name; write '{kind}:<name>'")
    if kind == "email" and ("@" not in name or any(c.isspace() for c in name)):
        raise ValueError(f"target {raw!r}: not an email address; write 'email:ops@example.com'")
    return Target(kind, name)
