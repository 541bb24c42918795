"""ONNX models: inspection, the content-addressed store and the batch runtime."""

from __future__ import annotations

from driftline.models.info import ModelInfo, TensorInfo, TensorList, inspect_model, sha256_file
from driftline.models.runtime import LoadedModel
from driftline.models.store import ModelStore

__all__ = [
    "LoadedModel",
    "ModelInfo",
    "ModelStore",
    "TensorInfo",
    "TensorList",
    "inspect_model",
    "sha256_file",
]
