"""``driftline demo``: the fraud story of the seed notebooks, end to end on the real stack.

It deploys ``examples/fraud/pipeline.yaml`` under a topic prefix of its own, starts a worker,
a monitor and a bridge as subprocesses, a local SMTP sink and a local Slack stand-in, and then:

1. validations: a smoke-test request passes, a high-fraud request logs a check failure;
2. shadow deploy: a request on which champion and challenger disagree trips the model-drift
   validation;
3. count alert: a burst of fraud fires ``high_fraud_5m``; the email arrives; it resolves when
   the burst leaves the five-minute window;
4. assay: normal traffic keeps the PSI assay ok, drifted traffic raises warning then alert;
   the scores are printed and charted;
5. replay: the assay and the alert transitions are recomputed from the results topic and
   compared with what was emitted live;
6. outcomes: each minute's estimated accuracy (CBPE) is read at close, before any label; the
   labels then arrive late, the realized accuracy of the fraud-wave minutes drops below the
   spec's threshold and the ``accuracy_drop`` email goes out; the last labels resolve it.

Event time runs faster than the wall clock: each request carries a ``time`` on a simulated
clock that starts a little ahead of now, so eighteen minutes of traffic take seconds, and
windows close as the watermark passes them, exactly as they would in real time.
Everything printed is read back from Kafka, Redis or the SMTP sink during the run.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import json
import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from rich.markup import escape

from driftline._console import out
from driftline.charts import assay_chart
from driftline.config import KafkaSettings, RedisSettings, Settings, load_settings
from driftline.kafka.admin import admin_client
from driftline.kafka.clientlog import client_logger, with_logger
from driftline.kafka.loop import StopSignal

__all__ = ["DemoFailed", "run_demo"]

# Set by SIGTERM/SIGINT while the demo runs; every wait of the story honours it.
_STOP = StopSignal()

_ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = _ROOT / "examples" / "fraud"

MINUTE = 60_000
ROWS_PER_MINUTE = 300
ROWS_PER_REQUEST = 10
DRIFT_SHIFT = -4.0
#: Share of subtle frauds in the drifted minutes after the first (the fraud wave).
WAVE_SHARE = 0.35
WAVE_MINUTES = range(12, 16)
_WAIT_S = 90.0


class DemoFailed(Exception):
    """A step of the story did not happen as it should."""


# --------------------------------------------------------------------------- local sinks
class SmtpSink:
    """A real SMTP server on a free local port that keeps every message it receives."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.messages: list[EmailMessage] = []
        self._lock = threading.Lock()
        sink = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
                with sink._lock:
                    sink.messages.append(msg)
                return "250 OK"

        import socket

        # aiosmtpd probes its own port after binding, so it needs a concrete free one.
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self._port = int(probe.getsockname()[1])
        self._controller = Controller(Handler(), hostname="127.0.0.1", port=self._port)

    def start(self) -> SmtpSink:
        self._controller.start()
        return self

    @property
    def port(self) -> int:
        return self._port

    def stop(self) -> None:
        self._controller.stop()

    def snapshot(self) -> list[EmailMessage]:
        with self._lock:
            return list(self.messages)


@dataclass
class Stack:
    """The worker, monitor and bridge subprocesses of the demo, with their logs."""

    env: dict[str, str]
    log_dir: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, *args: str) -> None:
        log = open(self.log_dir / f"{name}.log", "wb")  # noqa: SIM115 - the child owns it
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "driftline", *args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.log_dir,
        )
        log.close()

    def check(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                tail = (self.log_dir / f"{name}.log").read_text(errors="replace")[-3000:]
                raise DemoFailed(f"the {name} exited with code {proc.returncode}:\n{tail}")

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()


def _wait_for(
    what: str, predicate: Callable[[], Any], stack: Stack, timeout: float = _WAIT_S
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        stack.check()
        if _STOP.wait(0.2):
            raise DemoFailed(f"stopped (SIGTERM or Ctrl-C) while waiting for {what}")
    raise DemoFailed(f"timed out after {timeout:.0f} s waiting for {what}")


# --------------------------------------------------------------------------- Kafka helpers
class Topics:
    """Reads the demo's output topics incrementally (read_committed)."""

    def __init__(self, kafka: KafkaSettings, topics: list[str]):
        from confluent_kafka import Consumer, TopicPartition

        self.consumer = Consumer(
            with_logger(
                kafka.client_config(
                    **{
                        "group.id": f"driftline-demo-reader-{uuid.uuid4().hex}",
                        "enable.auto.commit": False,
                        "isolation.level": "read_committed",
                    }
                )
            )
        )
        assignment = []
        for t in topics:
            md = self.consumer.list_topics(t, timeout=15).topics[t]
            assignment += [TopicPartition(t, p, 0) for p in md.partitions]
        self.consumer.assign(assignment)
        self.seen: dict[str, list[dict[str, Any]]] = {t: [] for t in topics}

    def poll(self) -> dict[str, list[dict[str, Any]]]:
        for m in self.consumer.consume(5000, 0.2):
            if m.error() is None and m.value() is not None:
                self.seen[m.topic() or ""].append(orjson.loads(m.value() or b"{}"))
        return self.seen

    def close(self) -> None:
        self.consumer.close()


def _load_example_generator() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("fraud_generate", EXAMPLE / "generate.py")
    if spec is None or spec.loader is None:
        raise DemoFailed(f"cannot load {EXAMPLE / 'generate.py'}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


Timed = tuple[int, bytes, bytes]  # (event time, key, request JSON)


def _request(rid: str, t: int, rows: np.ndarray) -> Timed:
    """One request of ``rows`` at event time ``t``, keyed by its id."""
    return t, rid.encode(), orjson.dumps({"id": rid, "time": t, "tensor": rows.tolist()})


def _requests(rows: np.ndarray, start_ms: int, span_ms: int, prefix: str) -> Iterator[Timed]:
    """Requests of ``ROWS_PER_REQUEST`` rows each, spread over ``[start, start + span)``."""
    n = max(1, len(rows) // ROWS_PER_REQUEST)
    for i, chunk in enumerate(np.array_split(rows, n)):
        yield _request(f"{prefix}-{i}", start_ms + (i * span_ms) // n, chunk)


def _labels(labels: np.ndarray, prefix: str) -> list[tuple[str, int, int]]:
    """``(request id, row, label)`` of the rows :func:`_requests` sent with the same prefix.

    >>> reqs = [orjson.loads(r[2]) for r in _requests(np.arange(25.0)[:, None], 0, 60, "m")]
    >>> sent = [(r["id"], i, int(v[0])) for r in reqs for i, v in enumerate(r["tensor"])]
    >>> sent == _labels(np.arange(25), "m")
    True
    """
    n = max(1, len(labels) // ROWS_PER_REQUEST)
    return [
        (f"{prefix}-{i}", row, int(y))
        for i, chunk in enumerate(np.array_split(labels, n))
        for row, y in enumerate(chunk.tolist())
    ]


# --------------------------------------------------------------------------- the story
def run_demo(output_dir: str) -> int:
    """Run the story; returns the process exit code (0 when every step happened).

    SIGTERM or Ctrl-C ends the current wait, and the worker, monitor and bridge are stopped
    and the demo's topics removed as after a failure. librdkafka's own warnings (a fresh
    broker's "Coordinator load in progress: retrying") are retried by the clients themselves
    and kept off the story; errors still show.
    """
    librdkafka = client_logger()
    level = librdkafka.level
    librdkafka.setLevel(logging.ERROR)
    try:
        with _STOP.installed():
            summary = _run(Path(output_dir))
    except DemoFailed as exc:
        out.print(f"[red bold]demo failed:[/] {exc}")
        return 1
    finally:
        librdkafka.setLevel(level)
    out.rule("[green]demo complete")
    out.print(f"summary written to {summary}")
    return 0


def _run(output: Path) -> Path:
    from confluent_kafka import Producer

    from driftline.alerts.testing import HttpReceiver, always
    from driftline.sdk import Client
    from driftline.spec import load_spec
    from driftline.streams.produce import infer, latest_results, results_frame

    output = output.resolve()
    output.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    run_id = time.strftime("%H%M%S") + uuid.uuid4().hex[:4]
    base = load_settings()
    kafka = KafkaSettings(
        bootstrap_servers=base.kafka.bootstrap_servers,
        kafka_options=base.kafka.kafka_options,
        topic_prefix=f"demo{run_id}",
        partitions=1,
    )
    settings = Settings(
        model_store=base.model_store,
        kafka=kafka,
        redis=RedisSettings(redis_url=base.redis.redis_url, key_prefix=f"dl-demo{run_id}"),
    )
    facts: dict[str, Any] = {"run": run_id, "topic_prefix": kafka.topic_prefix}

    out.rule("driftline demo: the fraud pipeline")
    spec = load_spec(EXAMPLE / "pipeline.yaml")
    client = Client(settings)
    pipeline = client.deploy(spec)
    out.print(
        f"Deployed [bold]{spec.name}[/] ({pipeline.version[:19]}…) under topic prefix "
        f"[bold]{kafka.topic_prefix}[/]: champion [bold]{spec.champion.name}[/], shadow "
        f"{', '.join(m.name for m in spec.shadows)}; validations {', '.join(spec.validations)}; "
        f"alert {', '.join(spec.alerts)}; assay {', '.join(spec.assays)}."
    )

    smtp = SmtpSink().start()
    slack = HttpReceiver(always(200)).start()
    env = dict(
        os.environ,
        DRIFTLINE_TOPIC_PREFIX=kafka.topic_prefix,
        DRIFTLINE_KEY_PREFIX=settings.redis.key_prefix,
        DRIFTLINE_PARTITIONS="1",
        DRIFTLINE_SMTP_URL=f"smtp://127.0.0.1:{smtp.port}",
        DRIFTLINE_SMTP_FROM="driftline-demo@localhost",
        DRIFTLINE_SLACK_WEBHOOKS=json.dumps({"fraud-alerts": f"{slack.url}/slack/fraud-alerts"}),
        DRIFTLINE_WORKER_ID=f"demo-{run_id}",
        DRIFTLINE_BRIDGE_GROUP_MS="500",
        DRIFTLINE_MONITOR_GROUP=f"driftline-monitor-demo-{run_id}",
    )
    env.pop("DRIFTLINE_METRICS_PORT", None)
    stack = Stack(env, output / "logs")
    stack.log_dir.mkdir(parents=True, exist_ok=True)
    reader: Topics | None = None
    try:
        with out.status("starting a worker, a monitor and a bridge…"):
            stack.start("worker", "worker")
            stack.start("monitor", "monitor")
            stack.start("bridge", "bridge", "--channels", "email,slack")
            # The worker answers a request once it has joined its group and loaded the models.
            smoke = json.loads((EXAMPLE / "data" / "smoke_test.json").read_text())
            first = _wait_for(
                "the worker's first result",
                lambda: _try_infer(infer, kafka, spec.name, smoke),
                stack,
            )
        out.print(f"worker, monitor and bridge are up ({time.monotonic() - started:.1f} s)")

        # 1. validations -------------------------------------------------------------------
        out.rule("1. Validations")
        high = json.loads((EXAMPLE / "data" / "high_fraud.json").read_text())
        high_res = infer(kafka, spec.name, high, timeout=30)
        for label, res in (("smoke test", first), ("high fraud", high_res)):
            r = res[0]
            out.print(
                f"{label:<11} {spec.champion.name}.outputs[0][0] = "
                f"{r['outputs'][spec.champion.name][0][0]:.6f}  check_failures = "
                f"{r['check_failures'] or '[]'}  ({r['elapsed_ns'] / 1000:.0f} µs)"
            )
        if first[0]["check_failures"] or "no_high_fraud" not in high_res[0]["check_failures"]:
            raise DemoFailed("the validations did not flag exactly the high-fraud request")
        facts["smoke_test_failures"] = first[0]["check_failures"]
        facts["high_fraud_failures"] = high_res[0]["check_failures"]

        # 2. shadow deploy -----------------------------------------------------------------
        out.rule("2. Shadow deploy and model drift")
        drifted = json.loads((EXAMPLE / "data" / "drifted.json").read_text())
        drift_res = infer(kafka, spec.name, drifted, timeout=30)[0]
        champ = drift_res["outputs"][spec.champion.name][0][0]
        shadow_name = spec.shadows[0].name
        shadow = drift_res["outputs"][shadow_name][0][0]
        out.print(
            f"{spec.champion.name} = {champ:.4f}, {shadow_name} = {shadow:.4f}, "
            f"|difference| = {abs(champ - shadow):.4f} → check_failures = "
            f"{drift_res['check_failures']}"
        )
        if "no_model_drift" not in drift_res["check_failures"]:
            raise DemoFailed("the shadow comparison did not flag the drifted request")
        facts["drifted_failures"] = drift_res["check_failures"]
        logs = results_frame(latest_results(kafka, spec.name, limit=10))
        out.print("[bold]driftline logs fraud[/] (the pipeline's latest results):")
        for row in logs.itertuples():
            out.print(
                f"  {row.time}  output={row.output[0]:.6f}  anomalies={row.anomalies}  "
                f"{list(row.check_failures)}"
            )

        # 3. count alert -------------------------------------------------------------------
        gen = _load_example_generator()
        t0 = (int(time.time() * 1000) // MINUTE + 2) * MINUTE  # ahead of the wall clock
        facts["t0"] = t0
        producer = Producer(with_logger(kafka.client_config(**{"linger.ms": 5})))
        requests_topic = kafka.topic(spec.name, "requests")
        results_topic = kafka.topic(spec.name, "results")
        reader = Topics(kafka, [kafka.topic("assays"), kafka.topic("notifications"), results_topic])

        def send(timed: list[Timed]) -> int:
            # In event-time order, as a real feed would arrive: out-of-order beyond the allowed
            # lateness would count as late, not land in its window.
            for _t, key, payload in sorted(timed, key=lambda r: r[0]):
                producer.produce(requests_topic, payload, key=key)
                producer.poll(0)
            producer.flush(30)
            return len(timed)

        # The ground truth of every row sent, by minute: what the labels say in step 6.
        truth: dict[int, list[tuple[str, int, int]]] = {}

        def minute(m: int, rows: np.ndarray, labels: np.ndarray | None = None) -> list[Timed]:
            y = np.zeros(len(rows), np.int64) if labels is None else labels
            truth.setdefault(m, []).extend(_labels(y, f"m{m}"))
            return list(_requests(rows, t0 + m * MINUTE, MINUTE, f"m{m}"))

        def normal(m: int) -> list[Timed]:
            return minute(m, gen.normal_rows(ROWS_PER_MINUTE, seed=100 + m))

        out.rule('3. Count alert: count(ccfraud.outputs[0][0] > 0.95, "5m", "1s") > 10')
        burst_at = t0 + 5 * MINUTE + 10_000
        frauds = gen.fraud_rows(15, seed=11)
        burst = [
            _request(f"burst-{i}", burst_at + 1000 * i, frauds[i : i + 1])
            for i in range(len(frauds))
        ]
        truth[5] = [(f"burst-{i}", 0, 1) for i in range(len(frauds))]
        sent = sum(send(normal(m)) for m in range(5))
        sent += send(normal(5) + burst)
        out.print(
            f"sent 6 minutes of normal traffic ({sent} requests) with a burst of {len(frauds)} "
            "fraudulent transactions at t0+5m10s…t0+5m24s (event time)"
        )
        firing = _wait_for(
            "the firing email", lambda: _mail(smtp, "FIRING", "high_fraud_5m"), stack
        )
        facts["firing_email"] = {"subject": firing["Subject"], "to": firing["To"]}
        out.print(f"[bold]email received[/] by the local SMTP sink: {escape(firing['Subject'])}")
        body = firing.get_body(preferencelist=("plain",))
        text = body.get_content() if body is not None else ""
        for line in text.strip().splitlines()[:8]:
            out.print(f"  │ {escape(line)}")

        send([pair for m in range(6, 11) for pair in normal(m)])
        out.print("sent 5 more minutes of normal traffic: the burst leaves the 5-minute window")
        resolved = _wait_for(
            "the resolved email", lambda: _mail(smtp, "RESOLVED", "high_fraud_5m"), stack
        )
        facts["resolved_email"] = {"subject": resolved["Subject"]}
        out.print(f"[bold]email received[/]: {escape(resolved['Subject'])}")

        # Slack is rate-limited per channel (1 message/s), so its resolve may trail the email.
        def slack_posts_so_far() -> list[Any] | None:
            posts = [r for r in slack.snapshot() if r.path.startswith("/slack/")]
            return posts if len(posts) >= 2 else None

        slack_posts = _wait_for("the Slack messages", slack_posts_so_far, stack, timeout=30)
        facts["slack_posts"] = len(slack_posts)
        out.print(f"and {len(slack_posts)} Slack messages reached the local Slack stand-in")

        # 4. assay -------------------------------------------------------------------------
        out.rule("4. Assay: PSI of ccfraud.outputs[0][0] over 5-minute windows every minute")
        timed = minute(11, gen.drifted_rows(ROWS_PER_MINUTE, shift=DRIFT_SHIFT, seed=211))
        for m in WAVE_MINUTES:
            rows, labels = gen.fraud_wave(
                ROWS_PER_MINUTE, shift=DRIFT_SHIFT, fraud_share=WAVE_SHARE, seed=200 + m
            )
            timed += minute(m, rows, labels)
        timed += [pair for m in (16, 17) for pair in normal(m)]
        # The watermark is the minimum over the results partitions, so the final windows
        # close only once every partition has seen an event past them: a few one-row requests
        # with distinct keys (spread over the partitions by the key hash) move them all.
        t_end = t0 + 18 * MINUTE
        tail = gen.normal_rows(30, seed=999)
        timed += [_request(f"end-{i}", t_end + 6_000, tail[i : i + 1]) for i in range(len(tail))]
        send(timed)
        out.print(
            f"sent 5 minutes of drifted traffic (some features shifted by {DRIFT_SHIFT:+g}σ; "
            f"from t0+{WAVE_MINUTES[0]}m {WAVE_SHARE:.0%} of it subtle fraud), "
            "then 2 minutes of normal traffic"
        )
        n_windows = 18

        def assays_done() -> list[dict[str, Any]] | None:
            got = [
                a
                for a in reader.poll()[kafka.topic("assays")]
                if a.get("assay") == "score_drift" and t0 < a["window_end"] <= t_end
            ]
            return got if len({a["window_end"] for a in got}) >= n_windows else None

        assays = _wait_for("the assay windows", assays_done, stack)
        assays = sorted(
            {a["window_end"]: a for a in assays}.values(), key=lambda a: a["window_end"]
        )
        _print_assays(assays, t0)
        statuses = [a["status"] for a in assays]
        facts["assay_statuses"] = statuses
        facts["assay_scores"] = [round(a["score"], 6) for a in assays]
        before_drift = statuses[:11]  # windows ending at or before t0+11m hold no drift
        first_warning = statuses.index("warning") if "warning" in statuses else None
        first_alert = statuses.index("alert") if "alert" in statuses else None
        if (
            any(st != "ok" for st in before_drift)
            or first_warning is None
            or first_alert is None
            or not first_warning < first_alert
        ):
            raise DemoFailed(
                f"expected ok before the drift, then warning, then alert; got {statuses}"
            )
        out.print(
            f"normal traffic: {len(before_drift)} windows ok (max PSI "
            f"{max(a['score'] for a in assays[:11]):.4f}); drift: warning at window "
            f"t0+{first_warning + 1}m, alert from t0+{first_alert + 1}m"
        )
        chart = assay_chart(
            assays,
            output / "assay_scores.png",
            t0=t0,
            title="score_drift: ccfraud.outputs[0][0] vs baseline, 5m windows every 1m",
        )
        facts["chart"] = str(chart)
        out.print(f"chart of the scores with the thresholds: {chart}")

        # 5. replay ------------------------------------------------------------------------
        out.rule("5. Replay: recompute the range from the results topic and audit")
        from driftline.streams.replay import audit, replay

        canonical = client.pipeline(spec.name).canonical
        with out.status("replaying…"):
            result = replay(settings, canonical, t0, t_end)
            report = audit(settings, result)
        facts["replay"] = {
            "events": result.events,
            "assay_windows": len(result.assays),
            "notifications": len(result.notifications),
            "compared_assays": report.compared_assays,
            "compared_notifications": report.compared_notifications,
            "differences": len(report.differences),
        }
        out.print(
            f"replay read {result.events} results and recomputed {len(result.assays)} assay "
            f"windows and {len(result.notifications)} alert transitions; audit compared "
            f"{report.compared_assays} assay results and {report.compared_notifications} "
            f"notifications with what was emitted live: "
            + (
                "[green]identical[/]"
                if not report.differences
                else f"[red]{len(report.differences)} differences[/]"
            )
        )
        for d in report.differences[:10]:
            out.print(f"  {d.kind} {d.key} {d.what}: live {d.live} vs replay {d.replay}")
        if report.differences or not report.compared_assays:
            raise DemoFailed("the replay did not match what was emitted live")

        # 6. outcomes ----------------------------------------------------------------------
        facts["performance"] = _outcomes(
            kafka,
            spec,
            smtp,
            stack,
            truth,
            lambda: reader.poll()[results_topic] if reader is not None else [],
            t0,
            n_windows,
            t_end + MINUTE,
        )
        facts["elapsed_s"] = round(time.monotonic() - started, 1)
    finally:
        if reader is not None:
            reader.close()
        stack.stop()
        smtp.stop()
        slack.stop()
        _cleanup(settings, spec.name)
    summary = output / "summary.json"
    summary.write_text(json.dumps(facts, indent=2, default=str))
    out.print(f"the whole story took {facts['elapsed_s']} s")
    return summary


def _outcomes(
    kafka: KafkaSettings,
    spec: Any,
    smtp: SmtpSink,
    stack: Stack,
    truth: dict[int, list[tuple[str, int, int]]],
    results: Callable[[], list[dict[str, Any]]],
    t0: int,
    n_windows: int,
    t_labels: int,
) -> dict[str, Any]:
    """Step 6: estimates at close, then late labels, the accuracy email, and its resolve.

    The realized accuracy of every window is checked against one computed here from the
    results topic (the champion's scores) and the labels sent.
    """
    from driftline.streams._outcomes_cli import latest_revisions, read_performance, send_feedback

    (name, perf), *_ = spec.performance.items()
    (alert_name, alert), *_ = perf.alerts.items()
    out.rule(f"6. Outcomes: late labels, {name} accuracy realized and estimated (CBPE)")
    ends = [t0 + (m + 1) * MINUTE for m in range(n_windows)]

    def windows(pred: Callable[[dict[str, Any]], bool]) -> dict[int, dict[str, Any]] | None:
        events = [e for e in read_performance(kafka, spec.name) if e["name"] == name]
        latest = {e["window_end"]: e for e in latest_revisions(events)}
        got = {end: latest[end] for end in ends if end in latest and pred(latest[end])}
        return got if len(got) == len(ends) else None

    # Revision 0 of every window, published at close: no label yet, the estimate already there.
    closed = _wait_for("the performance windows at close", lambda: windows(lambda e: True), stack)
    at_close = [closed[end] for end in ends]
    if any(e["revision"] != 0 or e["labeled"] for e in at_close):
        raise DemoFailed("a performance window had labels before any label was sent")
    estimated = [float(e["estimated"]["accuracy"]) for e in at_close]
    normal = [estimated[m] for m in range(min(WAVE_MINUTES)) if m != 11]
    wave = [estimated[m] for m in WAVE_MINUTES]
    out.print(
        f"windows closed, no label yet: estimated accuracy {min(normal):.4f} … {max(normal):.4f} "
        f"on normal traffic, [bold]{min(wave):.4f} … {max(wave):.4f}[/] in the fraud wave "
        f"(t0+{WAVE_MINUTES[0]}m … t0+{WAVE_MINUTES[-1] + 1}m): the model is less sure"
    )
    if max(wave) >= min(normal):
        raise DemoFailed(f"the estimate did not drop in the fraud wave: {estimated}")

    def send(minutes: range) -> int:
        rows = [
            {"id": rid, "row": row, "label": y, "time": t_labels}
            for m in minutes
            for rid, row, y in truth.get(m, [])
        ]
        return send_feedback(kafka, spec.name, rows)

    def labeled(upto: int) -> Callable[[], dict[int, dict[str, Any]] | None]:
        # a window counts once every prediction of it up to ``upto`` has its label
        return lambda: windows(
            lambda e: e["window_end"] > t0 + upto * MINUTE or e["labeled"] == e["predictions"]
        )

    first = range(0, WAVE_MINUTES[-1] + 1)
    sent = send(first)
    out.print(
        f"labels arrive late: sent {sent} labels for t0 … t0+{first[-1] + 1}m with the code "
        f"of [bold]driftline feedback[/]; those of the last {n_windows - len(first)} minutes are "
        "still to come"
    )
    _wait_for("the revised windows", labeled(len(first)), stack)
    firing = _wait_for(f"the {alert_name} email", lambda: _mail(smtp, "FIRING", alert_name), stack)
    out.print(f"[bold]email received[/]: {escape(firing['Subject'])}")
    if _mail(smtp, "RESOLVED", alert_name) is not None:
        raise DemoFailed(f"{alert_name} resolved before the labels of normal traffic came")
    rest = range(len(first), n_windows)
    sent += send(rest)
    out.print(f"the last {len(rest)} minutes' labels arrive (normal traffic again)")
    final = _wait_for("every window labeled", labeled(n_windows), stack)
    resolved = _wait_for(
        f"the {alert_name} resolved email", lambda: _mail(smtp, "RESOLVED", alert_name), stack
    )
    out.print(f"[bold]email received[/]: {escape(resolved['Subject'])}")

    latest = [final[end] for end in ends]
    realized = [float(e["metrics"]["accuracy"]) for e in latest]
    offline = _offline_accuracy(
        spec, truth, results, stack, t0, ends, sum(e["predictions"] for e in latest), perf
    )
    if any(abs(a - b) > 1e-9 for a, b in zip(realized, offline, strict=True)):
        raise DemoFailed(f"realized accuracy {realized} differs from the labels' {offline}")
    _print_performance(at_close, latest, t0)
    below = [m for m in WAVE_MINUTES if realized[m] < alert.value]
    if not below or any(realized[m] >= estimated[m] for m in WAVE_MINUTES):
        raise DemoFailed(
            f"expected the fraud wave's realized accuracy under the estimate and under "
            f"{alert.value}; realized {realized}, estimated {estimated}"
        )
    out.print(
        f"realized accuracy in the fraud wave {min(realized[m] for m in WAVE_MINUTES):.4f} … "
        f"{max(realized[m] for m in WAVE_MINUTES):.4f} ({alert.when}): below the estimate, "
        "because the frauds the model scored low are missed with confidence — only labels show "
        "those. Every window's realized accuracy equals the one counted from the results topic "
        "and the labels sent"
    )
    return {
        "name": name,
        "alert": alert_name,
        "threshold": alert.value,
        "wave_windows": list(WAVE_MINUTES),
        "labels_sent": sent,
        "labeled_at_close": [e["labeled"] for e in at_close],
        "revision_at_close": [e["revision"] for e in at_close],
        "estimated_accuracy": [round(v, 6) for v in estimated],
        "predictions": [e["predictions"] for e in latest],
        "labeled": [e["labeled"] for e in latest],
        "revisions": [e["revision"] for e in latest],
        "realized_accuracy": [round(v, 6) for v in realized],
        "offline_accuracy": [round(v, 6) for v in offline],
        "firing_email": {"subject": firing["Subject"], "to": firing["To"]},
        "resolved_email": {"subject": resolved["Subject"], "to": resolved["To"]},
    }


def _offline_accuracy(
    spec: Any,
    truth: dict[int, list[tuple[str, int, int]]],
    results: Callable[[], list[dict[str, Any]]],
    stack: Stack,
    t0: int,
    ends: list[int],
    predictions: int,
    perf: Any,
) -> list[float]:
    """Accuracy per window from the results read back and the labels sent (no join state)."""
    labels = {(rid, row): y for rows in truth.values() for rid, row, y in rows}

    def in_range() -> list[dict[str, Any]] | None:
        got = [r for r in results() if t0 <= r["time"] < ends[-1]]
        return got if len(got) >= predictions else None

    rows = _wait_for("the results of the story", in_range, stack)
    right = np.zeros(len(ends))
    total = np.zeros(len(ends))
    for r in rows:
        w = (r["time"] - t0) // MINUTE
        score = r["outputs"][spec.champion.name][0][0]
        total[w] += 1
        right[w] += int(score >= perf.threshold) == labels[(r["id"], r["row"])]
    return [float(v) for v in right / total]


def _print_performance(
    at_close: list[dict[str, Any]], latest: list[dict[str, Any]], t0: int
) -> None:
    from rich.table import Table

    table = Table(
        "window (event time)",
        "predictions",
        "est. accuracy (rev 0)",
        "labeled",
        "accuracy",
        "rev",
        title="quality: estimated at close, realized once the labels came",
    )
    for first, last in zip(at_close, latest, strict=True):
        s, e = (first["window_start"] - t0) / MINUTE, (first["window_end"] - t0) / MINUTE
        acc = last["metrics"]["accuracy"]
        table.add_row(
            f"t0{s:+.0f}m … t0{e:+.0f}m",
            str(last["predictions"]),
            f"{first['estimated']['accuracy']:.4f}",
            str(last["labeled"]),
            "-" if acc is None else f"{acc:.4f}",
            str(last["revision"]),
        )
    out.print(table)


def _try_infer(infer: Any, kafka: KafkaSettings, name: str, request: dict[str, Any]) -> Any:
    from driftline.errors import ServiceError

    try:
        return infer(kafka, name, request, timeout=5)
    except ServiceError:
        return None


def _mail(smtp: SmtpSink, state: str, alert: str) -> EmailMessage | None:
    """The first email on ``alert`` in ``state`` (the subject names both)."""
    for msg in smtp.snapshot():
        if f"{state}: {alert} " in str(msg["Subject"]):
            return msg
    return None


def _print_assays(assays: list[dict[str, Any]], t0: int) -> None:
    from rich.table import Table

    colour = {"ok": "green", "warning": "yellow", "alert": "red"}
    table = Table("window (event time)", "count", "score", "status", title="score_drift (PSI)")
    for a in assays:
        s, e = (a["window_start"] - t0) / MINUTE, (a["window_end"] - t0) / MINUTE
        table.add_row(
            f"t0{s:+.0f}m … t0{e:+.0f}m",
            str(a["count"]),
            f"{a['score']:.4f}",
            f"[{colour.get(a['status'], 'white')}]{a['status']}[/]",
        )
    out.print(table)


def _cleanup(settings: Settings, name: str) -> None:
    """Delete the demo's topics and Redis keys (the story leaves nothing behind)."""
    import redis

    with contextlib.suppress(Exception):
        admin = admin_client(settings.kafka)
        prefix = settings.kafka.topic_prefix + "."
        topics = [t for t in admin.list_topics(timeout=10).topics if t.startswith(prefix)]
        if topics:
            for fut in admin.delete_topics(topics, operation_timeout=15).values():
                with contextlib.suppress(Exception):
                    fut.result(30)
    with contextlib.suppress(Exception):
        r = redis.Redis.from_url(settings.redis.redis_url.get_secret_value())
        keys = list(r.scan_iter(match=f"{settings.redis.key_prefix}*", count=1000))
        if keys:
            r.delete(*keys)
