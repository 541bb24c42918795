"""The performance join: predictions meet labels by ``(id, row)``, exactly once, in windows.

Predictions come from ``<p>.results`` (id, row, event time, the spec's prediction value),
labels from ``<p>.feedback`` (id, row, label, time). They meet in any order: a label before
its prediction waits as a pending record; a second label for a pair replaces the first (its
contribution is taken out of the window statistics and the new one put in, counted as
``relabeled``); a label whose prediction never comes is published to ``<p>.unmatched`` once
the watermark is a horizon past it.

Window statistics (:mod:`driftline.performance`) are kept per bucket of the *prediction's*
event time, so a late label revises an old window. :meth:`PerformanceJoin.close` returns the
``driftline.performance`` events of windows that closed and of closed windows whose
statistics changed since, up to the horizon; :meth:`PerformanceJoin.confirm` records them
after the caller has produced them.

Revisions: what is guaranteed, with any number of monitors closing one pipeline and crashes
anywhere.

* A revision number is bound to one content for good. ``close`` claims it in the state, in one
  atomic step per batch of windows (``feedback_claim.lua``): when the window's last claimed
  digest equals the one just computed there is nothing new; otherwise it claims revision
  last + 1 (0 for the first) for this digest. No two events of one (window, revision) ever
  differ; revisions of a window are numbered 0, 1, 2, ... without a gap.
* A claim is refused for a window whose buckets changed after this closer read them (bucket
  versions, which only grow): a window computed before a later label can never become a
  higher revision than one that holds the label. The change left its bucket dirty, so the
  next close computes the window afresh.
* A claimed revision is published at least once. Its body stays in the state until a confirm
  says it was produced; every ``close``, by any monitor, returns every revision still
  unpublished. So a crash between claim and produce, or between produce and confirm, or a
  second monitor closing meanwhile, publishes the same revision again as the same bytes
  (body stored at claim time; the event is built only from it). Consumers keep one event per
  (window, revision): ``driftline performance`` and replay's audit treat such identical
  duplicates as one.
* The latest revision of a window holds every label applied before the last close that saw
  the window dirty; with no more labels it equals the offline computation.

State lives behind :class:`JoinState`: :class:`MemoryJoinState` (tests, replay) and
:class:`RedisJoinState`, whose keys share the pipeline's hash tag, one record key per pending
pair (expiring after the horizon), one hash per bucket, and one script call per micro-batch
(``feedback_apply.lua``) that refuses already-applied offsets like the monitor's windows and
compares every record it rewrites with what the batch was computed from.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray
from prometheus_client import Counter, Gauge

from driftline.errors import DriftlineError
from driftline.performance import (
    BinaryEstimator,
    BinaryLayout,
    Calibrator,
    Layout,
    MulticlassEstimator,
    MulticlassLayout,
    RegressionLayout,
    fold,
)
from driftline.streams._feedback_state import (
    APPLIED,
    CONFLICT,
    FEEDBACK_PARTITION,
    LOST,
    REFUSED,
    Change,
    Claim,
    JoinState,
    Marks,
    MemoryJoinState,
    RedisJoinState,
    decode_record,
    encode_record,
    record_key,
    rounded,
    stack_entries,
    stack_weights,
)
from driftline.streams.windows import bucket_start, pipeline_watermark, window_ends, window_sums

__all__ = [
    "APPLIED",
    "CONFLICT",
    "LOST",
    "REFUSED",
    "ApplyReport",
    "Change",
    "Closing",
    "JoinState",
    "Labels",
    "Marks",
    "MemoryJoinState",
    "PerformanceJoin",
    "Predictions",
    "RedisJoinState",
    "StateLostError",
]


# Labels are bounded: pipeline, performance entry, metric name and outcome (never ids).
JOIN_EVENTS = Counter(
    "driftline_feedback_events",
    "Join outcomes: predictions, labels, joined, relabeled, pending, invalid_labels, ...",
    ["pipeline", "name", "outcome"],
)
PERF_VALUE = Gauge(
    "driftline_performance_value",
    "Realized metric of the newest closed window, at its latest revision",
    ["pipeline", "name", "metric"],
)
PERF_ESTIMATED = Gauge(
    "driftline_performance_estimated",
    "Estimated (CBPE) metric of the newest closed window",
    ["pipeline", "name", "metric"],
)
PERF_REVISION = Gauge(
    "driftline_performance_revision", "Latest revision of the newest window", ["pipeline", "name"]
)


class StateLostError(DriftlineError):
    """Redis holds fewer applied offsets than this process applied (it lost state)."""


@dataclass(frozen=True)
class Predictions:
    """Predictions of a micro-batch from one results topic, in offset order per partition.

    ``values`` is ``(n,)`` (a score, a class index or a value) or ``(n, K)`` (multiclass
    probabilities; the class is their argmax).
    """

    topic: str
    ids: Sequence[str]
    rows: NDArray[np.int64]
    times: NDArray[np.int64]
    values: NDArray[np.float64]
    partitions: NDArray[np.int64]
    offsets: NDArray[np.int64]


@dataclass(frozen=True)
class Labels:
    """Labels of a micro-batch from one feedback topic, in offset order per partition."""

    topic: str
    ids: Sequence[str]
    rows: NDArray[np.int64]
    labels: NDArray[np.float64]
    times: NDArray[np.int64]
    partitions: NDArray[np.int64]
    offsets: NDArray[np.int64]


# -- the join ---------------------------------------------------------------------------------

_FAR_PAST = -(2**62)


@dataclass
class ApplyReport:
    """What one :meth:`PerformanceJoin.apply` did (attempts > 1: refused or conflicting)."""

    counters: dict[str, int]
    attempts: int
    skipped: int = 0


@dataclass
class Closing:
    """Events to publish and the marks :meth:`PerformanceJoin.confirm` records afterwards."""

    events: list[dict[str, Any]]
    unmatched: list[dict[str, Any]]
    doc: dict[str, Any]
    watermark: int | None
    notifications: list[dict[str, Any]] = field(default_factory=list)


class PerformanceJoin:
    """One performance entry of a pipeline: the join, its windows and their revisions.

    Parameters
    ----------
    pipeline, name, spec_version:
        Written into every event.
    layout:
        The realized statistics (:func:`driftline.performance.layout_for`).
    estimator:
        A CBPE estimator, or None.
    state:
        :class:`MemoryJoinState` or :class:`RedisJoinState`.
    width_ms, interval_ms, horizon_ms:
        Window width and bucket size; how long after a prediction its label still counts.
    partitions, lateness_ms:
        Of the results topic: the watermark is the minimum over its partitions of the
        largest prediction time minus the lateness, as for the monitor's windows.
    """

    def __init__(
        self,
        pipeline: str,
        name: str,
        spec_version: str,
        layout: Layout,
        estimator: BinaryEstimator | MulticlassEstimator | None,
        state: JoinState,
        *,
        width_ms: int,
        interval_ms: int,
        horizon_ms: int,
        partitions: int,
        lateness_ms: int = 5000,
        max_attempts: int = 50,
        alerts: Mapping[str, Any] | None = None,
    ):
        if width_ms < interval_ms or width_ms % interval_ms:
            raise ValueError(f"width_ms={width_ms}: must be a multiple of interval_ms")
        self.pipeline, self.name, self.spec_version = pipeline, name, spec_version
        self.layout, self.estimator, self.state = layout, estimator, state
        self.width_ms, self.interval_ms, self.horizon_ms = width_ms, interval_ms, horizon_ms
        self.partitions, self.lateness_ms = partitions, lateness_ms
        self.max_attempts = max_attempts
        self.alerts = dict(alerts or {})
        self._gauge_end = _FAR_PAST
        self.size = layout.size + (estimator.size if estimator is not None else 0)
        self._offsets = state.offsets()
        self._max = state.max_times()

    @classmethod
    def from_spec(
        cls, spec: Any, name: str, state: JoinState, partitions: int | None = None
    ) -> PerformanceJoin:
        """The join of ``spec.performance[name]`` (a :class:`driftline.spec.PipelineSpec`)."""
        p = spec.performance[name]
        cals = [Calibrator.from_dict(c) for c in p.calibrators]
        layout: Layout
        estimator: BinaryEstimator | MulticlassEstimator | None = None
        if p.task == "binary":
            layout = BinaryLayout(threshold=p.threshold, bins=p.bins)
            if p.estimate:
                estimator = BinaryEstimator(p.threshold, cals[0] if cals else Calibrator())
        elif p.task == "multiclass":
            layout = MulticlassLayout(classes=len(p.classes), names=p.classes)
            if p.estimate:
                estimator = MulticlassEstimator(len(p.classes), tuple(cals))
        else:
            layout = RegressionLayout()
        return cls(
            spec.name,
            name,
            spec.version,
            layout,
            estimator,
            state,
            width_ms=p.window_width_ms,
            interval_ms=p.window_interval_ms,
            horizon_ms=p.horizon_ms,
            partitions=partitions if partitions is not None else spec.options.partitions,
            lateness_ms=spec.options.lateness_ms,
            alerts=p.alerts,
        )

    # -- applying micro-batches ---------------------------------------------------------
    def watermark(self) -> int | None:
        """The results' watermark as this process last saw it."""
        return pipeline_watermark(self._max, self.partitions, self.lateness_ms)

    def apply(self, predictions: Predictions | None, labels: Labels | None) -> ApplyReport:
        """Apply one micro-batch of predictions and labels exactly once (one script call).

        Events at offsets the state has already applied are skipped, so a batch read again
        after a crash or a rebalance changes nothing.
        """
        for attempt in range(1, self.max_attempts + 1):
            p = self._fresh(predictions)
            lab = self._fresh(labels)
            skipped = (0 if predictions is None else len(predictions.ids)) + (
                0 if labels is None else len(labels.ids)
            )
            skipped -= (0 if p is None else len(p.ids)) + (0 if lab is None else len(lab.ids))
            change = self._change(p, lab)
            if not change.guards:
                return ApplyReport({}, attempt, skipped)
            status, offsets = self.state.apply(change)
            if status == APPLIED:
                self._offsets = offsets
                for _f, _a, _b, part, t, _prev in change.guards:
                    if part >= 0 and self._max.get(part, _FAR_PAST) < t:
                        self._max[part] = t
                for outcome, n in change.counters.items():
                    JOIN_EVENTS.labels(self.pipeline, self.name, outcome).inc(n)
                return ApplyReport(change.counters, attempt, skipped)
            if status == LOST:
                raise StateLostError(
                    f"performance {self.name!r} of pipeline {self.pipeline!r}: the state holds "
                    f"fewer applied offsets ({offsets}) than this process applied "
                    f"({self._offsets}); it was lost (Redis restarted without persistence?) — "
                    "rebuild it by replaying the results and feedback topics"
                )
            # refused (another process applied further) or a record changed under us
            self._offsets = offsets
            self._max = self.state.max_times()
        raise DriftlineError(
            f"performance {self.name!r}: a batch conflicted {self.max_attempts} times in a row "
            "with other monitors' batches; raise max_attempts or give each id one partition"
        )

    def _fresh(self, batch: Any) -> Any:
        if batch is None or len(batch.ids) == 0:
            return None
        applied = np.array(
            [self._offsets.get(f"{batch.topic}:{int(p)}", -1) for p in batch.partitions],
            dtype=np.int64,
        )
        keep = np.asarray(batch.offsets, dtype=np.int64) > applied
        if keep.all():
            return batch
        idx = np.flatnonzero(keep)
        if not idx.size:
            return None
        fields: dict[str, Any] = {}
        for k, v in batch.__dict__.items():
            if k == "topic":
                fields[k] = v
            elif k == "ids":
                fields[k] = [v[i] for i in idx]
            else:
                fields[k] = np.asarray(v)[idx]
        return type(batch)(**fields)

    def _guards(
        self, batch: Any, times: NDArray[np.int64] | None
    ) -> list[tuple[str, int, int, int, int, int]]:
        out = []
        parts = np.asarray(batch.partitions, dtype=np.int64)
        offs = np.asarray(batch.offsets, dtype=np.int64)
        for part in np.unique(parts):
            sel = parts == part
            fld = f"{batch.topic}:{int(part)}"
            max_time = int(times[sel].max()) if times is not None else 0
            out.append(
                (
                    fld,
                    int(offs[sel].min()),
                    int(offs[sel].max()),
                    int(part) if times is not None else FEEDBACK_PARTITION,
                    max_time,
                    self._offsets.get(fld, -1),
                )
            )
        return out

    def _prediction_values(self, values: NDArray[np.float64]) -> NDArray[np.float64]:
        v = np.asarray(values, dtype=np.float64)
        if v.ndim == 2:
            if v.shape[1] == 1:
                return v[:, 0]
            return np.argmax(np.nan_to_num(v, nan=-1.0), axis=1).astype(np.float64)
        return v

    def _change(self, preds: Predictions | None, labels: Labels | None) -> Change:
        change = Change()
        counters: dict[str, int] = defaultdict(int)
        keys: list[str] = []
        if preds is not None:
            change.guards += self._guards(preds, np.asarray(preds.times, dtype=np.int64))
            keys += [record_key(i, int(r)) for i, r in zip(preds.ids, preds.rows, strict=True)]
        if labels is not None:
            change.guards += self._guards(labels, None)
            keys += [record_key(i, int(r)) for i, r in zip(labels.ids, labels.rows, strict=True)]
        unique = list(dict.fromkeys(keys))
        original = dict(zip(unique, self.state.read(unique), strict=True))
        recs = {k: decode_record(v) for k, v in original.items()}
        wm = self.watermark()
        too_old = _FAR_PAST if wm is None else wm - self.horizon_ms
        # sparse contributions, folded per bucket at the end
        buckets: list[NDArray[np.int64]] = []
        idxs: list[NDArray[np.int64]] = []
        ws: list[NDArray[np.float64]] = []

        def add(times: NDArray[np.int64], idx: NDArray[np.int64], w: NDArray[np.float64]) -> None:
            if len(times):
                buckets.append(bucket_start(times, self.interval_ms))
                idxs.append(np.asarray(idx, dtype=np.int64))
                ws.append(np.asarray(w, dtype=np.float64))

        pairs_t: list[int] = []
        pairs_p: list[float] = []
        pairs_l: list[float] = []
        pairs_d: list[float] = []
        pairs_s: list[float] = []  # +1 add, -1 take back
        if preds is not None:
            values = self._prediction_values(preds.values)
            times = np.asarray(preds.times, dtype=np.int64)
            accepted = np.zeros(len(values), dtype=bool)
            for i, (ident, row) in enumerate(zip(preds.ids, preds.rows, strict=True)):
                key = record_key(ident, int(row))
                rec = recs[key]
                if rec[0] is not None:
                    counters["duplicate_predictions"] += 1
                    continue
                t = int(times[i])
                if t < too_old:
                    counters["expired_predictions"] += 1
                    continue
                accepted[i] = True
                counters["predictions"] += 1
                rec[0], rec[1] = t, float(values[i])
                if rec[2] is not None:
                    counters["joined"] += 1
                    change.pending_remove.add(f"{int(row)}:{ident}")
                    pairs_t.append(t)
                    pairs_p.append(rec[1])
                    pairs_l.append(rec[2])
                    pairs_d.append(rec[3] - t)
                    pairs_s.append(1.0)
            sel = np.flatnonzero(accepted)
            if sel.size:
                idx, w = self.layout.prediction_entries(values[sel])
                add(times[sel], idx, w)
                if self.estimator is not None:
                    raw = np.asarray(preds.values, dtype=np.float64)[sel]
                    if raw.ndim == 2 and raw.shape[1] == 1:
                        raw = raw[:, 0]
                    eidx, ew = self.estimator.entries(raw)
                    add(times[sel], self.layout.size + eidx, ew)
        if labels is not None:
            lab = np.asarray(labels.labels, dtype=np.float64)
            valid = self.layout.valid_label(lab)
            ltimes = np.asarray(labels.times, dtype=np.int64)
            for j, (ident, row) in enumerate(zip(labels.ids, labels.rows, strict=True)):
                if not valid[j]:
                    counters["invalid_labels"] += 1
                    continue
                counters["labels"] += 1
                key = record_key(ident, int(row))
                rec = recs[key]
                label, lt = float(lab[j]), int(ltimes[j])
                if rec[0] is not None:
                    t = int(rec[0])
                    if t < too_old:
                        counters["expired_labels"] += 1
                        continue
                    if rec[2] is not None:
                        counters["relabeled"] += 1
                        pairs_t.append(t)
                        pairs_p.append(rec[1])
                        pairs_l.append(rec[2])
                        pairs_d.append(rec[3] - t)
                        pairs_s.append(-1.0)
                    else:
                        counters["joined"] += 1
                    pairs_t.append(t)
                    pairs_p.append(rec[1])
                    pairs_l.append(label)
                    pairs_d.append(lt - t)
                    pairs_s.append(1.0)
                else:
                    member = f"{int(row)}:{ident}"
                    if rec[2] is not None:
                        counters["relabeled"] += 1
                    else:
                        counters["pending"] += 1
                    change.pending_add[member] = lt
                    change.pending_remove.discard(member)
                rec[2], rec[3] = label, lt
        if pairs_t:
            idx, w = self.layout.label_entries(
                np.array(pairs_p), np.array(pairs_l), np.array(pairs_d, dtype=np.float64)
            )
            add(np.array(pairs_t, dtype=np.int64), idx, w * np.array(pairs_s)[:, None])
        if buckets:
            starts, stats = fold(
                np.concatenate(buckets), stack_entries(idxs), stack_weights(ws), self.size
            )
            for s, row_stats in zip(starts.tolist(), stats, strict=True):
                nz = np.flatnonzero(row_stats)
                if nz.size:
                    change.buckets[int(s)] = {int(i): float(row_stats[i]) for i in nz}
        for k, rec in recs.items():
            new = None if all(v is None for v in rec) else encode_record(rec)
            if new != original[k]:
                change.records[k] = (original[k], new)
        change.counters = {k: v for k, v in counters.items() if v}
        return change

    # -- closing windows ----------------------------------------------------------------
    def close(self, watermark: int | None = None) -> Closing:
        """Windows to publish now: newly closed ones (revision 0), changed closed ones (+1).

        ``watermark`` defaults to the results' watermark read from the state (all partitions,
        whichever process applied them). Also returns the labels whose prediction did not
        arrive within the horizon (for ``<p>.unmatched``).

        It claims the revisions of what changed (see the module docstring) and returns every
        revision claimed and not yet confirmed, by this process or another, so a process
        that starts calls it once before its first :meth:`apply`: what a predecessor claimed
        or produced but did not confirm comes out again, byte for byte.
        """
        if watermark is None:
            self._max = self.state.max_times()
            watermark = self.watermark()
        doc: dict[str, Any] = {"closed": None, "r": [], "clean": [], "cut": None, "gone": []}
        if watermark is None:
            return Closing([], [], doc, None)
        # Read in this order: a change applied after the dirty counts were read stays dirty
        # for the next close, and one applied after the versions were read makes the claim
        # refuse the windows it touches (their buckets may be read before or after it).
        marks = self.state.marks()
        dirty = self.state.dirty()
        versions = self.state.versions()
        new_ends = window_ends(
            marks.closed, self.state.first_bucket(), watermark, self.interval_ms
        ).tolist()
        floor = watermark - self.horizon_ms
        revise: set[int] = set()
        if marks.closed is not None:
            for b in dirty:
                for end in range(b + self.interval_ms, b + self.width_ms + 1, self.interval_ms):
                    if floor < end <= marks.closed:
                        revise.add(end)
        ends = sorted(set(new_ends) | revise)
        claims: list[Claim] = []
        vstarts = np.array(sorted(versions), dtype=np.int64)
        cum = np.concatenate([[0], np.cumsum([versions[b] for b in vstarts.tolist()])]).astype(
            np.int64
        )
        if ends:
            starts, mat = self.state.buckets(ends[0] - self.width_ms, ends[-1], self.size)
            sums = window_sums(starts, mat, np.array(ends, dtype=np.int64), self.width_ms)
            for end, vec in zip(ends, sums, strict=True):
                metrics = self.layout.metrics(vec[: self.layout.size])
                estimated = (
                    None
                    if self.estimator is None
                    else self.estimator.metrics(vec[self.layout.size :])
                )
                body = rounded({"metrics": metrics, "estimated": estimated})
                digest = hashlib.sha256(
                    orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
                ).hexdigest()[:16]
                lo = end - self.width_ms
                claims.append(
                    Claim(
                        end,
                        digest,
                        orjson.dumps(dict(body, spec=self.spec_version)).decode(),
                        lo,
                        end,
                        int(cum[np.searchsorted(vstarts, end)] - cum[np.searchsorted(vstarts, lo)]),
                    )
                )
        _stale, unpublished = self.state.claim(claims)
        events = [self._event(end, rev, body) for end, rev, body in unpublished]
        doc["r"] = [(end, rev) for end, rev, _ in unpublished]
        if new_ends:
            doc["closed"] = int(new_ends[-1])
        doc["clean"] = sorted(dirty.items())
        doc["cut"] = floor - self.width_ms
        unmatched = []
        for member, raw in self.state.pending_before(floor):
            row, _, ident = member.partition(":")
            rec = decode_record(raw)
            if rec[0] is not None:  # joined meanwhile
                continue
            doc["gone"].append(member)
            unmatched.append(
                {
                    "pipeline": self.pipeline,
                    "name": self.name,
                    "id": ident,
                    "row": int(row),
                    "label": rec[2],
                    "time": rec[3],
                }
            )
        closing = Closing(events, unmatched, doc, watermark)
        if events:
            newest = max(events, key=lambda e: (e["window_end"], e["revision"]))
            if newest["window_end"] >= self._gauge_end:
                self._gauge_end = newest["window_end"]
                self._set_gauges(newest)
        if self.alerts:
            self._evaluate_alerts(closing, marks.alerts)
        return closing

    def _event(self, end: int, revision: int, body: str) -> dict[str, Any]:
        """The event of a claimed revision: the same bytes whoever builds it, and when."""
        b = orjson.loads(body)
        return {
            "pipeline": self.pipeline,
            "name": self.name,
            "window_start": end - self.width_ms,
            "window_end": end,
            "revision": revision,
            "predictions": b["metrics"]["predictions"],
            "labeled": b["metrics"]["labeled"],
            "metrics": b["metrics"],
            "estimated": b["estimated"],
            "spec": b["spec"],
        }

    def _set_gauges(self, e: dict[str, Any]) -> None:
        PERF_REVISION.labels(self.pipeline, self.name).set(e["revision"])
        for gauge, values in ((PERF_VALUE, e["metrics"]), (PERF_ESTIMATED, e["estimated"] or {})):
            for metric, v in values.items():
                if v is None or isinstance(v, int | float):  # None: undefined (nan)
                    gauge.labels(self.pipeline, self.name, metric).set(
                        math.nan if v is None else float(v)
                    )

    def _evaluate_alerts(self, closing: Closing, stored: Mapping[str, dict[str, Any]]) -> None:
        """Alert transitions of the windows published now (DESIGN §8 lifecycle).

        An alert on a realized metric judges a window once it holds ``min_labeled`` labels,
        and again at each later revision while it is the newest window judged (labels keep
        coming for recent windows); one on ``estimated.<metric>`` judges each window at close.
        Windows older than the last one judged are not judged again: the lifecycle only moves
        forward in window time.
        """
        from driftline.alerts.lifecycle import AlertState, step

        states: dict[str, dict[str, Any]] = {}
        ordered = sorted(closing.events, key=lambda e: (e["window_end"], e["revision"]))
        for name, a in self.alerts.items():
            doc = dict(stored.get(name) or {})
            state = AlertState.from_dict(doc.get("state"))
            last = doc.get("last")
            for e in ordered:
                end = int(e["window_end"])
                if last is not None and end < last:
                    continue
                if a.estimated:
                    if e["revision"] != 0 or e["estimated"] is None:
                        continue
                    value = e["estimated"].get(a.metric)
                else:
                    if e["labeled"] < a.min_labeled:
                        continue
                    value = e["metrics"].get(a.metric)
                if value is None or (isinstance(value, float) and math.isnan(value)):
                    continue
                holds = _OPS[a.op](float(value), a.value)
                state, transitions = step(state, holds, end, float(value))
                last = end
                for t in transitions:
                    closing.notifications.append(
                        {
                            "id": t.id(self.pipeline, f"performance:{self.name}:{name}"),
                            "alert": name,
                            "pipeline": self.pipeline,
                            "state": t.state,
                            "value": float(value),
                            "condition": a.when,
                            "window": {"start": end - self.width_ms, "end": end},
                            "at": end,
                            "severity": a.severity,
                            "notify": list(a.notify),
                            "spec": self.spec_version,
                            "kind": "performance",
                        }
                    )
            states[name] = {"state": state.to_dict(), "last": last}
        closing.doc["alerts"] = states

    def confirm(self, closing: Closing) -> None:
        """Record what :meth:`close` returned once its events are produced (flushed)."""
        self.state.confirm(closing.doc)

    def counters(self) -> dict[str, int]:
        """Counts since the state was created: predictions, labels, joined, relabeled, ..."""
        return self.state.counters()


_OPS = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
}
