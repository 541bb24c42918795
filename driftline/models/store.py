"""Content-addressed local store of model files: ``<root>/sha256/<hex>.onnx``."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from driftline.errors import ModelError
from driftline.models.info import ModelInfo, inspect_model

__all__ = ["ModelStore"]

_HEX = re.compile(r"[0-9a-f]{64}")


class ModelStore:
    """Model files by sha256 under ``root``; storing the same content twice is a no-op."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def put(self, name: str, path: str | Path) -> ModelInfo:
        """Check ``path`` is a loadable ONNX model, copy it in, and describe the stored copy.

        Models with external data files are refused: the store keeps one self-contained file
        per version so that a sha256 identifies the whole model.
        """
        from driftline.expressions import is_model_name

        if not is_model_name(name):
            raise ModelError(
                f"model name {name!r} is not an identifier; use letters, digits and '_' "
                "(it is how expressions refer to the model, e.g. ccfraud.outputs[0][0])"
            )
        source = Path(path)
        info = inspect_model(source, name)
        if _has_external_data(source):
            raise ModelError(
                f"model file {str(source)!r} keeps weights in external data files; save it as one "
                "file (onnx.save(model, path, save_as_external_data=False)) before uploading"
            )
        target = self.path(info.sha256)
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            # copy then rename, so a reader never sees a half-written model
            fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".part")
            os.close(fd)
            try:
                shutil.copyfile(source, tmp)
                os.replace(tmp, target)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        return ModelInfo(info.name, info.sha256, target, info.inputs, info.outputs)

    def path(self, sha256: str) -> Path:
        """Where the model with this hash lives (``sha256:`` prefix accepted)."""
        digest = sha256.removeprefix("sha256:")
        if not _HEX.fullmatch(digest):
            raise ModelError(f"{sha256!r} is not a sha256 hex digest")
        return self.root / "sha256" / f"{digest}.onnx"

    def has(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def get(self, sha256: str, name: str | None = None) -> ModelInfo:
        """Describe a stored model; ModelError if it is not in the store."""
        target = self.path(sha256)
        if not target.is_file():
            raise ModelError(
                f"model {sha256!r} is not in the store at {str(self.root)!r}; upload it with "
                "`driftline model upload NAME PATH` or point DRIFTLINE_MODEL_STORE at the store"
            )
        return inspect_model(target, name)

    def list(self) -> list[str]:
        """Hashes of every stored model, sorted."""
        folder = self.root / "sha256"
        if not folder.is_dir():
            return []
        return sorted(p.stem for p in folder.glob("*.onnx") if _HEX.fullmatch(p.stem))


def _has_external_data(path: Path) -> bool:
    import onnx

    from driftline.models.info import _tensors

    model = onnx.load(str(path), load_external_data=False)
    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in _tensors(model.graph))
