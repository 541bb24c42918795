"""A local HTTP receiver that stands in for Slack or a webhook endpoint.

Useful to try a bridge configuration without a real Slack workspace, and used by driftline's
own tests. It records every request (path, headers, body, arrival time), checks webhook
signatures when given the secrets, and answers according to a ``policy``: a callable that
gets the path and the request's sequence number on that path and returns ``(status,
headers, delay_s)``.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from driftline.alerts.render import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_signature

__all__ = ["HttpReceiver", "Policy", "ReceivedRequest", "always", "flaky"]

Policy = Callable[[str, int], tuple[int, dict[str, str], float]]


@dataclass(frozen=True)
class ReceivedRequest:
    """One request as the receiver saw it; ``arrived`` is ``time.monotonic()`` at arrival."""

    path: str
    headers: dict[str, str]
    body: bytes
    arrived: float
    status: int
    signature_ok: bool | None


def always(status: int = 200) -> Policy:
    """Answer every request with ``status``."""
    return lambda _path, _n: (status, {}, 0.0)


def flaky(
    failure_rate: float, seed: int = 0, retry_after_s: float = 0.2, share_429: float = 0.3
) -> Policy:
    """Fail a ``failure_rate`` share of requests: mostly HTTP 500, some 429 with Retry-After."""
    rng = random.Random(seed)
    lock = threading.Lock()

    def policy(_path: str, _n: int) -> tuple[int, dict[str, str], float]:
        with lock:
            fail, kind = rng.random() < failure_rate, rng.random()
        if not fail:
            return 200, {}, 0.0
        if kind < share_429:
            return 429, {"Retry-After": f"{retry_after_s:g}"}, 0.0
        return 500, {}, 0.0

    return policy


class HttpReceiver:
    """A threaded HTTP server on ``127.0.0.1`` (a free port) recording POSTs.

    ``secrets`` maps a path to the webhook signing secret expected there; ``echo_path`` makes
    every response body quote the request path.
    """

    def __init__(
        self,
        policy: Policy | None = None,
        secrets: Mapping[str, str] | None = None,
        echo_path: bool = False,
    ) -> None:
        self.policy: Policy = policy or always(200)
        self.echo_path = echo_path
        self.secrets = dict(secrets or {})
        self.requests: list[ReceivedRequest] = []
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                arrived = time.monotonic()
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if len(body) < length:
                    # The sender died mid-request: a real endpoint never sees this as a
                    # message, so neither is it recorded nor answered.
                    return
                with receiver._lock:
                    n = receiver._counts.get(self.path, 0)
                    receiver._counts[self.path] = n + 1
                status, headers, delay = receiver.policy(self.path, n)
                sig_ok: bool | None = None
                secret = receiver.secrets.get(self.path)
                if secret is not None:
                    sig_ok = verify_signature(
                        secret,
                        self.headers.get(TIMESTAMP_HEADER, ""),
                        body,
                        self.headers.get(SIGNATURE_HEADER, ""),
                        now_s=time.time(),
                    )
                    if not sig_ok:
                        status = 401
                with receiver._lock:
                    receiver.requests.append(
                        ReceivedRequest(
                            self.path, dict(self.headers.items()), body, arrived, status, sig_ok
                        )
                    )
                if delay:
                    time.sleep(delay)
                # Echoing the path imitates receivers whose error bodies quote the request.
                answer = self.path.encode() if receiver.echo_path else b"ok"
                try:
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                except OSError:
                    pass  # the client gave up (timeout); nothing to answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def start(self) -> HttpReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self) -> HttpReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def snapshot(self) -> list[ReceivedRequest]:
        with self._lock:
            return list(self.requests)
