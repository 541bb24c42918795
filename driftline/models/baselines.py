"""Large assay baselines, stored content-addressed beside the models.

A baseline of a few thousand values travels inside the canonical spec. A larger one (a 100k-row
training column) would make the control message larger than Kafka accepts, so ``deploy`` writes
its values to the store once, by sha256, and the canonical spec names only the hash and the
count. Every process that runs the spec (the monitor, replay) reads the values back from the same
store that holds the models, and checks the hash.

The stored form is the values as little-endian float64, NaN included, so the hash is of exactly
what the detectors see.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np

from driftline.errors import ModelError

__all__ = ["INLINE_MAX", "BaselineStore", "baseline_digest"]

#: Baselines with more values than this are stored by hash instead of inside the spec.
INLINE_MAX = 10_000


def _bytes(values: np.ndarray) -> bytes:
    return np.ascontiguousarray(values, dtype="<f8").tobytes()


def baseline_digest(values: np.ndarray) -> str:
    """Hex sha256 of the values as little-endian float64.

    >>> baseline_digest(np.array([1.0, 2.0]))[:12]
    '...'
    """
    return hashlib.sha256(_bytes(values)).hexdigest()


class BaselineStore:
    """Baseline values by sha256 under ``<root>/baselines`` (``root``: the model store)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root) / "baselines"

    def path(self, sha256: str) -> Path:
        return self.root / f"{sha256}.f8"

    def put(self, values: np.ndarray) -> str:
        """Store ``values`` (no-op when already there); returns their sha256."""
        data = _bytes(values)
        digest = hashlib.sha256(data).hexdigest()
        target = self.path(digest)
        if not target.exists():
            self.root.mkdir(parents=True, exist_ok=True)
            # write then rename, so a reader never sees a half-written baseline
            fd, tmp = tempfile.mkstemp(dir=self.root, suffix=".part")
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                os.replace(tmp, target)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        return digest

    def get(self, sha256: str) -> np.ndarray:
        """The stored values; :class:`ModelError` when missing or not matching their hash."""
        path = self.path(sha256)
        try:
            data = path.read_bytes()
        except OSError:
            raise ModelError(
                f"baseline sha256:{sha256} is not in the store {str(self.root)!r}; deploy the "
                "spec from a machine sharing this store (DRIFTLINE_MODEL_STORE), or redeploy it"
            ) from None
        if hashlib.sha256(data).hexdigest() != sha256:
            raise ModelError(
                f"baseline file {str(path)!r} does not match its hash; delete it and redeploy"
            )
        return np.frombuffer(data, dtype="<f8").astype(np.float64)
