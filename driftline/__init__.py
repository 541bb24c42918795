"""driftline: stream-processing drift detection for ML models on Kafka.

The SDK (``Client``, ``fn``, ``notify``) is imported lazily so that the CLI starts fast.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["Client", "__version__", "fn", "notify"]


def __getattr__(name: str) -> Any:
    if name in ("Client", "fn", "notify"):
        from driftline import sdk

        return getattr(sdk, name)
    raise AttributeError(f"module 'driftline' has no attribute {name!r}")
