"""MLServer as a Kafka server with a small onnxruntime runtime, for the benchmark and the tests.

MLServer (from PyPI, pinned to :data:`MLSERVER_VERSION`) pins dependencies of its own, so it
lives in its own virtualenv, ``bench/.mlserver-venv`` (ignored by git), created on first use.
:func:`start_mlserver` runs it reading Open Inference Protocol requests from one topic and
writing responses to another; requests need the header ``mlserver-model: <name>``, and a
response carries its request's Kafka key (or, without one, its ``id``) as key and ``id``.

Used by ``bench/inference.py`` (run as a script) and ``tests/integration/
test_external_mlserver.py`` (which loads this file by path).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

__all__ = ["MLSERVER_VENV", "MLSERVER_VERSION", "mlserver_python", "start_mlserver"]

ROOT = Path(__file__).resolve().parents[1]
MLSERVER_VENV = ROOT / "bench" / ".mlserver-venv"
MLSERVER_VERSION = "1.7.1"

_RUNTIME = textwrap.dedent(
    """
    import numpy as np
    import onnxruntime as ort
    from mlserver import MLModel
    from mlserver.codecs import NumpyCodec
    from mlserver.types import InferenceRequest, InferenceResponse


    class OnnxRuntime(MLModel):
        async def load(self) -> bool:
            path = self.settings.parameters.uri
            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            self._session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
            self._input = self._session.get_inputs()[0].name
            return True

        async def predict(self, payload: InferenceRequest) -> InferenceResponse:
            x = NumpyCodec.decode_input(payload.inputs[0]).astype(np.float32)
            outputs = self._session.run(None, {self._input: x})
            return InferenceResponse(
                model_name=self.name,
                id=payload.id,
                outputs=[NumpyCodec.encode_output(name="probability", payload=outputs[0])],
            )
    """
)


def mlserver_python() -> Path | str:
    """The MLServer virtualenv's python, creating it on first use; or why it cannot be had."""
    python = MLSERVER_VENV / "bin" / "python"
    if (MLSERVER_VENV / "bin" / "mlserver").exists():
        return python
    print(f"creating {MLSERVER_VENV.relative_to(ROOT)} with mlserver=={MLSERVER_VERSION} ...")
    try:
        subprocess.run([sys.executable, "-m", "venv", str(MLSERVER_VENV)], check=True)
        done = subprocess.run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "-q",
                f"mlserver=={MLSERVER_VERSION}",
                "onnxruntime",
                "numpy",
            ],
            capture_output=True,
            text=True,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        return f"the MLServer virtualenv could not be created: {exc}"
    if done.returncode != 0:
        return f"mlserver could not be installed from PyPI: {done.stderr.strip()[-800:]}"
    return python


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_mlserver(
    workdir: Path,
    in_topic: str,
    out_topic: str,
    bootstrap: str,
    model: Path,
    name: str = "ccfraud",
) -> subprocess.Popen[bytes] | str:
    """Start MLServer serving ``model`` (ONNX, one float input) as ``name`` between the two
    topics; returns the process once its Kafka consumer reads, or why it did not start.

    Its consumer starts at the latest offset: send requests only after this returns.
    """
    python = mlserver_python()
    if isinstance(python, str):
        return python
    (workdir / "onnx_runtime.py").write_text(_RUNTIME)
    (workdir / "settings.json").write_text(
        json.dumps(
            {
                "debug": False,
                "kafka_enabled": True,
                "kafka_servers": bootstrap,
                "kafka_topic_input": in_topic,
                "kafka_topic_output": out_topic,
                "http_port": _free_port(),
                "grpc_port": _free_port(),
                "metrics_port": _free_port(),
                # Inline inference: faster here than MLServer's default worker-process pool.
                "parallel_workers": 0,
            }
        )
    )
    (workdir / "model-settings.json").write_text(
        json.dumps(
            {
                "name": name,
                "implementation": "onnx_runtime.OnnxRuntime",
                "parameters": {"uri": str(model)},
            }
        )
    )
    # The child keeps its own copy of the log's descriptor.
    with (workdir / "mlserver.log").open("wb") as log:
        proc = subprocess.Popen(
            [str(python.parent / "mlserver"), "start", str(workdir)],
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={k: v for k, v in os.environ.items() if not k.startswith("PYTHON")},
        )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        text = (workdir / "mlserver.log").read_text(errors="replace")
        if "Reading messages from consumer" in text:
            time.sleep(2)  # the consumer reads from the latest offset once assigned
            return proc
        if proc.poll() is not None:
            return f"mlserver exited ({proc.returncode}): {text[-1500:]}"
        time.sleep(0.5)
    proc.terminate()
    return (
        "mlserver did not start its Kafka consumer within 90 s: "
        + (workdir / "mlserver.log").read_text(errors="replace")[-1500:]
    )
