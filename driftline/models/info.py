"""What a model file is: its hash and its input/output tensors, read without running it."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, SupportsIndex, overload

from driftline.errors import ModelError
from driftline.expressions import Variable

__all__ = [
    "ModelInfo",
    "TensorInfo",
    "TensorList",
    "inspect_model",
    "sha256_file",
    "zipmap_classes",
]

_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(float16)": "float16",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
    "tensor(string)": "string",
}


@dataclass(frozen=True)
class TensorInfo:
    """One input or output: its name, shape (``None`` or a name for free dims) and dtype."""

    name: str
    shape: tuple[int | str | None, ...]
    dtype: str
    # where the tensor sits, so that ``model.outputs[0][j]`` can build an expression variable
    model: str = field(default="", compare=False, repr=False)
    kind: str = field(default="", compare=False, repr=False)
    key: int | str = field(default=0, compare=False, repr=False)

    @property
    def width(self) -> int | None:
        """Values per row: the product of the non-batch dimensions (None if not fixed)."""
        width = 1
        for dim in self.shape[1:]:
            if not isinstance(dim, int) or dim < 0:
                return None
            width *= dim
        return width

    def __getitem__(self, column: int | str) -> Variable:
        if not self.model:
            raise TypeError("this TensorInfo is not attached to a model")
        return Variable(self.model, self.kind, (self.key, column))  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


class TensorList(tuple[TensorInfo, ...]):
    """The tensors of a model; indexing by position or name gives expression handles.

    ``info.outputs[0][0]`` is the variable ``<model>.outputs[0][0]``, as in the SDK.
    """

    model: str
    kind: str

    def __new__(cls, items: Any, model: str, kind: str) -> TensorList:
        self = super().__new__(cls, items)
        self.model, self.kind = model, kind
        return self

    def __getnewargs__(self) -> tuple[Any, ...]:
        return (tuple(self), self.model, self.kind)

    @overload
    def __getitem__(self, key: SupportsIndex | str) -> TensorInfo: ...
    @overload
    def __getitem__(self, key: slice) -> tuple[TensorInfo, ...]: ...
    def __getitem__(self, key: SupportsIndex | str | slice) -> TensorInfo | tuple[TensorInfo, ...]:
        if isinstance(key, slice):
            return tuple(super().__iter__())[key]
        if isinstance(key, str):
            for tensor in super().__iter__():
                if tensor.name == key:
                    return _attach(tensor, self.model, self.kind, key)
            names = [t.name for t in super().__iter__()]
            raise KeyError(f"{self.model} has no {self.kind[:-1]} named {key!r}; names: {names}")
        position = int(key)
        tensor = super().__getitem__(position)
        return _attach(tensor, self.model, self.kind, position)

    def __iter__(self) -> Iterator[TensorInfo]:
        return super().__iter__()

    @property
    def names(self) -> list[str]:
        return [t.name for t in self]


def _attach(tensor: TensorInfo, model: str, kind: str, key: int | str) -> TensorInfo:
    return TensorInfo(tensor.name, tensor.shape, tensor.dtype, model, kind, key)


@dataclass(frozen=True)
class ModelInfo:
    """A model file's identity and interface; also an SDK handle (``m.outputs[0][0]``)."""

    name: str
    sha256: str
    path: Path
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    #: Class labels of each ZipMap output (a classifier's per-class probabilities), in the
    #: order of the columns the worker serves for it.
    classes: Mapping[str, tuple[int | str, ...]] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))
        object.__setattr__(self, "inputs", TensorList(self.inputs, self.name, "inputs"))
        object.__setattr__(self, "outputs", TensorList(self.outputs, self.name, "outputs"))

    @property
    def input_width(self) -> int | None:
        """Features per row of the first input (None if its shape is not fixed)."""
        return self.inputs[0].width if self.inputs else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "sha256": self.sha256,
            "path": str(self.path),
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
        }


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's content, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def inspect_model(path: str | Path, name: str | None = None) -> ModelInfo:
    """Open an ONNX model with onnxruntime and describe it.

    Refuses, with :class:`~driftline.errors.ModelError`, a missing file, a file that is not a
    loadable ONNX model, and one whose external data lies outside the model's own directory
    (checked on the protobuf before anything is loaded).

    Parameters
    ----------
    path:
        The ``.onnx`` file.
    name:
        Model name to record; defaults to the file name without its suffix.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file {str(path)!r} does not exist or is not a file")
    graph = _check_external_data(path)
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ModelError(
            f"model file {str(path)!r} cannot be loaded by onnxruntime: {_first_line(exc)}. "
            "Export it as ONNX (opset ≤ 26, IR version ≤ 13 for onnxruntime 1.31)"
        ) from None

    def describe(args: Any) -> tuple[TensorInfo, ...]:
        return tuple(
            TensorInfo(a.name, tuple(a.shape), _ORT_TYPES.get(a.type, a.type)) for a in args
        )

    outputs = describe(session.get_outputs())
    return ModelInfo(
        name=name if name is not None else path.stem,
        sha256=sha256_file(path),
        path=path,
        inputs=describe(session.get_inputs()),
        outputs=outputs,
        classes=_zipmaps(graph, [t.name for t in outputs]),
    )


def zipmap_classes(path: Path, outputs: list[str]) -> dict[str, tuple[int | str, ...]]:
    """Class labels of each graph output produced by a ``ZipMap`` node (skl2onnx's default
    classifier export: a sequence of ``{class: probability}`` maps, one per row)."""
    import onnx

    return _zipmaps(onnx.load(str(path), load_external_data=False).graph, outputs)


def _zipmaps(graph: Any, outputs: list[str]) -> dict[str, tuple[int | str, ...]]:
    found: dict[str, tuple[int | str, ...]] = {}
    for node in graph.node:
        if node.op_type != "ZipMap" or node.output[0] not in outputs:
            continue
        for attribute in node.attribute:
            if attribute.name == "classlabels_int64s":
                found[node.output[0]] = tuple(int(v) for v in attribute.ints)
            elif attribute.name == "classlabels_strings":
                found[node.output[0]] = tuple(v.decode() for v in attribute.strings)
    return found


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _check_external_data(path: Path) -> Any:
    """The model's graph (without external data), once its external data is checked."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, OSError) as exc:
        raise ModelError(
            f"model file {str(path)!r} is not an ONNX model ({_first_line(exc)}); "
            "upload a .onnx file exported from your framework"
        ) from None
    if not model.graph.node and not model.graph.output:
        raise ModelError(
            f"model file {str(path)!r} is not an ONNX model (it has no graph); "
            "upload a .onnx file exported from your framework"
        )
    base = path.parent.resolve()
    for tensor in _tensors(model.graph):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        target = (base / location).resolve()
        if not location or Path(location).is_absolute() or not target.is_relative_to(base):
            raise ModelError(
                f"model file {str(path)!r}: tensor {tensor.name!r} points at external data "
                f"{location!r} outside the model's directory; keep external data next to the "
                "model (a relative path inside its directory) or embed it in the .onnx file"
            )
    return model.graph


def _tensors(graph: Any) -> Iterator[Any]:
    """Every tensor in a graph, including those in node attributes and subgraphs."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            if attribute.HasField("g"):
                yield from _tensors(attribute.g)
            for subgraph in attribute.graphs:
                yield from _tensors(subgraph)
