"""The Python SDK: build, deploy and use pipelines from a notebook.

It mirrors the notebooks users come from::

    from driftline import Client, fn, notify

    client = Client()
    champion = client.upload_model("ccfraud", "examples/fraud/models/ccfraud.onnx")
    challenger = client.upload_model("fraud_base", "examples/fraud/models/fraud_base.onnx")
    pipeline = (
        client.build_pipeline("fraud")
        .add_model_step(champion)
        .add_shadow_deploy(champion, [challenger])
        .add_validation("no_high_fraud", champion.outputs[0][0] < 0.95)
        .add_alert(
            "high_fraud_5m",
            fn.count(champion.outputs[0][0] > 0.95, "5m", "1s") > 10,
            [notify.Email(to="ops@example.com")],
        )
        .deploy()
    )
    pipeline.infer_from_file("examples/fraud/data/smoke_test.json")
    pipeline.logs(limit=10)
    pipeline.undeploy()

The SDK and ``driftline deploy spec.yaml`` compile to the same canonical spec.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from driftline import notify
from driftline.config import Settings, load_settings
from driftline.expressions import fn
from driftline.spec import (
    PipelineBuilder,
    PipelineSpec,
    spec_from_canonical,
    store_large_baselines,
)
from driftline.streams.control import ControlPlane, spec_version

if TYPE_CHECKING:
    import pandas as pd

    from driftline.models import ModelInfo

__all__ = ["Client", "DeployablePipeline", "Pipeline", "fn", "notify"]


class Pipeline:
    """A deployed pipeline: send requests, read results, undeploy."""

    def __init__(self, client: Client, name: str, canonical: dict[str, Any]):
        self.client = client
        self.name = name
        self.canonical = canonical
        self.version = spec_version(canonical)

    def __repr__(self) -> str:
        return f"Pipeline({self.name!r}, version={self.version[:19]}…)"

    def undeploy(self) -> bool:
        """Remove the pipeline from the control topic (its topics and history stay)."""
        return self.client._control.undeploy(self.name)

    def infer(self, rows: Any, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Send one request of ``rows`` (a list of rows or a 2-D array); return its results."""
        from driftline.streams.produce import infer

        return infer(self.client.settings.kafka, self.name, {"tensor": rows}, timeout=timeout)

    def infer_from_file(self, path: str | Path, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Send the request stored in a JSON file; return its results."""
        from driftline.streams.produce import infer, read_request_file

        request = read_request_file(Path(path))
        return infer(self.client.settings.kafka, self.name, request, timeout=timeout)

    def logs(
        self, limit: int = 100, failures_only: bool = False, dataframe: bool = False
    ) -> list[dict[str, Any]] | pd.DataFrame:
        """The latest ``limit`` results (a pandas DataFrame with ``dataframe=True``)."""
        from driftline.streams.produce import latest_results, results_frame

        results = latest_results(
            self.client.settings.kafka, self.name, limit=limit, failures_only=failures_only
        )
        return results_frame(results) if dataframe else results

    def send_feedback(self, rows: Any, rate: float | None = None) -> int:
        """Send labels: ``[{"id": "r-1", "row": 0, "label": 1, "time": ...}, ...]``.

        ``row`` defaults to 0 and ``time`` to now; labels join their predictions by
        ``(id, row)`` in any order (the last label of a pair wins). Returns how many were sent.
        """
        from driftline.streams._outcomes_cli import send_feedback

        return send_feedback(self.client.settings.kafka, self.name, list(rows), rate=rate)

    def feedback_from_file(self, path: str | Path, rate: float | None = None) -> int:
        """Send the labels of a JSON-lines file (or a JSON array); returns how many were sent."""
        from driftline.streams._outcomes_cli import feedback_lines, send_feedback

        return send_feedback(self.client.settings.kafka, self.name, feedback_lines(path), rate=rate)

    def performance(self, history: bool = False) -> pd.DataFrame:
        """Model performance per window: the latest revision of each (every one with history)."""
        from driftline.streams._outcomes_cli import (
            latest_revisions,
            performance_frame,
            read_performance,
        )

        events = read_performance(self.client.settings.kafka, self.name)
        return performance_frame(events if history else latest_revisions(events))


class DeployablePipeline(PipelineBuilder):
    """A :class:`~driftline.spec.PipelineBuilder` that knows its client, so it can deploy."""

    def __init__(self, client: Client, name: str):
        super().__init__(name)
        self._client = client

    def deploy(self) -> Pipeline:
        """Validate, upload the models, create the topics and publish the spec."""
        spec = self.build()
        return self._client.deploy(spec)


class Client:
    """Entry point of the SDK; reads settings from the environment unless given."""

    def __init__(self, settings: Settings | None = None):
        self.settings = settings or load_settings()
        self._control = ControlPlane(self.settings.kafka)

    def upload_model(self, name: str, path: str | Path) -> ModelInfo:
        """Store an ONNX model content-addressed and record the version in Kafka."""
        from driftline.models import ModelStore

        info = ModelStore(self.settings.model_store).put(name, Path(path))
        self._control.record_model(info)
        return info

    def build_pipeline(self, name: str) -> DeployablePipeline:
        """Start describing a pipeline; finish with ``.deploy()``."""
        return DeployablePipeline(self, name)

    def deploy(self, spec: PipelineSpec) -> Pipeline:
        """Deploy a built or loaded spec (uploads its models first)."""
        from driftline.models import ModelStore

        store = ModelStore(self.settings.model_store)
        for model in spec.models:
            if model.path is None:  # a spec rebuilt from Kafka: its models are stored already
                continue
            info = store.put(model.name, Path(model.path))
            self._control.record_model(info)
        store_large_baselines(spec, self.settings.model_store)
        self._control.deploy(spec)
        return Pipeline(self, spec.name, spec.to_canonical())

    def pipelines(self) -> list[Pipeline]:
        """Every deployed pipeline."""
        return [Pipeline(self, n, c) for n, c in sorted(self._control.snapshot().items())]

    def pipeline(self, name: str) -> Pipeline:
        """One deployed pipeline by name (``KeyError`` if it is not deployed)."""
        snapshot = self._control.snapshot()
        if name not in snapshot:
            raise KeyError(f"pipeline {name!r} is not deployed; deployed: {sorted(snapshot)}")
        return Pipeline(self, name, snapshot[name])

    def spec(self, name: str) -> PipelineSpec:
        """The deployed spec of ``name``, rebuilt from the control topic."""
        from driftline.models import ModelStore

        store = ModelStore(self.settings.model_store)
        return spec_from_canonical(self.pipeline(name).canonical, resolve_model=store.path)
