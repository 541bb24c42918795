"""The events driftline writes to Kafka (DESIGN §2), as frozen dataclasses with JSON codecs.

All events are UTF-8 JSON objects, one per Kafka message. Times are epoch milliseconds.
Ids of notifications are deterministic, so that a redelivered alert keeps its id.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import orjson

__all__ = [
    "AssayResult",
    "Notification",
    "ResultEvent",
    "decode",
    "encode",
    "notification_id",
]

AlertState = Literal["firing", "resolved"]
AssayStatus = Literal["ok", "warning", "alert", "error"]


def encode(obj: Any) -> bytes:
    """Serialize an event (dataclass or dict) to compact JSON bytes with NaN as null."""
    if hasattr(obj, "to_dict"):
        obj = obj.to_dict()
    return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)


def decode(data: bytes | str) -> Any:
    """Parse JSON bytes; raises ``orjson.JSONDecodeError`` (a ``ValueError``) on bad input."""
    return orjson.loads(data)


def notification_id(pipeline: str, alert: str, transition_start: int, state: str) -> str:
    """Deterministic id of one alert transition.

    >>> notification_id("fraud", "high_fraud_5m", 1732170000000, "firing")
    'n-...'
    >>> notification_id("p", "a", 1, "firing") == notification_id("p", "a", 1, "firing")
    True
    """
    digest = hashlib.sha256(
        f"{pipeline}\0{alert}\0{transition_start}\0{state}".encode()
    ).hexdigest()
    return f"n-{digest[:24]}"


@dataclass(frozen=True)
class ResultEvent:
    """One row's result on ``<p>.results``."""

    id: str
    row: int
    time: int
    pipeline: str
    spec: str
    inputs: list[float]
    outputs: dict[str, list[list[float]]]
    models: dict[str, str]
    check_failures: list[str] = field(default_factory=list)
    elapsed_ns: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ResultEvent:
        return cls(
            id=str(d["id"]),
            row=int(d.get("row", 0)),
            time=int(d["time"]),
            pipeline=str(d["pipeline"]),
            spec=str(d.get("spec", "")),
            inputs=list(d.get("inputs", [])),
            outputs=dict(d.get("outputs", {})),
            models=dict(d.get("models", {})),
            check_failures=list(d.get("check_failures", [])),
            elapsed_ns=int(d.get("elapsed_ns", 0)),
        )


@dataclass(frozen=True)
class AssayResult:
    """One closed window of one assay on ``driftline.assays`` (key ``pipeline/assay``)."""

    pipeline: str
    assay: str
    iopath: str
    window_start: int
    window_end: int
    count: int
    metric: str
    score: float
    p_value: float | None
    status: AssayStatus
    thresholds: dict[str, float]
    edges: list[float]
    baseline_densities: list[float]
    window_densities: list[float]
    spec: str
    #: With an assay ``scan``: ``{test, alpha, p_value, scale, p_values}`` of the merged windows.
    scan: dict[str, Any] | None = None
    #: With ``status: "error"``: why the pipeline is quarantined (pipeline, assay, cause).
    detail: str | None = None

    @property
    def key(self) -> str:
        return f"{self.pipeline}/{self.assay}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AssayResult:
        names = cls.__dataclass_fields__
        return cls(**{k: d[k] for k in names if k in d})


@dataclass(frozen=True)
class Notification:
    """One alert or assay transition on ``driftline.notifications`` (key = ``pipeline/alert``).

    ``kind`` is ``alert``, ``assay`` or ``error`` (a quarantined pipeline).

    ``window`` is ``{"start": ms, "end": ms}``; ``notify`` lists targets such as
    ``email:ops@example.com``, ``slack:fraud-alerts``, ``webhook:pager`` or ``stdout``.
    """

    id: str
    alert: str
    pipeline: str
    state: AlertState
    value: float
    condition: str
    window: dict[str, int]
    at: int
    severity: str
    notify: list[str]
    spec: str
    kind: str = "alert"
    #: What a renderer may show besides the condition: for an assay ``{assay_status, metric,
    #: score, threshold, thresholds, window_count, baseline_count, iopath, replay}``.
    details: dict[str, Any] | None = None

    @property
    def key(self) -> str:
        return f"{self.pipeline}/{self.alert}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Notification:
        names = cls.__dataclass_fields__
        missing = [k for k in ("id", "alert", "pipeline", "state") if k not in d]
        if missing:
            raise ValueError(f"notification is missing field(s) {', '.join(missing)}")
        defaults: dict[str, Any] = {
            "value": float("nan"),
            "condition": "",
            "window": {},
            "at": 0,
            "severity": "warning",
            "notify": [],
            "spec": "",
        }
        return cls(**{**defaults, **{k: d[k] for k in names if k in d}})
