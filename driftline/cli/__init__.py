"""The ``driftline`` command line: one module per command, all on one typer app.

Exit codes: 0 success, 1 a check or comparison found a problem, 2 bad usage or input
(a wrong argument, an invalid spec, an unreadable file), 3 a service is unreachable or failed,
70 an unexpected error (a bug: please report it).
"""

from __future__ import annotations

# Importing a command module registers its commands on ``app``, in the order ``--help``
# lists them: the order a user meets them.
# isort: off
from driftline.cli import services, model, deploy, worker, infer, produce, logs
from driftline.cli import monitor, assays, alerts, bridge, replay, demo
from driftline.cli import feedback, performance

# isort: on
from driftline.cli.app import EXIT_BUG, EXIT_FAILED, EXIT_SERVICE, EXIT_USAGE, app
from driftline.cli.entry import main

__all__ = [
    "EXIT_BUG",
    "EXIT_FAILED",
    "EXIT_SERVICE",
    "EXIT_USAGE",
    "alerts",
    "app",
    "assays",
    "bridge",
    "demo",
    "deploy",
    "feedback",
    "infer",
    "logs",
    "main",
    "model",
    "monitor",
    "performance",
    "produce",
    "replay",
    "services",
    "worker",
]
