"""Pipeline specs: load YAML or build with the SDK, validate up front, compile to canonical JSON.

Every problem is a :class:`~driftline.errors.SpecError` whose ``field`` is the dotted path of
the offending entry (``alerts.high_fraud_5m.when``, ``models[1].path``). The canonical JSON
(sorted keys, expressions as JSON trees, models by sha256, no local paths) is what gets
deployed; its sha256 is the spec version every event carries.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from driftline.config import SYSTEM_TOPICS
from driftline.detectors import check_live, validate_scan, validate_thresholds
from driftline.errors import DriftlineError, ExpressionError, ModelError, SpecError
from driftline.expressions import (
    AlertCondition,
    Expr,
    Kind,
    Variable,
    alert_condition,
    check_kinds,
    contains_aggregate,
    format_duration,
    from_json,
    parse,
    parse_duration,
    resolve_classes,
    to_json,
    variables,
)
from driftline.models import ModelInfo, TensorInfo, inspect_model
from driftline.models.baselines import INLINE_MAX
from driftline.notify import TargetError, parse_target

__all__ = [
    "AlertSpec",
    "AssaySpec",
    "ModelSpec",
    "PerformanceAlertSpec",
    "PerformanceSpec",
    "PipelineBuilder",
    "PipelineSpec",
    "SourceSpec",
    "SpecOptions",
    "load_baseline_values",
    "load_spec",
    "spec_from_canonical",
    "spec_from_dict",
    "store_large_baselines",
]

CANONICAL_FORMAT = 1
#: Largest canonical spec deploy accepts: one control message, under the producer's default
#: ``message.max.bytes`` (1,000,000) with room for the key and headers.
MAX_CANONICAL_BYTES = 900_000
SEVERITIES = ("warning", "critical")
_NOTIFY_KEYS = ("notify", "for", "repeat", "severity")
BIN_MODES = ("quantile", "equal", "provided")
OUTLIER_MODES = ("explicit", "open")
#: Defaults of an assay's ``scan: true`` (see :class:`driftline.detectors.WindowScan`).
SCAN_ALPHA = 0.003
SCAN_SCALES = (1, 2, 4, 8)
_PIPELINE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,99}")
_CHECK_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,99}")
PERFORMANCE_TASKS = ("binary", "multiclass", "regression")
_PERF_WHEN = re.compile(
    r"\s*((?:estimated\.)?[a-z_][a-z0-9_]*)\s*(<=|>=|==|!=|<|>)\s*"
    r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*"
)


# -- the spec ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSpec:
    """A model step: ``shadow`` models run on the same rows and are recorded only."""

    name: str
    path: Path | None
    shadow: bool = False
    sha256: str | None = None
    info: ModelInfo | None = None
    # Tensor names travel in the canonical spec, so a process without the model file (the
    # monitor) can still resolve ``m.outputs["probability"]``.
    input_names: tuple[str, ...] = ()
    output_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class AlertSpec:
    name: str
    when: Expr
    condition: AlertCondition
    notify: tuple[str, ...]
    for_ms: int = 0
    repeat_ms: int | None = None
    severity: str = "warning"


@dataclass(frozen=True)
class AssaySpec:
    name: str
    iopath: Expr
    baseline: dict[str, Any]
    window_width_ms: int
    window_interval_ms: int
    metric: str
    bins: dict[str, Any]
    thresholds: dict[str, Any]
    #: ``{"test", "alpha", "scales"}``: also test the merged last windows (see README, assays).
    scan: dict[str, Any] | None = None
    #: Targets of the assay's status transitions (``ok → warning → alert → ok``).
    notify: tuple[str, ...] = ()
    #: How long a non-ok status must last before the first notification (0: at once).
    for_ms: int = 0
    #: While not ok, notify again every ``repeat_ms`` (None: never).
    repeat_ms: int | None = None
    #: Severity of the ``alert`` level (the ``warning`` level is always ``warning``).
    severity: str = "critical"


@dataclass(frozen=True)
class PerformanceAlertSpec:
    """``when: <metric> <op> <number>`` on a performance window, once ``min_labeled`` labels.

    ``estimated`` is true for ``estimated.<metric>`` (the CBPE estimate, no labels needed).
    """

    name: str
    metric: str
    op: str
    value: float
    min_labeled: int = 0
    notify: tuple[str, ...] = ()
    severity: str = "warning"
    estimated: bool = False

    @property
    def when(self) -> str:
        prefix = "estimated." if self.estimated else ""
        return f"{prefix}{self.metric} {self.op} {self.value:g}"


@dataclass(frozen=True)
class PerformanceSpec:
    """Realized (labels) and estimated (CBPE) model performance per window.

    ``prediction`` holds one expression (binary score, regression value, multiclass class
    index) or one per class (multiclass probabilities). ``calibrators`` are the CBPE
    calibrators fitted on the reference (one for binary, one per class for multiclass; empty:
    the scores are taken as calibrated). ``label_index`` says which element of a list label
    (``"label": [0, 1, 0]``, a multi-output model's labels) this entry judges; without it a
    list label is dead-lettered, and with it a single label is.
    """

    name: str
    task: str
    prediction: tuple[Expr, ...]
    window_width_ms: int
    window_interval_ms: int
    horizon_ms: int = 7 * 86_400_000
    threshold: float = 0.5
    classes: tuple[str, ...] = ()
    bins: int = 100
    estimate: str | None = None
    reference: dict[str, Any] | None = None
    calibrators: tuple[dict[str, list[float]], ...] = ()
    alerts: dict[str, PerformanceAlertSpec] = field(default_factory=dict)
    label_index: int | None = None

    def to_canonical(self) -> dict[str, Any]:
        """JSON form inside the pipeline's canonical spec."""
        # label_index only when set: specs without it keep their version and join state
        extra = {} if self.label_index is None else {"label_index": self.label_index}
        return extra | {
            "task": self.task,
            "prediction": [to_json(e) for e in self.prediction],
            "window": {"width_ms": self.window_width_ms, "interval_ms": self.window_interval_ms},
            "horizon_ms": self.horizon_ms,
            "threshold": self.threshold,
            "classes": list(self.classes),
            "bins": self.bins,
            "estimate": self.estimate,
            "reference": None if self.reference is None else dict(self.reference),
            "calibrators": [dict(c) for c in self.calibrators],
            "alerts": {
                a.name: {
                    "when": a.when,
                    "min_labeled": a.min_labeled,
                    "notify": list(a.notify),
                    "severity": a.severity,
                }
                for a in self.alerts.values()
            },
        }


#: ``options.result_format`` values: driftline's own result event, or the Open Inference
#: Protocol's inference response (:mod:`driftline.streams.v2_response`).
RESULT_FORMATS = ("driftline", "v2")

#: The largest ``options.max_message_bytes``: librdkafka's default ``fetch.max.bytes``.
MAX_MESSAGE_BYTES = 50 * 1024 * 1024


@dataclass(frozen=True)
class SpecOptions:
    allow_nan: bool = True
    lateness_ms: int = 5000
    max_message_bytes: int = 1_000_000
    partitions: int = 3
    #: Whether result events repeat the request's inputs (false: large tensors stay small;
    #: ``"used"``: only the inputs alerts, assays and performance entries read).
    record_inputs: bool | str = True
    #: How results are written: ``driftline`` events, or ``v2`` inference responses.
    result_format: str = "driftline"


#: How an external pipeline's source topic is read (``source.format``).
SOURCE_FORMATS = ("driftline", "v2-pairs")
#: Element types a schema tensor (``inputs``/``outputs`` of a pipeline without models) may have.
SCHEMA_DTYPES = ("float32", "float64", "float16", "int64", "int32", "int8", "uint8", "bool")
_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")
#: Placeholder hash of the model a pipeline without models stands for (results' ``models``).
EXTERNAL = "external"


@dataclass(frozen=True)
class SourceSpec:
    """Where a pipeline without models finds the predictions another serving system made.

    ``format`` is ``driftline`` (result events on ``topic``) or ``v2-pairs`` (Open Inference
    Protocol responses on ``topic``, their requests on ``requests``, paired by id; when both
    are one topic, as a payload logger writes them, each message's CloudEvents ``ce_type``
    header says which half it is). ``model``
    is the name expressions use for the external model; ``info`` its declared tensors, from
    the spec's ``inputs`` and ``outputs`` (shape without the batch dimension).
    """

    topic: str
    format: str
    model: str
    info: ModelInfo
    requests: str | None = None
    #: How long a message waits for its other half before it is dead-lettered (v2-pairs).
    pair_timeout_ms: int = 60_000

    def model_spec(self) -> ModelSpec:
        """The external model as a model step: what expressions resolve against."""
        return ModelSpec(
            self.model,
            None,
            False,
            None,
            self.info,
            tuple(t.name for t in self.info.inputs),
            tuple(t.name for t in self.info.outputs),
        )

    def to_canonical(self) -> dict[str, Any]:
        """The ``source`` of the canonical spec (with the schema under it)."""
        return {
            "topic": self.topic,
            "format": self.format,
            "model": self.model,
            "requests": self.requests,
            "pair_timeout_ms": self.pair_timeout_ms,
            "inputs": [_schema_entry(t) for t in self.info.inputs],
            "outputs": [_schema_entry(t) for t in self.info.outputs],
        }


def _schema_entry(t: Any) -> dict[str, Any]:
    return {"name": t.name, "shape": list(t.shape[1:]), "dtype": t.dtype}


@dataclass(frozen=True)
class PipelineSpec:
    """A validated pipeline; build it with :func:`load_spec` or :class:`PipelineBuilder`."""

    name: str
    models: tuple[ModelSpec, ...]
    validations: dict[str, Expr] = field(default_factory=dict)
    alerts: dict[str, AlertSpec] = field(default_factory=dict)
    assays: dict[str, AssaySpec] = field(default_factory=dict)
    options: SpecOptions = field(default_factory=SpecOptions)
    base_dir: Path | None = field(default=None, compare=False, repr=False)
    performance: dict[str, PerformanceSpec] = field(default_factory=dict)
    #: Set for a pipeline without models (``models: []``): predictions made elsewhere.
    source: SourceSpec | None = None

    @property
    def champion(self) -> ModelSpec:
        """The model whose outputs are the result (the one that is not a shadow); for a
        pipeline without models, the external model its ``source`` names."""
        if self.source is not None:
            return self.source.model_spec()
        return next(m for m in self.models if not m.shadow)

    @property
    def shadows(self) -> tuple[ModelSpec, ...]:
        return tuple(m for m in self.models if m.shadow)

    def model(self, name: str) -> ModelSpec:
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(name)

    def to_canonical(self) -> dict[str, Any]:
        """The deployable JSON form: no local paths, expressions as trees, models by sha256."""
        doc = self._canonical_core()
        if self.performance:  # only when set: specs without it keep their versions
            doc["performance"] = {k: p.to_canonical() for k, p in self.performance.items()}
        if self.source is not None:
            doc["source"] = self.source.to_canonical()
        return doc

    def _canonical_core(self) -> dict[str, Any]:
        return {
            "format": CANONICAL_FORMAT,
            "name": self.name,
            "models": {m.name: _canonical_model(m) for m in self.models},
            "validations": {k: to_json(v) for k, v in self.validations.items()},
            "alerts": {
                a.name: {
                    "when": to_json(a.when),
                    "notify": list(a.notify),
                    "for_ms": a.for_ms,
                    "repeat_ms": a.repeat_ms,
                    "severity": a.severity,
                }
                for a in self.alerts.values()
            },
            "assays": {
                a.name: {
                    "iopath": to_json(a.iopath),
                    "baseline": _canonical_baseline(a.baseline),
                    "window": {"width_ms": a.window_width_ms, "interval_ms": a.window_interval_ms},
                    "metric": a.metric,
                    "bins": dict(a.bins),
                    "thresholds": dict(a.thresholds),
                    # only when set: specs without a scan keep their versions
                    **({"scan": dict(a.scan)} if a.scan is not None else {}),
                    **_canonical_assay_notify(a),
                }
                for a in self.assays.values()
            },
            "options": {
                "allow_nan": self.options.allow_nan,
                "lateness_ms": self.options.lateness_ms,
                "max_message_bytes": self.options.max_message_bytes,
                "partitions": self.options.partitions,
                # only when set: specs without it keep their versions
                **(
                    {}
                    if self.options.record_inputs is True
                    else {"record_inputs": self.options.record_inputs}
                ),
                **(
                    {"result_format": self.options.result_format}
                    if self.options.result_format != "driftline"
                    else {}
                ),
            },
        }

    def canonical_json(self) -> bytes:
        """:meth:`to_canonical` as compact JSON with sorted keys (the hashed bytes)."""
        return orjson.dumps(self.to_canonical(), option=orjson.OPT_SORT_KEYS)

    @property
    def version(self) -> str:
        """``sha256:<hex>`` of :meth:`canonical_json`."""
        import hashlib

        return "sha256:" + hashlib.sha256(self.canonical_json()).hexdigest()

    def recorded_inputs(self) -> tuple[bool, tuple[str, ...] | None]:
        """What results carry of each request's inputs: whether any, and which of the
        champion's inputs by name (``None``: all of them).

        With ``record_inputs: used``, only the inputs alerts, assays and performance entries
        read; a champion with one input records it whole or not at all (its columns keep their
        positions), one with several records the ones read, by name.
        """
        if self.options.record_inputs != "used":
            return bool(self.options.record_inputs), None
        from driftline.expressions import variables

        info = self.champion.info
        names = [t.name for t in info.inputs] if info is not None else []
        exprs = [a.when for a in self.alerts.values()]
        exprs += [a.iopath for a in self.assays.values()]
        exprs += [e for p in self.performance.values() for e in p.prediction]
        read: set[str] = set()
        for v in (v for e in exprs for v in variables(e) if v.kind == "inputs"):
            key = v.index[0]
            if isinstance(key, int) and key < len(names):
                read.add(names[key])
            elif isinstance(key, str):
                read.add(key)
            else:
                return True, None  # not known by name: keep them all
        if not read:
            return False, None
        flat = info is not None and len(names) == 1 and info.inputs[0].dtype != "string"
        if info is None or flat:
            return True, None
        return True, tuple(n for n in names if n in read)

    def tensor_names(self) -> dict[tuple[str, str], list[str]]:
        """``{(model, "outputs"): [names...], ...}`` for :func:`driftline.expressions.evaluate`."""
        out: dict[tuple[str, str], list[str]] = {}
        for m in (*self.models, *([self.champion] if self.source is not None else [])):
            if m.output_names or m.input_names:
                out[(m.name, "inputs")] = list(m.input_names)
                out[(m.name, "outputs")] = list(m.output_names)
        return out


def _check_record_inputs(spec: PipelineSpec) -> None:
    """Alerts, assays and performance read results: with ``record_inputs: false`` they carry
    no inputs. A champion with several (or string) inputs records them by name; the monitor
    windows its numeric ones (``m.inputs["age"][0]``), never strings, and the performance join
    reads only a single numeric input vector."""
    info = spec.champion.info
    flat = info is None or (len(info.inputs) == 1 and info.inputs[0].dtype != "string")
    if spec.options.record_inputs and flat:
        return
    from driftline.expressions import variables

    exprs: list[tuple[str, Expr]] = [(f"alerts.{k}.when", a.when) for k, a in spec.alerts.items()]
    exprs += [(f"assays.{k}.iopath", a.iopath) for k, a in spec.assays.items()]
    for k, p in spec.performance.items():
        exprs += [(f"performance.{k}.prediction", e) for e in p.prediction]
    for where, expr in exprs:
        reads = sorted((v for v in variables(expr) if v.kind == "inputs"), key=str)
        if reads and spec.options.record_inputs is False:
            raise SpecError(
                "options.record_inputs",
                f"false, but {where} reads {', '.join(map(str, reads))}, which results would "
                "not carry; set record_inputs: true, or use only outputs there",
            )
        if reads and where.startswith("performance."):
            raise SpecError(
                where,
                f"reads {', '.join(map(str, reads))}, but the champion has inputs "
                f"{[t.name for t in info.inputs] if info else []} recorded by name, which the "
                "performance join does not read; use the model's outputs there",
            )
        for v in reads:
            tensor = _input_of(spec, v)
            if tensor is not None and tensor.dtype == "string":
                raise SpecError(
                    where,
                    f"reads {v}, input {tensor.name!r} of model {v.model!r}, which holds "
                    "strings; the monitor windows numbers (counts, histograms, drift scores), "
                    "so monitor a numeric input or an output there",
                )


def _input_of(spec: PipelineSpec, v: Any) -> Any:
    """The declared input a variable ``m.inputs[key][j]`` reads, or ``None`` if unknown."""
    try:
        info = spec.model(v.model).info
    except KeyError:
        return None
    if info is None:
        return None
    key = v.index[0]
    if isinstance(key, str):
        return next((t for t in info.inputs if t.name == key), None)
    return info.inputs[key] if key < len(info.inputs) else None


def _canonical_model(m: ModelSpec) -> dict[str, Any]:
    doc: dict[str, Any] = {"sha256": m.sha256, "shadow": m.shadow}
    if m.output_names or m.input_names:
        doc["inputs"] = list(m.input_names)
        doc["outputs"] = list(m.output_names)
    return doc


def _canonical_assay_notify(a: AssaySpec) -> dict[str, Any]:
    """The notification keys of an assay, only those not at their defaults (so that specs
    written before assays notified keep their versions)."""
    out: dict[str, Any] = {}
    if a.notify:
        out["notify"] = list(a.notify)
    if a.for_ms:
        out["for_ms"] = a.for_ms
    if a.repeat_ms is not None:
        out["repeat_ms"] = a.repeat_ms
    if a.severity != "critical":
        out["severity"] = a.severity
    return out


def _canonical_baseline(baseline: Mapping[str, Any]) -> dict[str, Any]:
    if "values" in baseline:
        # File baselines are embedded (processes elsewhere cannot read the author's files, and a
        # changed baseline must change the version); large ones by the hash of their values,
        # which deploy writes to the store, so the control message stays small.
        values = baseline["values"]
        if len(values) > INLINE_MAX:
            from driftline.models.baselines import baseline_digest

            digest = baseline_digest(np.asarray(values, dtype=np.float64))
            return {"sha256": digest, "count": len(values)}
        return {"values": [None if math.isnan(v) else v for v in values]}
    if "sha256" in baseline:
        return {"sha256": baseline["sha256"], "count": baseline["count"]}
    return {"from": baseline["from"], "to": baseline["to"]}


# -- loading ----------------------------------------------------------------------------------


#: The largest spec file read; bulky content (baselines) belongs in files it references.
MAX_SPEC_BYTES = 10 * 1024 * 1024
#: The most YAML nodes a spec may expand to once aliases are followed: a few anchors that
#: refer to each other can otherwise stand for billions of nodes in a few hundred bytes.
MAX_SPEC_NODES = 2_000_000


def load_spec(path: str | Path) -> PipelineSpec:
    """Load and validate a YAML spec; model and baseline paths are relative to the file.

    The file must be UTF-8 and at most :data:`MAX_SPEC_BYTES`; aliases may not expand it
    beyond :data:`MAX_SPEC_NODES` nodes.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_SPEC_BYTES:
            raise SpecError(
                str(path),
                f"the spec is {size:,} bytes, more than the {MAX_SPEC_BYTES:,} accepted; keep "
                "bulky content such as baselines in a file the spec names "
                "(baseline: {file: data/baseline.csv, column: score})",
            )
        raw = path.read_bytes()
    except OSError as exc:
        raise SpecError(str(path), f"cannot read the spec: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise SpecError(
            str(path),
            f"not UTF-8: byte 0x{raw[exc.start]:02x} at offset {exc.start} (line {line}); "
            "save the file as UTF-8",
        ) from None
    data = _load_yaml(text, str(path))
    if not isinstance(data, Mapping):
        raise SpecError(str(path), "the spec must be a YAML mapping with name, models, ...")
    return spec_from_dict(data, path.parent)


def _load_yaml(text: str, where: str) -> Any:
    """Parse YAML safely: bounded expansion, no duplicate keys, no recursion errors."""
    import yaml

    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node, where)
        _check_duplicate_keys(node, "")
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise SpecError(where, f"not valid YAML: {exc}") from None
    except RecursionError:
        raise SpecError(
            where, "the YAML is nested too deeply; flatten it (a spec needs a few levels)"
        ) from None
    finally:
        loader.dispose()


def _check_expansion(root: Any, where: str) -> None:
    """Refuse a document whose aliases expand it beyond :data:`MAX_SPEC_NODES` nodes.

    Each distinct node is sized once (an alias is the same node object again), so even an
    exponential "billion laughs" document is measured in time linear in its text.
    """
    import yaml

    sizes: dict[int, int] = {}
    active: set[int] = set()
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            active.discard(key)
            if isinstance(node, yaml.MappingNode):
                children = [c for pair in node.value for c in pair]
            else:
                children = list(node.value)
            sizes[key] = 1 + sum(sizes[id(c)] for c in children)
            if sizes[key] > MAX_SPEC_NODES:
                raise SpecError(
                    where,
                    f"the YAML expands to more than {MAX_SPEC_NODES:,} nodes through its "
                    "aliases (*name); write the values out or reference a file instead",
                )
            continue
        if key in sizes:
            continue
        if not isinstance(node, yaml.CollectionNode):
            sizes[key] = 1
            continue
        if key in active:
            raise SpecError(where, "the YAML refers to itself through an alias; remove the loop")
        active.add(key)
        stack.append((node, True))
        for item in node.value:  # nodes of a sequence, (key, value) pairs of a mapping
            for child in item if isinstance(item, tuple) else (item,):
                if id(child) in active:
                    raise SpecError(
                        where, "the YAML refers to itself through an alias; remove the loop"
                    )
                if id(child) not in sizes:
                    stack.append((child, False))


def _check_duplicate_keys(node: Any, where: str, seen: set[int] | None = None) -> None:
    import yaml

    # A node reached again through an alias was checked the first time.
    seen = set() if seen is None else seen
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        keys: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            child = f"{where}.{key}" if where else key
            line = key_node.start_mark.line + 1
            if key in keys:
                raise SpecError(
                    child, f"duplicate name (line {line}; first defined on line {keys[key]})"
                )
            keys[key] = line
            _check_duplicate_keys(value_node, child, seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _check_duplicate_keys(item, f"{where}[{i}]", seen)


def spec_from_dict(
    data: Mapping[str, Any],
    base_dir: str | Path | None = None,
    *,
    resolve_model: Callable[[str], Path] | None = None,
) -> PipelineSpec:
    """Validate a spec given as plain data (the YAML document, or what the SDK builds).

    Expressions may be text or :class:`~driftline.expressions.Expr` objects; relative paths are
    resolved against ``base_dir`` (default: the working directory).
    """
    return _Compiler(
        Path(base_dir) if base_dir is not None else Path.cwd(), resolve_model, check_serving=True
    ).run(data)


def spec_from_canonical(
    data: Mapping[str, Any], resolve_model: Callable[[str], Path] | None = None
) -> PipelineSpec:
    """Rebuild a spec from :meth:`PipelineSpec.to_canonical` (as published on the control topic).

    ``resolve_model(sha256)`` locates model files (e.g. ``ModelStore(root).path``); without it
    models carry only their hash and index checks against model shapes are skipped.
    """
    try:
        if data.get("format") != CANONICAL_FORMAT:
            raise SpecError("format", f"unsupported canonical format {data.get('format')!r}")
        doc: dict[str, Any] = {
            "name": data["name"],
            "models": [
                {
                    "name": name,
                    "sha256": m["sha256"],
                    "shadow": m["shadow"],
                    **{k: m[k] for k in ("inputs", "outputs") if k in m},
                }
                for name, m in data["models"].items()
            ],
            "validations": {k: from_json(v) for k, v in data["validations"].items()},
            "alerts": {
                k: {
                    "when": from_json(a["when"]),
                    "notify": a["notify"],
                    "for": format_duration(a["for_ms"]) if a["for_ms"] else "0s",
                    "repeat": None if a["repeat_ms"] is None else format_duration(a["repeat_ms"]),
                    "severity": a["severity"],
                }
                for k, a in data["alerts"].items()
            },
            "assays": {
                k: {
                    "iopath": from_json(a["iopath"]),
                    "baseline": {
                        k2: ([math.nan if v is None else v for v in v2] if k2 == "values" else v2)
                        for k2, v2 in a["baseline"].items()
                    },
                    "window": {
                        "width": format_duration(a["window"]["width_ms"]),
                        "interval": format_duration(a["window"]["interval_ms"]),
                    },
                    "metric": a["metric"],
                    "bins": a["bins"],
                    "thresholds": a["thresholds"],
                    **({"scan": a["scan"]} if "scan" in a else {}),
                    **({"notify": a["notify"]} if "notify" in a else {}),
                    **({"for": format_duration(a["for_ms"])} if a.get("for_ms") else {}),
                    **(
                        {"repeat": format_duration(a["repeat_ms"])}
                        if a.get("repeat_ms") is not None
                        else {}
                    ),
                    **({"severity": a["severity"]} if "severity" in a else {}),
                }
                for k, a in data["assays"].items()
            },
            **(
                {"performance": _performance_from_canonical(data["performance"])}
                if "performance" in data
                else {}
            ),
            **(_source_from_canonical(data["source"]) if "source" in data else {}),
            "options": {
                "allow_nan": data["options"]["allow_nan"],
                "lateness": format_duration(data["options"]["lateness_ms"]),
                "max_message_bytes": data["options"]["max_message_bytes"],
                "partitions": data["options"]["partitions"],
                **(
                    {"record_inputs": data["options"]["record_inputs"]}
                    if "record_inputs" in data["options"]
                    else {}
                ),
                **(
                    {"result_format": data["options"]["result_format"]}
                    if "result_format" in data["options"]
                    else {}
                ),
            },
        }
    except (KeyError, TypeError, AttributeError) as exc:
        raise SpecError("canonical", f"malformed canonical spec: missing or bad {exc}") from None
    return _Compiler(None, resolve_model).run(doc)


def _source_from_canonical(data: Mapping[str, Any]) -> dict[str, Any]:
    source = {k: data[k] for k in ("topic", "format", "model")}
    if data["requests"] is not None:
        source["requests"] = data["requests"]
    source["pair_timeout"] = format_duration(data["pair_timeout_ms"])
    return {"source": source, "inputs": data["inputs"], "outputs": data["outputs"]}


def _performance_from_canonical(data: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, p in data.items():
        doc: dict[str, Any] = {
            "task": p["task"],
            "prediction": [from_json(e) for e in p["prediction"]],
            "window": {
                "width": format_duration(p["window"]["width_ms"]),
                "interval": format_duration(p["window"]["interval_ms"]),
            },
            "horizon": format_duration(p["horizon_ms"]),
            "bins": p["bins"],
            "alerts": p["alerts"],
        }
        if p["task"] == "binary":
            doc["threshold"] = p["threshold"]
        if p["task"] == "multiclass":
            doc["classes"] = p["classes"]
        if p["estimate"] is not None:
            doc["estimate"] = p["estimate"]
        if p["reference"] is not None:
            doc["reference"] = {**p["reference"], "calibrators": p["calibrators"]}
        if p.get("label_index") is not None:
            doc["label_index"] = p["label_index"]
        out[name] = doc
    return out


# -- validation -------------------------------------------------------------------------------


class _Compiler:
    def __init__(
        self,
        base_dir: Path | None,
        resolve_model: Callable[[str], Path] | None,
        *,
        check_serving: bool = False,
    ):
        self.base_dir = base_dir
        self.resolve_model = resolve_model
        # A spec being deployed runs its models once (models.check); a deployed one that a
        # worker or monitor rebuilds from the control topic was checked then.
        self.check_serving = check_serving
        self.models: dict[str, ModelSpec] = {}

    def run(self, data: Mapping[str, Any]) -> PipelineSpec:
        _mapping(data, "spec")
        _only_keys(
            data,
            "",
            {
                "name",
                "models",
                "validations",
                "alerts",
                "assays",
                "performance",
                "options",
                "source",
                "inputs",
                "outputs",
            },
            {"name"},
        )
        name = data["name"]
        if not isinstance(name, str) or not _PIPELINE_NAME.fullmatch(name):
            raise SpecError(
                "name",
                f"{name!r} is not a valid pipeline name; use letters, digits, '_' and '-' "
                "(it becomes part of topic names), starting with a letter or digit",
            )
        if name.lower() in SYSTEM_TOPICS:
            raise SpecError(
                "name",
                f"{name!r} is reserved: driftline's own topic <prefix>.{name.lower()} would "
                f"share names with this pipeline's topics; reserved are {list(SYSTEM_TOPICS)}. "
                "Choose another name",
            )
        source = self.source(data)
        models = () if source is not None else self.compile_models(data.get("models"))
        validations = {
            check: self.row_expr(f"validations.{check}", value)
            for check, value in self.named(data, "validations")
        }
        alerts = {
            check: self.alert(f"alerts.{check}", check, value)
            for check, value in self.named(data, "alerts")
        }
        assays = {
            check: self.assay(f"assays.{check}", check, value)
            for check, value in self.named(data, "assays")
        }
        seen: dict[str, str] = {}
        for section, names in (
            ("validations", validations),
            ("alerts", alerts),
            ("assays", assays),
        ):
            for check in names:
                if check in seen:
                    raise SpecError(
                        f"{section}.{check}",
                        f"duplicate name: {check!r} is already used in {seen[check]}; names of "
                        "validations, alerts and assays must be unique within a pipeline",
                    )
                seen[check] = section
        performance = self.performance_section(data, seen)
        spec = PipelineSpec(
            name=name,
            models=models,
            validations=validations,
            alerts=alerts,
            assays=assays,
            options=self.options(data.get("options")),
            base_dir=self.base_dir,
            performance=performance,
            source=source,
        )
        _check_record_inputs(spec)
        if self.check_serving:
            size = len(spec.canonical_json())
            if size > MAX_CANONICAL_BYTES:
                raise SpecError(
                    "spec",
                    f"the deployable form is {size:,} bytes, over the control topic's limit of "
                    f"{MAX_CANONICAL_BYTES:,}: split the pipeline, or move long inline baseline "
                    "values into a file (large baselines are stored by hash)",
                )
        return spec

    def named(self, data: Mapping[str, Any], section: str) -> Iterable[tuple[str, Any]]:
        value = data.get(section)
        if value is None:
            return []
        _mapping(value, section)
        for check in value:
            if not isinstance(check, str) or not _CHECK_NAME.fullmatch(check):
                raise SpecError(
                    f"{section}.{check}",
                    f"{check!r} is not a valid name; use letters, digits, '_' and '-', "
                    "starting with a letter or '_'",
                )
        return list(value.items())

    # -- predictions made elsewhere -----------------------------------------------------
    def source(self, data: Mapping[str, Any]) -> SourceSpec | None:
        """The ``source`` of a pipeline without models, or None for one with models."""
        models = data.get("models")
        given = [k for k in ("source", "inputs", "outputs") if data.get(k) is not None]
        if models != [] and not (models is None and given):
            if given:
                raise SpecError(
                    given[0],
                    f"only a pipeline without models takes {', '.join(given)}: a pipeline "
                    "with models serves its own requests and its models declare their tensors; "
                    "write models: [] to monitor predictions another system makes",
                )
            return None
        if models is None:
            raise SpecError(
                "models",
                "missing: give the models (a list), or models: [] with source, inputs and "
                "outputs for predictions another serving system makes",
            )
        for key in ("source", "inputs", "outputs"):
            if data.get(key) is None:
                raise SpecError(
                    key,
                    "missing: a pipeline with models: [] needs source (where the predictions "
                    "are, e.g. {topic: mlserver-responses, format: v2-pairs, requests: "
                    "mlserver-requests, model: ccfraud}), inputs and outputs (the tensors, "
                    "e.g. [{name: tensor, shape: [29], dtype: float32}])",
                )
        value = data["source"]
        _mapping(value, "source")
        _only_keys(
            value,
            "source",
            {"topic", "format", "requests", "model", "pair_timeout"},
            {"topic", "format", "model"},
        )
        fmt = value["format"]
        if fmt not in SOURCE_FORMATS:
            raise SpecError(
                "source.format",
                f"{fmt!r} is not one of {list(SOURCE_FORMATS)}: driftline for result events "
                "written by the other system, v2-pairs for Open Inference Protocol requests "
                "and responses",
            )
        topics = {"topic": value["topic"]}
        if fmt == "v2-pairs":
            if value.get("requests") is None:
                raise SpecError(
                    "source.requests",
                    "missing: v2-pairs reads the responses from source.topic and pairs them "
                    "with their requests by id; name the requests topic",
                )
            topics["requests"] = value["requests"]
        elif value.get("requests") is not None:
            raise SpecError(
                "source.requests",
                "only v2-pairs reads a requests topic; a driftline source carries the inputs "
                "in its result events (remove requests, or use format: v2-pairs)",
            )
        for key, topic in topics.items():
            if not isinstance(topic, str) or not _TOPIC_NAME.fullmatch(topic):
                raise SpecError(
                    f"source.{key}",
                    f"{topic!r} is not a Kafka topic name (letters, digits, '.', '_', '-')",
                )
        from driftline.expressions import is_model_name

        model = value["model"]
        if not isinstance(model, str) or not is_model_name(model):
            raise SpecError(
                "source.model",
                f"{model!r} is not a valid model name; use an identifier (letters, digits, "
                "'_'), as expressions refer to it: ccfraud.outputs[0][0]",
            )
        timeout = value.get("pair_timeout")
        timeout_ms = 60_000 if timeout is None else self.duration("source.pair_timeout", timeout)
        info = ModelInfo(
            model,
            EXTERNAL,
            Path(),
            self.schema("inputs", data["inputs"]),
            self.schema("outputs", data["outputs"]),
        )
        spec = SourceSpec(topics["topic"], fmt, model, info, topics.get("requests"), timeout_ms)
        self.models[model] = spec.model_spec()
        return spec

    @staticmethod
    def schema(key: str, value: Any) -> tuple[Any, ...]:
        """Tensors declared for the external model: ``[{name, shape, dtype}]``."""
        if not isinstance(value, list | tuple) or not value:
            raise SpecError(
                key,
                f"expected a non-empty list of tensors, got {value!r}; e.g. "
                "[{name: tensor, shape: [29], dtype: float32}]",
            )
        out: list[TensorInfo] = []
        for i, entry in enumerate(value):
            where = f"{key}[{i}]"
            _mapping(entry, where)
            _only_keys(entry, where, {"name", "shape", "dtype"}, {"name", "shape"})
            name = entry["name"]
            if not isinstance(name, str) or not name:
                raise SpecError(f"{where}.name", f"expected a tensor name, got {name!r}")
            if name in {t.name for t in out}:
                raise SpecError(f"{where}.name", f"duplicate tensor name {name!r}")
            shape = entry["shape"]
            if (
                not isinstance(shape, list | tuple)
                or not shape
                or not all(type(d) is int and 0 < d < 2**31 for d in shape)
            ):
                raise SpecError(
                    f"{where}.shape",
                    f"expected the per-row shape as positive integers (without the batch "
                    f"dimension), e.g. [29], got {shape!r}",
                )
            dtype = entry.get("dtype", "float32")
            if dtype not in SCHEMA_DTYPES:
                raise SpecError(f"{where}.dtype", f"{dtype!r} is not one of {list(SCHEMA_DTYPES)}")
            out.append(TensorInfo(name, (None, *shape), dtype))
        if key == "inputs" and (len(out) != 1 or out[0].dtype == "bool"):
            raise SpecError(
                key,
                f"{len(out)} inputs of types {[t.dtype for t in out]}: a pipeline without "
                "models records one numeric input (the monitor windows inputs as one row); "
                "declare the request's one numeric tensor",
            )
        return tuple(out)

    # -- models --------------------------------------------------------------------------
    def compile_models(self, value: Any) -> tuple[ModelSpec, ...]:
        if not isinstance(value, list | tuple) or not value:
            raise SpecError(
                "models",
                "expected a non-empty list of models, e.g. "
                "[{name: ccfraud, path: models/ccfraud.onnx}]; for predictions another "
                "serving system makes, write models: [] with source, inputs and outputs",
            )
        out: list[ModelSpec] = []
        for i, entry in enumerate(value):
            where = f"models[{i}]"
            _mapping(entry, where)
            _only_keys(
                entry, where, {"name", "path", "shadow", "sha256", "inputs", "outputs"}, {"name"}
            )
            from driftline.expressions import is_model_name

            name = entry["name"]
            if not isinstance(name, str) or not is_model_name(name):
                raise SpecError(
                    f"{where}.name",
                    f"{name!r} is not a valid model name; use an identifier (letters, digits, "
                    "'_'), as expressions refer to it: ccfraud.outputs[0][0]",
                )
            if name in self.models:
                raise SpecError(f"{where}.name", f"duplicate model name {name!r}")
            shadow = entry.get("shadow", False)
            if not isinstance(shadow, bool):
                raise SpecError(f"{where}.shadow", f"expected true or false, got {shadow!r}")
            model = self.model_file(where, name, entry.get("path"), entry.get("sha256"), shadow)
            model = self.model_names(where, entry, model)
            self.models[name] = model
            out.append(model)
        champions = [m.name for m in out if not m.shadow]
        if len(champions) != 1:
            raise SpecError(
                "models",
                "exactly one model must be the champion (shadow: false); found "
                f"{champions or 'none'} — mark the challengers with shadow: true",
            )
        if self.check_serving:
            self.check_servable(out)
        return tuple(out)

    def check_servable(self, models: Sequence[ModelSpec]) -> None:
        from driftline.models.check import check_servable

        ordered = sorted(models, key=lambda m: m.shadow)  # the champion first
        with_info = [(m.name, m.info, m.shadow) for m in ordered if m.info is not None]
        if len(with_info) < len(ordered):
            return  # models known by hash only: checked when they were deployed
        for problem in check_servable(with_info):
            i = next(i for i, m in enumerate(models) if m.name == problem.model)
            raise SpecError(f"models[{i}]", f"{problem}; the worker could not serve it")

    def model_names(self, where: str, entry: Mapping[str, Any], model: ModelSpec) -> ModelSpec:
        given = {k: entry[k] for k in ("inputs", "outputs") if k in entry}
        for key, names in given.items():
            if not isinstance(names, list | tuple) or not all(isinstance(n, str) for n in names):
                raise SpecError(f"{where}.{key}", f"expected a list of tensor names, got {names!r}")
        if model.info is not None:
            known = {
                "inputs": [t.name for t in model.info.inputs],
                "outputs": [t.name for t in model.info.outputs],
            }
            for key, names in given.items():
                if list(names) != known[key]:
                    raise SpecError(
                        f"{where}.{key}",
                        f"{list(names)} does not match the model file's {key} {known[key]}",
                    )
            return dataclasses.replace(
                model,
                input_names=tuple(known["inputs"]),
                output_names=tuple(known["outputs"]),
            )
        return dataclasses.replace(
            model,
            input_names=tuple(given.get("inputs", ())),
            output_names=tuple(given.get("outputs", ())),
        )

    def model_file(self, where: str, name: str, path: Any, sha256: Any, shadow: bool) -> ModelSpec:
        if sha256 is not None and (not isinstance(sha256, str) or not sha256):
            raise SpecError(f"{where}.sha256", f"expected a sha256 hex digest, got {sha256!r}")
        digest = sha256.removeprefix("sha256:") if isinstance(sha256, str) else None
        file: Path | None = None
        if path is not None:
            if not isinstance(path, str | Path) or not str(path):
                raise SpecError(f"{where}.path", f"expected a file path, got {path!r}")
            file = Path(path)
            if not file.is_absolute() and self.base_dir is not None:
                file = self.base_dir / file
        elif digest is not None and self.resolve_model is not None:
            file = self.resolve_model(digest)
        elif digest is None:
            raise SpecError(f"{where}.path", "missing: give the model's .onnx file")
        if file is None:
            return ModelSpec(name, None, shadow, digest, None)
        try:
            info = inspect_model(file, name)
        except ModelError as exc:
            field_name = f"{where}.path" if path is not None else f"{where}.sha256"
            raise SpecError(field_name, str(exc)) from None
        if digest is not None and digest != info.sha256:
            raise SpecError(
                f"{where}.sha256",
                f"the file {str(file)!r} has sha256 {info.sha256}, not {digest}",
            )
        return ModelSpec(name, file.resolve(), shadow, info.sha256, info)

    # -- expressions ---------------------------------------------------------------------
    def expr(self, where: str, value: Any) -> Expr:
        if isinstance(value, Expr):
            expr = value
        elif isinstance(value, str):
            try:
                expr = parse(value)
            except ExpressionError as exc:
                raise SpecError(where, str(exc)) from None
        else:
            raise SpecError(where, f"expected an expression (text), got {value!r}")
        self.check_variables(where, expr)
        try:
            check_kinds(expr, self.value_kind)
            # the canonical spec stores the column index, read alike with or without the file
            expr = resolve_classes(expr, self.classes_of)
        except ExpressionError as exc:
            self.check_string_inputs(where, expr)
            raise SpecError(where, str(exc)) from None
        return expr

    def check_string_inputs(self, where: str, expr: Expr) -> None:
        """Name the string input an expression misuses (the generic message speaks of
        outputs, whose fix, comparing with a class label, rarely fits an input)."""
        for var in sorted(variables(expr), key=str):
            if var.kind != "inputs" or self.value_kind(var) != "string":
                continue
            info = self.models[var.model].info
            assert info is not None  # value_kind knows the kind only from the file
            position = var.index[0]
            names = [t.name for t in info.inputs]
            name = position if isinstance(position, str) else names[position]
            raise SpecError(
                where,
                f"reads {var}, input {name!r} of model {var.model!r}, which holds strings; "
                "the monitor windows numbers (counts, histograms, drift scores), so monitor a "
                "numeric input or an output there, or compare the input with a quoted value",
            )

    def row_expr(self, where: str, value: Any) -> Expr:
        expr = self.expr(where, value)
        if contains_aggregate(expr):
            raise SpecError(
                where,
                f"window aggregates (count, sum, mean, rate) are not allowed here ({expr}); they "
                "work over a window, so use them only at the top of an alert's `when`",
            )
        return expr

    def check_variables(self, where: str, expr: Expr) -> None:
        for var in sorted(variables(expr), key=str):
            self.check_variable(where, var)

    def classes_of(self, var: Variable) -> tuple[int | str, ...] | None:
        """Class labels of the ZipMap output ``var`` reads (None: it is not one)."""
        model = self.models[var.model]
        if model.info is None:
            raise ExpressionError(
                f"{var}: class names are resolved against the model file, which is not at hand "
                f"for {var.model!r}; give its path, or address the column by position"
            )
        tensors = model.info.outputs if var.kind == "outputs" else model.info.inputs
        position = var.index[0]
        name = position if isinstance(position, str) else tuple(tensors)[position].name
        return model.info.classes.get(name) if var.kind == "outputs" else None

    def value_kind(self, var: Variable) -> Kind:
        """Whether ``var`` reads strings or numbers (None: the model file is not at hand)."""
        model = self.models.get(var.model)
        if model is None or model.info is None:
            return None
        tensors = model.info.outputs if var.kind == "outputs" else model.info.inputs
        position = var.index[0]
        names = [t.name for t in tensors]
        index = names.index(position) if isinstance(position, str) else position
        return "string" if tuple(tensors)[index].dtype == "string" else "number"

    def check_variable(self, where: str, var: Variable) -> None:
        model = self.models.get(var.model)
        if model is None:
            raise SpecError(
                where,
                f"unknown model {var.model!r} in {var}; the pipeline's models are "
                f"{sorted(self.models)}",
            )
        position, column = var.index[0], var.index[-1]
        if model.info is None:
            # Without the file only names can be checked (shapes are unknown).
            names = list(model.output_names if var.kind == "outputs" else model.input_names)
            if isinstance(position, str) and names and position not in names:
                raise SpecError(
                    where,
                    f"{var}: model {var.model!r} has no {var.kind[:-1]} named {position!r}; "
                    f"its {var.kind} are {names}",
                )
            return
        tensors = model.info.outputs if var.kind == "outputs" else model.info.inputs
        if isinstance(position, str):
            names = [t.name for t in tensors]
            if position not in names:
                raise SpecError(
                    where,
                    f"{var}: model {var.model!r} has no {var.kind[:-1]} named {position!r}; "
                    f"its {var.kind} are {names}",
                )
            tensor = tensors[names.index(position)]
        else:
            if position >= len(tensors):
                raise SpecError(
                    where,
                    f"{var}: index {position} out of range; model {var.model!r} has "
                    f"{len(tensors)} {var.kind} ({[t.name for t in tensors]})",
                )
            tensor = tuple(tensors)[position]
        width = tensor.width
        if tensor.dtype.startswith(("seq", "map")):
            # a ZipMap is served as one column per class; other sequences have no fixed width
            classes = model.info.classes.get(tensor.name)
            width = len(classes) if classes is not None and var.kind == "outputs" else None
        if width is not None and not var.whole and isinstance(column, int) and column >= width:
            raise SpecError(
                where,
                f"{var}: column {column} out of range; {var.kind[:-1]} {tensor.name!r} of model "
                f"{var.model!r} has shape {list(tensor.shape)} ({width} value(s) per row)",
            )

    # -- alerts --------------------------------------------------------------------------
    def alert(self, where: str, name: str, value: Any) -> AlertSpec:
        if isinstance(value, str | Expr):
            value = {"when": value}
        _mapping(value, where)
        _only_keys(value, where, {"when", "notify", "for", "repeat", "severity"}, {"when"})
        when = self.expr(f"{where}.when", value["when"])
        try:
            condition = alert_condition(when)
        except ExpressionError as exc:
            raise SpecError(f"{where}.when", exc.reason) from None
        targets, for_ms, repeat_ms, severity = self.notification(where, value, "warning")
        return AlertSpec(name, when, condition, targets, for_ms, repeat_ms, severity)

    def notification(
        self, where: str, value: Mapping[str, Any], default_severity: str
    ) -> tuple[tuple[str, ...], int, int | None, str]:
        """``notify``, ``for``, ``repeat`` and ``severity`` of an alert or an assay."""
        notify_value = value.get("notify", [])
        if isinstance(notify_value, str) or not isinstance(notify_value, list | tuple):
            notify_value = [notify_value]
        targets: list[str] = []
        for i, target in enumerate(notify_value):
            try:
                targets.append(str(parse_target(str(target))))
            except TargetError as exc:
                raise SpecError(f"{where}.notify[{i}]", str(exc)) from None
        for_ms = self.duration(f"{where}.for", value.get("for", "0s"), allow_zero=True)
        repeat = value.get("repeat")
        repeat_ms = None if repeat is None else self.duration(f"{where}.repeat", repeat)
        severity = value.get("severity", default_severity)
        if severity not in SEVERITIES:
            raise SpecError(f"{where}.severity", f"{severity!r} is not one of {list(SEVERITIES)}")
        return tuple(sorted(set(targets))), for_ms, repeat_ms, severity

    # -- assays --------------------------------------------------------------------------
    def assay(self, where: str, name: str, value: Any) -> AssaySpec:
        _mapping(value, where)
        _only_keys(
            value,
            where,
            {
                "iopath",
                "baseline",
                "window",
                "metric",
                "bins",
                "thresholds",
                "scan",
                *_NOTIFY_KEYS,
            },
            {"iopath", "baseline", "window"},
        )
        iopath = self.row_expr(f"{where}.iopath", value["iopath"])
        width, interval = self.window(f"{where}.window", value["window"])
        metric = value.get("metric", "psi")
        try:
            check_live(str(metric))  # the detector registry: only what the monitor computes
        except ValueError as exc:
            raise SpecError(f"{where}.metric", str(exc)) from None
        bins = self.bins(f"{where}.bins", value.get("bins"))
        thresholds = value.get("thresholds", {"warning": 0.1, "alert": 0.25})
        self.check_thresholds(f"{where}.thresholds", metric, thresholds)
        baseline = self.baseline(f"{where}.baseline", value["baseline"])
        if "values" in baseline:
            self.check_baseline_bins(where, baseline["values"], bins)
        scan = self.scan(f"{where}.scan", value.get("scan"))
        targets, for_ms, repeat_ms, severity = self.notification(where, value, "critical")
        return AssaySpec(
            name,
            iopath,
            baseline,
            width,
            interval,
            metric,
            bins,
            {k: float(v) for k, v in thresholds.items()},
            scan,
            targets,
            for_ms,
            repeat_ms,
            severity,
        )

    def window(self, where: str, window: Any) -> tuple[int, int]:
        """``{width, interval}`` (interval defaults to width) as milliseconds."""
        _mapping(window, where)
        _only_keys(window, where, {"width", "interval"}, {"width"})
        width = self.duration(f"{where}.width", window["width"])
        interval = self.duration(f"{where}.interval", window.get("interval", window["width"]))
        if width < interval or width % interval:
            raise SpecError(
                where,
                f"width ({format_duration(width)}) must be a positive multiple of interval "
                f"({format_duration(interval)}); width = interval gives tumbling windows",
            )
        return width, interval

    def scan(self, where: str, value: Any) -> dict[str, Any] | None:
        """``scan: true`` or ``{test, alpha, scales}``; None (or false) for no scan."""
        if value is None or value is False:
            return None
        out: dict[str, Any] = {
            "test": "mean",
            "alpha": SCAN_ALPHA,
            "scales": list(SCAN_SCALES),
        }
        if value is True:
            return out
        _mapping(value, where)
        _only_keys(value, where, {"test", "alpha", "scales"}, set())
        params = {**out, **value}
        try:
            test, alpha, scales = validate_scan(params["test"], params["alpha"], params["scales"])
        except ValueError as exc:
            param, _, why = str(exc).partition(": ")
            raise SpecError(f"{where}.{param}", why) from None
        return {"test": test, "alpha": alpha, "scales": list(scales)}

    def bins(self, where: str, value: Any) -> dict[str, Any]:
        if value is None:
            value = {}
        _mapping(value, where)
        _only_keys(value, where, {"mode", "count", "outliers", "edges"}, set())
        mode = value.get("mode", "quantile")
        if mode not in BIN_MODES:
            raise SpecError(f"{where}.mode", f"{mode!r} is not one of {list(BIN_MODES)}")
        outliers = value.get("outliers", "explicit")
        if outliers not in OUTLIER_MODES:
            raise SpecError(
                f"{where}.outliers", f"{outliers!r} is not one of {list(OUTLIER_MODES)}"
            )
        out: dict[str, Any] = {"mode": mode, "outliers": outliers}
        if mode == "provided":
            edges = value.get("edges")
            ok = isinstance(edges, list) and len(edges) >= 2
            ok = ok and all(_is_number(e) and math.isfinite(e) for e in edges)
            if not ok or any(b <= a for a, b in itertools.pairwise(edges)):
                raise SpecError(
                    f"{where}.edges",
                    f"mode provided needs at least two strictly increasing finite edges, "
                    f"got {edges!r}",
                )
            out["edges"] = [float(e) for e in edges]
            out["count"] = len(edges) - 1
            if "count" in value and value["count"] != out["count"]:
                raise SpecError(
                    f"{where}.count", f"{value['count']!r} does not match {len(edges)} edges"
                )
        else:
            if "edges" in value:
                raise SpecError(
                    f"{where}.edges", f"edges are only used with mode provided, not {mode}"
                )
            count = value.get("count", 5)
            if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 1000:
                raise SpecError(
                    f"{where}.count", f"expected an integer from 1 to 1000, got {count!r}"
                )
            out["count"] = count
        return out

    def check_thresholds(self, where: str, metric: str, thresholds: Any) -> None:
        _mapping(thresholds, where)
        for key, number in thresholds.items():
            if not _is_number(number) or not math.isfinite(number):
                raise SpecError(f"{where}.{key}", f"expected a number, got {number!r}")
        try:
            validate_thresholds(metric, thresholds)
        except ValueError as exc:
            raise SpecError(where, str(exc).removeprefix("thresholds: ")) from None

    def baseline(self, where: str, value: Any) -> dict[str, Any]:
        _mapping(value, where)
        kinds = [k for k in ("file", "from", "values", "sha256") if k in value]
        if len(kinds) != 1:
            raise SpecError(
                where,
                "give exactly one of {file: PATH, column: NAME}, {from: T1, to: T2} or "
                f"{{values: [...]}}; got keys {sorted(value)}",
            )
        if kinds[0] == "values":
            _only_keys(value, where, {"values"}, {"values"})
            values = value["values"]
            if not isinstance(values, list | tuple) or not values:
                raise SpecError(f"{where}.values", "expected a non-empty list of numbers")
            for i, v in enumerate(values):
                if not _is_number(v):
                    raise SpecError(f"{where}.values[{i}]", f"expected a number, got {v!r}")
            return {"values": [float(v) for v in values]}
        if kinds[0] == "sha256":  # a large baseline deploy stored by hash (see models.baselines)
            _only_keys(value, where, {"sha256", "count"}, {"sha256", "count"})
            digest, count = value["sha256"], value["count"]
            if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
                raise SpecError(f"{where}.sha256", f"expected a sha256 hex digest, got {digest!r}")
            if not isinstance(count, int) or isinstance(count, bool) or count < 1:
                raise SpecError(f"{where}.count", f"expected a positive count, got {count!r}")
            return {"sha256": digest, "count": count}
        if kinds[0] == "from":
            _only_keys(value, where, {"from", "to"}, {"from", "to"})
            start = _epoch_ms(f"{where}.from", value["from"])
            end = _epoch_ms(f"{where}.to", value["to"])
            if end <= start:
                raise SpecError(f"{where}.to", f"must be after from ({value['from']!r})")
            return {"from": start, "to": end}
        _only_keys(value, where, {"file", "column"}, {"file"})
        if self.base_dir is None:
            raise SpecError(f"{where}.file", "file baselines need a base directory")
        values = _read_baseline_file(where, self.base_dir, value["file"], value.get("column"))
        return {
            "file": str(value["file"]),
            "column": value.get("column"),
            "values": [float(v) for v in values],
        }

    def check_baseline_bins(self, where: str, values: list[float], bins: dict[str, Any]) -> None:
        try:
            from driftline.detectors import Baseline
        except ImportError:
            return
        try:
            Baseline.from_values(
                np.asarray(values, dtype=np.float64),
                bins=bins["mode"],
                num_bins=bins["count"],
                edges=bins.get("edges"),
                outliers=bins["outliers"],
            )
        except (ValueError, DriftlineError) as exc:
            raise SpecError(f"{where}.baseline", f"cannot bin the baseline: {exc}") from None

    # -- performance ---------------------------------------------------------------------
    def performance_section(
        self, data: Mapping[str, Any], seen: dict[str, str]
    ) -> dict[str, PerformanceSpec]:
        out: dict[str, PerformanceSpec] = {}
        for name, value in self.named(data, "performance"):
            where = f"performance.{name}"
            spec = self.performance(where, name, value)
            for check in (name, *spec.alerts):
                if check in seen:
                    raise SpecError(
                        where if check == name else f"{where}.alerts.{check}",
                        f"duplicate name: {check!r} is already used in {seen[check]}; names of "
                        "validations, alerts, assays and performance alerts must be unique "
                        "within a pipeline",
                    )
                seen[check] = "performance"
            out[name] = spec
        return out

    def performance(self, where: str, name: str, value: Any) -> PerformanceSpec:
        from driftline.performance import ESTIMATED_NAMES, METRIC_NAMES

        _mapping(value, where)
        _only_keys(
            value,
            where,
            {
                "task",
                "prediction",
                "threshold",
                "classes",
                "window",
                "horizon",
                "bins",
                "estimate",
                "reference",
                "alerts",
                "label_index",
            },
            {"task", "prediction", "window"},
        )
        task = value["task"]
        if task not in PERFORMANCE_TASKS:
            raise SpecError(f"{where}.task", f"{task!r} is not one of {list(PERFORMANCE_TASKS)}")
        raw = value["prediction"]
        items = list(raw) if isinstance(raw, list | tuple) else [raw]
        if not items:
            raise SpecError(f"{where}.prediction", "expected an expression or a list of them")
        prediction = tuple(
            self.row_expr(f"{where}.prediction" + (f"[{i}]" if len(items) > 1 else ""), e)
            for i, e in enumerate(items)
        )
        if task != "multiclass" and len(prediction) != 1:
            raise SpecError(
                f"{where}.prediction",
                f"a {task} task takes one expression (the score or value), got {len(prediction)}",
            )
        classes = self.performance_classes(f"{where}.classes", task, value.get("classes"))
        if task == "multiclass" and len(prediction) > 1 and len(prediction) != len(classes):
            raise SpecError(
                f"{where}.prediction",
                f"{len(prediction)} probabilities for {len(classes)} classes; give one "
                "expression per class, or one expression holding the class index",
            )
        threshold = value.get("threshold", 0.5)
        if not _is_number(threshold) or not math.isfinite(threshold):
            raise SpecError(f"{where}.threshold", f"expected a number, got {threshold!r}")
        if "threshold" in value and task != "binary":
            raise SpecError(f"{where}.threshold", f"only binary tasks have one, not {task}")
        width, interval = self.window(f"{where}.window", value["window"])
        horizon = self.duration(f"{where}.horizon", value.get("horizon", "7d"))
        if horizon < width:
            raise SpecError(
                f"{where}.horizon",
                f"{format_duration(horizon)} is shorter than the window "
                f"({format_duration(width)}); labels are joined up to the horizon, so make it "
                "at least one window wide",
            )
        bins = value.get("bins", 100)
        if isinstance(bins, bool) or not isinstance(bins, int) or not 1 <= bins <= 10_000:
            raise SpecError(f"{where}.bins", f"expected an integer from 1 to 10000, got {bins!r}")
        estimate = value.get("estimate")
        if estimate is not None and estimate != "cbpe":
            raise SpecError(f"{where}.estimate", f"{estimate!r} is not supported; use cbpe")
        if estimate is not None and task == "regression":
            raise SpecError(
                f"{where}.estimate", "cbpe estimates classifiers (binary, multiclass) only"
            )
        if estimate is not None and task == "multiclass" and len(prediction) == 1:
            raise SpecError(
                f"{where}.estimate",
                "cbpe needs class probabilities: give prediction as a list of one expression "
                "per class",
            )
        label_index = value.get("label_index")
        if label_index is not None and (
            isinstance(label_index, bool) or not isinstance(label_index, int) or label_index < 0
        ):
            raise SpecError(
                f"{where}.label_index",
                f"expected an integer >= 0 (which element of a list label this entry judges), "
                f"got {label_index!r}",
            )
        reference, calibrators = self.performance_reference(
            f"{where}.reference", value.get("reference"), estimate, task, len(classes)
        )
        allowed = set(METRIC_NAMES["common"]) | set(METRIC_NAMES[task])
        estimated = set(ESTIMATED_NAMES.get(task, ())) if estimate else set()
        alerts: dict[str, PerformanceAlertSpec] = {}
        alerts_value = value.get("alerts") or {}
        _mapping(alerts_value, f"{where}.alerts")
        for alert_name, alert in alerts_value.items():
            if not isinstance(alert_name, str) or not _CHECK_NAME.fullmatch(alert_name):
                raise SpecError(
                    f"{where}.alerts.{alert_name}", f"{alert_name!r} is not a valid name"
                )
            alerts[alert_name] = self.performance_alert(
                f"{where}.alerts.{alert_name}", alert_name, alert, allowed, estimated
            )
        return PerformanceSpec(
            name=name,
            task=task,
            prediction=prediction,
            window_width_ms=width,
            window_interval_ms=interval,
            horizon_ms=horizon,
            threshold=float(threshold),
            classes=classes,
            bins=bins,
            estimate=estimate,
            reference=reference,
            calibrators=calibrators,
            alerts=alerts,
            label_index=label_index,
        )

    @staticmethod
    def performance_classes(where: str, task: str, value: Any) -> tuple[str, ...]:
        if task != "multiclass":
            if value is not None:
                raise SpecError(where, f"only multiclass tasks have classes, not {task}")
            return ()
        if isinstance(value, int) and not isinstance(value, bool) and value >= 2:
            return tuple(str(i) for i in range(value))
        if (
            isinstance(value, list | tuple)
            and len(value) >= 2
            and all(isinstance(c, str) and c for c in value)
            and len(set(value)) == len(value)
        ):
            return tuple(value)
        raise SpecError(
            where,
            f"expected the number of classes (≥ 2) or a list of distinct class names, got "
            f"{value!r}",
        )

    def performance_reference(
        self, where: str, value: Any, estimate: str | None, task: str, classes: int
    ) -> tuple[dict[str, Any] | None, tuple[dict[str, list[float]], ...]]:
        """``{file, score, label}``: the labelled reference CBPE's calibrators are fitted on."""
        if value is None:
            return None, ()
        if estimate is None:
            raise SpecError(where, "a reference is only used with estimate: cbpe")
        _mapping(value, where)
        _only_keys(value, where, {"file", "score", "label", "calibrators"}, {"file", "score"})
        score = value["score"]
        columns = list(score) if isinstance(score, list | tuple) else [score]
        want = classes if task == "multiclass" else 1
        if len(columns) != want or not all(isinstance(c, str) and c for c in columns):
            raise SpecError(
                f"{where}.score",
                f"expected {want} column name(s) (the reference's "
                f"{'class probabilities' if want > 1 else 'scores'}), got {score!r}",
            )
        label = value.get("label", "label")
        if not isinstance(label, str) or not label:
            raise SpecError(f"{where}.label", f"expected a column name, got {label!r}")
        ref = {"file": str(value["file"]), "score": score, "label": label}
        if "calibrators" in value:  # from a canonical spec: fitted at deploy time
            cals = value["calibrators"]
            if not isinstance(cals, list | tuple) or len(cals) != want:
                raise SpecError(f"{where}.calibrators", f"expected {want} calibrator(s)")
            return ref, tuple({"x": list(c["x"]), "y": list(c["y"])} for c in cals)
        if self.base_dir is None:
            raise SpecError(f"{where}.file", "file references need a base directory")

        def column(key: str, name: str) -> np.ndarray:
            try:
                return _read_baseline_file(where, self.base_dir or Path(), value["file"], name)
            except SpecError as exc:
                raise SpecError(
                    exc.field.replace(f"{where}.column", f"{where}.{key}"), exc.reason
                ) from None

        labels = column("label", label)
        from driftline.performance import Calibrator

        cals_out: list[dict[str, list[float]]] = []
        for i, col in enumerate(columns):
            scores = column("score", col)
            target = labels == i if task == "multiclass" else labels
            if task == "binary" and not np.isin(labels[~np.isnan(labels)], (0.0, 1.0)).all():
                raise SpecError(f"{where}.label", f"column {label!r} must hold 0 or 1 labels")
            ok = ~np.isnan(scores) & ~np.isnan(labels)
            if not ok.any():
                raise SpecError(f"{where}.file", "no row holds both a score and a label")
            cals_out.append(Calibrator.fit(scores[ok], np.asarray(target, float)[ok]).to_dict())
        return ref, tuple(cals_out)

    def performance_alert(
        self, where: str, name: str, value: Any, allowed: set[str], estimated: set[str]
    ) -> PerformanceAlertSpec:
        if isinstance(value, str):
            value = {"when": value}
        _mapping(value, where)
        _only_keys(value, where, {"when", "min_labeled", "notify", "severity"}, {"when"})
        when = value["when"]
        match = _PERF_WHEN.fullmatch(when) if isinstance(when, str) else None
        if match is None:
            raise SpecError(
                f"{where}.when",
                f"expected '<metric> <op> <number>' such as 'accuracy < 0.9', got {when!r}",
            )
        metric, op, number = match.group(1), match.group(2), float(match.group(3))
        is_estimate = metric.startswith("estimated.")
        bare = metric.removeprefix("estimated.")
        names = estimated if is_estimate else allowed
        if bare not in names:
            hint = (
                "estimated metrics need estimate: cbpe"
                if is_estimate and not estimated
                else f"use one of {sorted(names)}"
            )
            raise SpecError(f"{where}.when", f"unknown metric {metric!r}; {hint}")
        min_labeled = value.get("min_labeled", 0)
        if isinstance(min_labeled, bool) or not isinstance(min_labeled, int) or min_labeled < 0:
            raise SpecError(f"{where}.min_labeled", f"expected an integer ≥ 0, got {min_labeled!r}")
        notify_value = value.get("notify", [])
        if isinstance(notify_value, str) or not isinstance(notify_value, list | tuple):
            notify_value = [notify_value]
        targets: list[str] = []
        for i, target in enumerate(notify_value):
            try:
                parse_target(str(target))
            except ValueError as exc:
                raise SpecError(f"{where}.notify[{i}]", str(exc)) from None
            targets.append(str(target))
        severity = value.get("severity", "warning")
        if severity not in SEVERITIES:
            raise SpecError(f"{where}.severity", f"{severity!r} is not one of {list(SEVERITIES)}")
        return PerformanceAlertSpec(
            name, bare, op, number, min_labeled, tuple(sorted(set(targets))), severity, is_estimate
        )

    # -- options -------------------------------------------------------------------------
    def options(self, value: Any) -> SpecOptions:
        if value is None:
            return SpecOptions()
        _mapping(value, "options")
        _only_keys(
            value,
            "options",
            {
                "allow_nan",
                "lateness",
                "max_message_bytes",
                "partitions",
                "record_inputs",
                "result_format",
            },
            set(),
        )
        defaults = SpecOptions()
        allow_nan = value.get("allow_nan", defaults.allow_nan)
        if not isinstance(allow_nan, bool):
            raise SpecError("options.allow_nan", f"expected true or false, got {allow_nan!r}")
        lateness = value.get("lateness")
        lateness_ms = (
            defaults.lateness_ms
            if lateness is None
            else self.duration("options.lateness", lateness, allow_zero=True)
        )
        ints = {}
        for key, low in (("max_message_bytes", 1024), ("partitions", 1)):
            number = value.get(key, getattr(defaults, key))
            if isinstance(number, bool) or not isinstance(number, int) or number < low:
                raise SpecError(f"options.{key}", f"expected an integer ≥ {low}, got {number!r}")
            ints[key] = number
        if ints["max_message_bytes"] > MAX_MESSAGE_BYTES:
            raise SpecError(
                "options.max_message_bytes",
                f"{ints['max_message_bytes']} is over {MAX_MESSAGE_BYTES} (50 MiB, what a Kafka "
                "consumer fetches at once by default); send large tensors as V2 base64 data, "
                "or split them",
            )
        record_inputs = value.get("record_inputs", defaults.record_inputs)
        if not isinstance(record_inputs, bool) and record_inputs != "used":
            raise SpecError(
                "options.record_inputs",
                f"expected true, false or used, got {record_inputs!r} (false: results omit "
                "inputs; used: they keep only the inputs alerts, assays and performance read)",
            )
        result_format = value.get("result_format", defaults.result_format)
        if result_format not in RESULT_FORMATS:
            raise SpecError(
                "options.result_format",
                f"{result_format!r} is not one of {list(RESULT_FORMATS)} (v2: each result is "
                "an Open Inference Protocol response, as KServe, MLServer and Triton write)",
            )
        return SpecOptions(
            allow_nan,
            lateness_ms,
            ints["max_message_bytes"],
            ints["partitions"],
            record_inputs,
            result_format,
        )

    @staticmethod
    def duration(where: str, value: Any, allow_zero: bool = False) -> int:
        try:
            ms = parse_duration(value)
        except ValueError as exc:
            raise SpecError(where, str(exc)) from None
        if ms == 0 and not allow_zero:
            raise SpecError(where, f"{value!r}: must be longer than zero")
        return ms


def _mapping(value: Any, where: str) -> None:
    if not isinstance(value, Mapping):
        raise SpecError(where, f"expected a mapping, got {type(value).__name__} {value!r}")


def _only_keys(value: Mapping[str, Any], where: str, allowed: set[str], required: set[str]) -> None:
    prefix = f"{where}." if where else ""
    for key in value:
        if key not in allowed:
            raise SpecError(
                f"{prefix}{key}", f"unknown field {key!r}; expected one of {sorted(allowed)}"
            )
    for key in sorted(required):
        if key not in value or value[key] is None:
            raise SpecError(f"{prefix}{key}", "missing required field")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _epoch_ms(where: str, value: Any) -> int:
    if isinstance(value, dt.datetime):
        moment = value
    elif isinstance(value, dt.date):
        moment = dt.datetime(value.year, value.month, value.day)
    elif _is_number(value):
        return int(value)
    elif isinstance(value, str):
        try:
            moment = dt.datetime.fromisoformat(value)
        except ValueError:
            raise SpecError(
                where, f"{value!r} is neither ISO-8601 (2024-05-01T00:00:00Z) nor epoch ms"
            ) from None
    else:
        raise SpecError(where, f"expected a time, got {value!r}")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return int(moment.timestamp() * 1000)


# -- baselines --------------------------------------------------------------------------------


def store_large_baselines(spec: PipelineSpec, store: str | Path) -> None:
    """Write the baselines that the canonical spec names by hash into the model store.

    Call before publishing the spec (``deploy`` does): a monitor reads them back by hash.
    """
    from driftline.models.baselines import BaselineStore

    for assay in spec.assays.values():
        values = assay.baseline.get("values")
        if values is not None and len(values) > INLINE_MAX:
            BaselineStore(store).put(np.asarray(values, dtype=np.float64))


def load_baseline_values(
    assay: AssaySpec, base_dir: str | Path | None = None, store: str | Path | None = None
) -> np.ndarray | None:
    """The baseline's values, or None for a ``{from, to}`` baseline of the pipeline's history.

    ``store`` is the model store, which holds the large baselines deployed by hash.
    """
    baseline = assay.baseline
    if "sha256" in baseline:
        from driftline.models.baselines import BaselineStore

        if store is None:
            raise SpecError(
                f"assays.{assay.name}.baseline",
                "the baseline is stored by hash; reading it needs the model store "
                "(DRIFTLINE_MODEL_STORE)",
            )
        try:
            return BaselineStore(store).get(str(baseline["sha256"]))
        except DriftlineError as exc:
            raise SpecError(f"assays.{assay.name}.baseline", str(exc)) from None
    if "values" in baseline:
        return np.asarray(
            [math.nan if v is None else v for v in baseline["values"]], dtype=np.float64
        )
    if "file" in baseline:
        return _read_baseline_file(
            f"assays.{assay.name}.baseline",
            Path(base_dir) if base_dir is not None else Path.cwd(),
            baseline["file"],
            baseline.get("column"),
        )
    return None


def _read_baseline_file(where: str, base_dir: Path, file: Any, column: Any) -> np.ndarray:
    if not isinstance(file, str | Path) or not str(file):
        raise SpecError(f"{where}.file", f"expected a file path, got {file!r}")
    path = Path(file) if Path(file).is_absolute() else base_dir / file
    if not path.is_file():
        raise SpecError(f"{where}.file", f"{str(file)!r} does not exist (looked in {path})")
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".parquet", ".pq"):
            import pandas as pd

            frame = pd.read_csv(path) if suffix == ".csv" else pd.read_parquet(path)
            if column is None:
                if frame.shape[1] != 1:
                    raise SpecError(
                        f"{where}.column",
                        f"missing: {str(file)!r} has columns {list(frame.columns)}; name one",
                    )
                column = frame.columns[0]
            if column not in frame.columns:
                raise SpecError(
                    f"{where}.column",
                    f"{column!r} is not a column of {str(file)!r}; columns: {list(frame.columns)}",
                )
            series = pd.to_numeric(frame[column], errors="coerce")
            bad = series.isna() & frame[column].notna()
            if bad.any():
                raise SpecError(
                    f"{where}.column",
                    f"column {column!r} of {str(file)!r} has non-numeric values, e.g. "
                    f"{frame[column][bad].iloc[0]!r}",
                )
            values = series.to_numpy(dtype=np.float64)
        elif suffix == ".json":
            data = orjson.loads(path.read_bytes())
            if isinstance(data, Mapping):
                if column is None or column not in data:
                    raise SpecError(
                        f"{where}.column", f"{column!r} is not a key of {str(file)!r}: {list(data)}"
                    )
                data = data[column]
            elif column is not None and data and isinstance(data[0], Mapping):
                data = [row.get(column) for row in data]
            if not isinstance(data, list) or not all(v is None or _is_number(v) for v in data):
                raise SpecError(
                    f"{where}.file", f"{str(file)!r} must hold a list of numbers (or a column)"
                )
            values = np.asarray([math.nan if v is None else v for v in data], dtype=np.float64)
        else:
            raise SpecError(f"{where}.file", f"{str(file)!r}: use a .csv, .parquet or .json file")
    except SpecError:
        raise
    except Exception as exc:
        raise SpecError(f"{where}.file", f"cannot read {str(file)!r}: {exc}") from None
    if values.size == 0 or np.isnan(values).all():
        raise SpecError(f"{where}.file", f"{str(file)!r} holds no numeric values")
    return values


# -- the SDK builder --------------------------------------------------------------------------


class PipelineBuilder:
    """Build a spec in Python; ``.build()`` validates exactly as a YAML spec is validated.

    >>> from driftline.expressions import ModelRef
    >>> b = PipelineBuilder("fraud")
    >>> b.add_validation("low", ModelRef("m").outputs[0][0] < 0.5)  # doctest: +ELLIPSIS
    <driftline.spec.PipelineBuilder object at ...>
    """

    def __init__(self, name: str, base_dir: str | Path | None = None):
        self.name = name
        self.base_dir = Path(base_dir) if base_dir is not None else Path.cwd()
        self._models: dict[str, dict[str, Any]] = {}
        self._validations: dict[str, Any] = {}
        self._alerts: dict[str, Any] = {}
        self._assays: dict[str, Any] = {}
        self._options: dict[str, Any] = {}
        self._performance: dict[str, Any] = {}
        self._external: dict[str, Any] = {}

    def set_source(
        self,
        topic: str,
        model: str,
        inputs: Sequence[Mapping[str, Any]],
        outputs: Sequence[Mapping[str, Any]],
        *,
        format: str = "v2-pairs",
        requests: str | None = None,
        pair_timeout: str | None = None,
    ) -> PipelineBuilder:
        """Monitor predictions another system makes: a pipeline without models (the YAML's
        ``models: []`` with ``source``, ``inputs`` and ``outputs``).

        >>> from driftline.expressions import ModelRef
        >>> spec = (PipelineBuilder("ext")
        ...     .set_source("responses", "scorer", [{"name": "x", "shape": [3]}],
        ...                 [{"name": "p", "shape": [1]}], requests="requests")
        ...     .add_validation("low", ModelRef("scorer").outputs[0][0] < 0.5).build())
        >>> spec.source.format, spec.champion.name, spec.models
        ('v2-pairs', 'scorer', ())
        """
        source: dict[str, Any] = {"topic": topic, "format": format, "model": model}
        if requests is not None:
            source["requests"] = requests
        if pair_timeout is not None:
            source["pair_timeout"] = pair_timeout
        self._external = {
            "source": source,
            "inputs": [dict(t) for t in inputs],
            "outputs": [dict(t) for t in outputs],
        }
        return self

    def add_model_step(self, model: Any) -> PipelineBuilder:
        """Make ``model`` (anything with ``.name`` and ``.path``) the champion."""
        self._add_model(model, shadow=False)
        return self

    def add_shadow_deploy(self, champion: Any, challengers: Iterable[Any]) -> PipelineBuilder:
        """Run ``challengers`` on the same rows as ``champion``, recording their outputs only."""
        self._add_model(champion, shadow=False)
        for model in challengers:
            self._add_model(model, shadow=True)
        return self

    def add_validation(self, name: str, expr: Expr | str) -> PipelineBuilder:
        self._unique("validations", self._validations, name)
        self._validations[name] = expr
        return self

    def add_alert(
        self,
        name: str,
        condition_expr: Expr | str,
        notify_targets: Iterable[Any] = (),
        for_: str | None = None,
        repeat: str | None = None,
        severity: str = "warning",
    ) -> PipelineBuilder:
        self._unique("alerts", self._alerts, name)
        alert: dict[str, Any] = {
            "when": condition_expr,
            "notify": [str(t) for t in notify_targets],
            "severity": severity,
        }
        if for_ is not None:
            alert["for"] = for_
        if repeat is not None:
            alert["repeat"] = repeat
        self._alerts[name] = alert
        return self

    def add_assay(
        self,
        name: str,
        iopath: Expr | str,
        baseline: Mapping[str, Any] | Iterable[float],
        window: Mapping[str, str] | None = None,
        metric: str = "psi",
        bins: Mapping[str, Any] | None = None,
        thresholds: Mapping[str, float] | None = None,
        scan: bool | Mapping[str, Any] | None = None,
        notify: Iterable[Any] = (),
        for_: str | None = None,
        repeat: str | None = None,
        severity: str | None = None,
    ) -> PipelineBuilder:
        """Add a drift assay; ``baseline`` is a mapping as in YAML, or the values themselves.

        ``scan=True`` (or ``{"test", "alpha", "scales"}``) also tests the merged last 1, 2, 4
        and 8 windows at each window, which catches small persistent shifts sooner.
        ``notify`` (targets or ``notify.Email(...)`` objects), ``for_``, ``repeat`` and
        ``severity`` (of the alert level) work as on alerts: each status transition
        ``ok → warning → alert → ok`` is one notification.
        """
        self._unique("assays", self._assays, name)
        if not isinstance(baseline, Mapping):
            baseline = {"values": [float(v) for v in np.asarray(list(baseline), dtype=float)]}
        assay: dict[str, Any] = {
            "iopath": iopath,
            "baseline": dict(baseline),
            "window": dict(window or {"width": "5m", "interval": "1m"}),
            "metric": metric,
        }
        if bins is not None:
            assay["bins"] = dict(bins)
        if thresholds is not None:
            assay["thresholds"] = dict(thresholds)
        if scan is not None and scan is not False:
            assay["scan"] = scan if isinstance(scan, bool) else dict(scan)
        targets = [str(t) for t in notify]
        if targets:
            assay["notify"] = targets
        if for_ is not None:
            assay["for"] = for_
        if repeat is not None:
            assay["repeat"] = repeat
        if severity is not None:
            assay["severity"] = severity
        self._assays[name] = assay
        return self

    def add_performance(
        self,
        name: str,
        task: str,
        prediction: Expr | str | Iterable[Expr | str],
        window: Mapping[str, str] | None = None,
        threshold: float | None = None,
        classes: int | Iterable[str] | None = None,
        horizon: str = "7d",
        estimate: str | None = None,
        reference: Mapping[str, Any] | None = None,
        alerts: Mapping[str, Mapping[str, Any] | str] | None = None,
        bins: int | None = None,
        label_index: int | None = None,
    ) -> PipelineBuilder:
        """Track realized (and, with ``estimate="cbpe"``, estimated) model performance.

        Arguments mirror the YAML ``performance:`` entry; ``alerts`` maps names to
        ``{"when": "accuracy < 0.9", "min_labeled": 200, "notify": [...]}``; ``label_index``
        picks the element of list labels (multi-output models) this entry judges.
        """
        self._unique("performance", self._performance, name)
        pred: Any = prediction
        if not isinstance(prediction, Expr | str):
            pred = list(prediction)
        doc: dict[str, Any] = {
            "task": task,
            "prediction": pred,
            "window": dict(window or {"width": "1h", "interval": "5m"}),
            "horizon": horizon,
        }
        if threshold is not None:
            doc["threshold"] = threshold
        if classes is not None:
            doc["classes"] = classes if isinstance(classes, int) else list(classes)
        if estimate is not None:
            doc["estimate"] = estimate
        if reference is not None:
            doc["reference"] = dict(reference)
        if alerts:
            doc["alerts"] = {
                k: (
                    {"when": v}
                    if isinstance(v, str)
                    else {**v, "notify": [str(t) for t in v.get("notify", [])]}
                )
                for k, v in alerts.items()
            }
        if bins is not None:
            doc["bins"] = bins
        if label_index is not None:
            doc["label_index"] = label_index
        self._performance[name] = doc
        return self

    def set_options(self, **options: Any) -> PipelineBuilder:
        """Options as in YAML: allow_nan, lateness ("5s"), max_message_bytes, partitions,
        record_inputs, result_format ("v2")."""
        self._options.update(options)
        return self

    def to_dict(self) -> dict[str, Any]:
        """The spec as data, in the YAML's shape."""
        doc: dict[str, Any] = {"name": self.name, "models": list(self._models.values())}
        doc.update(self._external)
        for key, section in (
            ("validations", self._validations),
            ("alerts", self._alerts),
            ("assays", self._assays),
            ("performance", self._performance),
            ("options", self._options),
        ):
            if section:
                doc[key] = dict(section)
        return doc

    def build(self) -> PipelineSpec:
        return spec_from_dict(self.to_dict(), self.base_dir)

    def _add_model(self, model: Any, shadow: bool) -> None:
        name, path = getattr(model, "name", None), getattr(model, "path", None)
        if name is None or path is None:
            raise SpecError(
                "models",
                f"{model!r} is not a model; pass what client.upload_model() returned "
                "(anything with .name and .path)",
            )
        entry = {"name": name, "path": str(Path(path).resolve()), "shadow": shadow}
        existing = self._models.get(name)
        if existing is not None:
            if existing["path"] != entry["path"]:
                raise SpecError(f"models.{name}", f"duplicate model name {name!r} (another file)")
            if existing["shadow"] != shadow:
                raise SpecError(
                    f"models.{name}", f"model {name!r} cannot be both champion and shadow"
                )
            return
        if not shadow and any(not m["shadow"] for m in self._models.values()):
            current = next(n for n, m in self._models.items() if not m["shadow"])
            raise SpecError(
                "models",
                f"the pipeline already has champion {current!r}; add {name!r} as a shadow with "
                "add_shadow_deploy(champion, [challenger])",
            )
        self._models[name] = entry

    @staticmethod
    def _unique(section: str, existing: Mapping[str, Any], name: str) -> None:
        if name in existing:
            raise SpecError(f"{section}.{name}", f"duplicate name {name!r}")
