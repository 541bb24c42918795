"""The shared rich consoles of the CLI (stdout for results, stderr for progress and errors)."""

from __future__ import annotations

from rich.console import Console

__all__ = ["err", "out"]

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)
