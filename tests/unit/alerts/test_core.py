"""Pure parts of the bridge: offsets, grouping, retry policy, targets, rendering, redaction."""

from __future__ import annotations

import dataclasses
import logging
import random

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from driftline.alerts._offsets import OffsetTracker
from driftline.alerts.grouping import Job, group_jobs
from driftline.alerts.redact import MASK, RedactingFilter, Redactor
from driftline.alerts.render import (
    email_message,
    email_subject,
    sign,
    slack_payload,
    verify_signature,
    webhook_body,
)
from driftline.alerts.retry import backoff_delay, parse_retry_after
from driftline.events import Notification
from driftline.notify import Target, parse_target

pytestmark = pytest.mark.unit


def note(i: int, at: int, alert: str = "a", state: str = "firing") -> Notification:
    return Notification(
        f"n-{i}", alert, "p", state, 1.5, "mean(x) >= 0.25", {"start": 0, "end": 60_000},
        at, "critical", ["stdout"], "sha256:s",
    )  # fmt: skip


@given(
    st.lists(st.integers(0, 3), min_size=1, max_size=40),
    st.randoms(use_true_random=False),
)
def test_commit_position_never_passes_unfinished_work(jobs: list[int], rnd: random.Random) -> None:
    t = OffsetTracker()
    for offset, n in enumerate(jobs):
        t.add("n", 0, offset, n)
    work = [o for o, n in enumerate(jobs) for _ in range(n)]
    rnd.shuffle(work)
    done: dict[int, int] = {}
    for o in work:
        t.done("n", 0, o)
        done[o] = done.get(o, 0) + 1
        for pos in t.committable().values():
            assert all(done.get(x, 0) == jobs[x] for x in range(pos))
    assert t.committable() == {("n", 0): len(jobs)}
    assert t.outstanding() == 0


def test_revoked_partition_is_forgotten() -> None:
    t = OffsetTracker()
    t.add("n", 1, 10, 1)
    t.drop("n", 1)
    t.done("n", 1, 10)  # a late completion for a revoked partition is ignored
    assert t.committable() == {}


@given(
    st.lists(st.tuples(st.integers(0, 2), st.integers(0, 10_000), st.integers(0, 1)), max_size=30),
    st.integers(0, 3000),
)
def test_grouping_keeps_every_job_once_within_interval(
    spec: list[tuple[int, int, int]], interval: int
) -> None:
    targets = [Target("slack", "x"), Target("webhook", "y")]
    jobs = [Job(note(i, at, alert=f"a{a}"), targets[t], i) for i, (a, at, t) in enumerate(spec)]
    deliveries = group_jobs(jobs, interval)
    assert sorted(j.ref for d in deliveries for j in d.jobs) == list(range(len(jobs)))
    for d in deliveries:
        assert {j.target for j in d.jobs} == {d.target}
        assert len({j.notification.key for j in d.jobs}) == 1
        ats = [n.at for n in d.notifications]
        assert ats == sorted(ats)
        assert ats[-1] - ats[0] <= interval
        if interval == 0:
            assert len(d.jobs) == 1


@given(st.integers(1, 80), st.floats(0.01, 5), st.floats(0.01, 100))
def test_backoff_is_bounded_by_cap_and_exponential_ceiling(
    attempt: int, base: float, cap: float
) -> None:
    d = backoff_delay(attempt, base, cap, random.Random(attempt))
    assert 0 <= d <= min(cap, base * 2 ** (attempt - 1))


def test_backoff_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="attempt"):
        backoff_delay(0, 1, 1)
    with pytest.raises(ValueError, match="base_s"):
        backoff_delay(1, 0, 1)


def test_retry_after_forms() -> None:
    assert parse_retry_after("  2.5 ", 0) == 2.5
    assert parse_retry_after("-3", 0) == 0.0
    assert parse_retry_after(None, 0) is None
    assert parse_retry_after("Thu, 01 Jan 1970 00:01:00 GMT", 30.0) == 30.0


@pytest.mark.parametrize(
    ("text", "message"),
    [("slack:", "missing name"), ("email:nobody", "not an email"), ("stdout:x", "no name")],
)
def test_bad_targets_name_the_fix(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_target(text)


def test_signature_detects_tampering_and_old_timestamps() -> None:
    body = webhook_body([note(1, 0)])
    sig = sign("key", 1000, body)
    assert verify_signature("key", "1000", body, sig, now_s=1100)
    assert not verify_signature("key", "1000", body + b" ", sig, now_s=1100)
    assert not verify_signature("other", "1000", body, sig, now_s=1100)
    assert not verify_signature("key", "1001", body, sig, now_s=1100)
    assert not verify_signature("key", "1000", body, sig, now_s=5000)
    assert not verify_signature("key", "soon", body, sig, now_s=1100)


def test_rendered_messages_carry_what_fired() -> None:
    group = [note(1, 0), dataclasses.replace(note(2, 500, state="resolved"), value=0.1)]
    msg = email_message(group, "from@example.com", "to@example.com")
    assert msg["Subject"].startswith("[driftline] RESOLVED: a on p [critical] (2 notifications)")
    # A resolved alert says what holds now, a firing one what crossed the threshold.
    assert msg["Subject"].endswith("— value 0.1, below 0.25")
    assert email_subject(group[:1]).endswith("— value 1.5 >= 0.25")
    text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert text.count("Threshold") == 2 and "1970-01-01 00:01:00 UTC" in text
    slack = slack_payload(group)
    assert [a["color"] for a in slack["attachments"]] == ["#d93f0b", "#2eb67d"]
    assert orjson.loads(webhook_body(group))["state"] == "resolved"


def test_redactor_masks_urls_tokens_and_encoded_forms() -> None:
    r = Redactor(["https://hooks.slack.com/services/T1/B2/abc", "p@ss word", ""])
    text = (
        "url=https://hooks.slack.com/services/T1/B2/abc path=/services/T1/B2/abc pw=p%40ss%20word"
    )
    out = r.redact(text)
    assert "abc" not in out and "p%40ss" not in out
    assert out.count(MASK) == 3
    assert not Redactor([])


def test_logging_filter_masks_arguments_and_tracebacks() -> None:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("test.redact")
    handler = Keep()
    handler.addFilter(RedactingFilter(Redactor(["s3cr3t"])))
    logger.addHandler(handler)
    try:
        logger.warning("token %s", "s3cr3t")
        try:
            raise RuntimeError("boom s3cr3t")
        except RuntimeError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    assert records[0].getMessage() == f"token {MASK}"
    assert "s3cr3t" not in (records[1].exc_text or "") and MASK in (records[1].exc_text or "")
