"""The per-pipeline monitor engine: micro-batch in, Redis state updated, closed windows out.

This is the code both ``driftline monitor`` (fed by faust) and ``driftline replay`` (fed by a
plain consumer) run. It never reads the wall clock: time only enters through
:meth:`PipelineEngine.close` (``floor``), which the live monitor uses for idle pipelines and
replay uses at the end of its range.

Per batch the work is one decode call for all events, vectorized folds, one script call that
applies the counters, and, when windows close, one script call per counter range read. Buckets
the watermark has passed cannot change any more, so each is read from Redis once and kept
while open windows still cover it (a five-minute sliding window of one-second buckets would
otherwise re-read 300 buckets at every close).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from driftline.alerts.lifecycle import AlertState, Transition, run
from driftline.compile import (
    AlertPlan,
    AssayBaseline,
    AssayPlan,
    DetectorBaseline,
    ScanPlan,
    _digest,
)
from driftline.detectors import FINE_HISTOGRAM, RAW_SAMPLE
from driftline.events import AssayResult, Notification
from driftline.expressions import evaluate, to_json, to_text, variables
from driftline.streams._batch import AssayFailed, Batch, ClosedWindows, IngestReport, StateLost
from driftline.streams._decode import (
    Doc,
    build_tensors,
    decode_results,
    input_signature,
    output_signature,
)
from driftline.streams._final import FinalBuckets
from driftline.streams.assay_lifecycle import assay_notification, step_assay
from driftline.streams.memstate import MonitorState
from driftline.streams.samples import SAMPLE_SIZE, member, merge, priorities
from driftline.streams.state import APPLIED, LOST, BucketDelta, Guard, split_field
from driftline.streams.windows import (
    bucket_start,
    classify_late,
    fold_counts,
    fold_sums,
    pipeline_watermark,
    window_ends,
    window_sums,
)

__all__ = [
    "AlertPlan",
    "AssayBaseline",
    "AssayFailed",
    "AssayPlan",
    "Batch",
    "ClosedWindows",
    "DetectorBaseline",
    "IngestReport",
    "PipelineEngine",
    "ScanPlan",
    "StateLost",
    "build_tensors",
]

# At most this many windows per aggregate and call: a pipeline idle for days closes its
# empty windows over several calls instead of one huge one.
MAX_WINDOWS_PER_CLOSE = 20_000


def _assay_field(y: AssayPlan) -> str:
    """Counter prefix of an assay's fine histogram: changes with what is counted.

    It depends on the expression, the interval and the fine bin edges, not on the assay's name
    or metric, so assays of one feature on one baseline (PSI and KS, say) share their counts:
    the batch is binned and written to Redis once for all of them.
    """
    edges = getattr(getattr(y.baseline, "baseline", None), "fine_edges", None)
    if edges is None:  # a baseline that bins its own way: its counts are its own
        return f"h:{y.name}@{_digest(to_json(y.iopath), y.interval_ms, y.baseline.num_fine_bins)}"
    edges_list = np.asarray(edges, dtype=np.float64).tolist()
    digest = _digest(to_json(y.iopath), y.interval_ms, y.baseline.num_fine_bins, edges_list)
    return f"h:{digest}"


class PipelineEngine:
    """Monitor one pipeline: fold batches into Redis, close windows, run alert lifecycles.

    Parameters
    ----------
    name, spec_version:
        The pipeline and the spec version stamped on emitted events.
    models:
        Model names of the pipeline (their inputs are the row's input vector).
    alerts, assays:
        What to compute.
    state:
        The pipeline's state: a :class:`~driftline.streams.state.RedisState`, or a
        :class:`~driftline.streams.memstate.MemoryState` in tests.
    partitions:
        Number of partitions of the results topic (the watermark waits for all of them).
    lateness_ms:
        Allowed lateness.
    """

    def __init__(
        self,
        name: str,
        spec_version: str,
        models: Sequence[str],
        alerts: Sequence[AlertPlan],
        assays: Sequence[AssayPlan],
        state: MonitorState,
        partitions: int,
        lateness_ms: int = 5000,
        on_metrics: Callable[[str, float, dict[str, str]], None] | None = None,
        tensor_names: Mapping[tuple[str, str], Sequence[str]] | None = None,
    ):
        if partitions < 1:
            raise ValueError(f"partitions={partitions}: must be >= 1")
        if lateness_ms < 0:
            raise ValueError(f"lateness_ms={lateness_ms}: must be >= 0")
        self.name = name
        self.spec_version = spec_version
        self.models = list(models)
        self.alerts = list(alerts)
        self.assays = list(assays)
        self.state = state
        self.partitions = partitions
        self.lateness_ms = lateness_ms
        # Resolves ``m.outputs["name"]`` in conditions and iopaths (from the canonical spec).
        self.tensor_names = dict(tensor_names or {})
        self.longest_ms = max(
            [a.width_ms for a in self.alerts] + [a.span_ms for a in self.assays] + [1000]
        )
        # Buckets are deleted by the cleanup once no open window needs them; the TTL only
        # reclaims pipelines that stopped for good, so it must outlast any monitor outage.
        self.ttl_s = max(7 * 24 * 3600, (self.longest_ms + lateness_ms) // 1000 * 4)
        self._metric = on_metrics or (lambda *_: None)
        exprs = [a.condition.inner for a in self.alerts] + [a.iopath for a in self.assays]
        self._needed: set[tuple[str, str]] = set()
        for e in exprs:
            for v in variables(e):
                self._needed.add((v.model, v.kind))
        self._with_inputs = any(kind == "inputs" for _, kind in self._needed)
        # Fine-histogram counters per assay, and one assay per distinct histogram to fold.
        self._hist_prefix = {y.name: _assay_field(y) for y in self.assays}
        self._hist_folds = list({self._hist_prefix[y.name]: y for y in self.assays}.items())
        self._hist_fields = {
            f: [f"{f}:{j}" for j in range(y.baseline.num_fine_bins)] for f, y in self._hist_folds
        }
        # Raw-value samples per assay whose metric needs them (one per expression + interval).
        self._sample_prefix = {
            y.name: f"r:{_digest(to_json(y.iopath), y.interval_ms)}"
            for y in self.assays
            if getattr(y.baseline, "needs", FINE_HISTOGRAM) == RAW_SAMPLE
        }
        self._sample_folds = list(
            {
                self._sample_prefix[y.name]: y for y in self.assays if y.name in self._sample_prefix
            }.items()
        )
        snap = state.snapshot()
        self.offsets: dict[str, int] = dict(snap.offsets)
        self.max_times: dict[int, int] = dict(snap.max_times)
        self.floor = snap.floor
        self.first = snap.first
        self._emitted: dict[str, int] = {}
        self._states: dict[str, dict[str, Any] | None] = {}
        self._final: dict[tuple[int, str], FinalBuckets] = {}

    def test(
        self,
        rows: Iterable[bytes | tuple[int, int, bytes]],
        floor: int | None = None,
        batch_size: int | None = None,
        topic: str = "test",
    ) -> ClosedWindows:
        """Run result events through the engine as the monitor would; all that closed.

        ``rows`` are event bytes (partition 0, offsets 0, 1, ...) or ``(partition, offset,
        value)`` records; each batch of ``batch_size`` (default: all) is ingested and closed,
        and ``floor`` closes the rest (as replay does at the end of its range). Meant for an
        in-memory :class:`~driftline.streams.memstate.MemoryState`, like Quix Streams'
        ``sdf.test()``; the returned windows are committed.
        """
        records = [r if isinstance(r, tuple) else (0, i, r) for i, r in enumerate(rows)]
        size = batch_size or max(1, len(records))
        out = ClosedWindows()
        for i in range(0, len(records), size):
            self.ingest(Batch.of(topic, records[i : i + size]))
            closed = self.close()
            self.commit(closed)
            out.assays += closed.assays
            out.notifications += closed.notifications
        if floor is not None:
            closed = self.close(floor)
            self.commit(closed)
            out.assays += closed.assays
            out.notifications += closed.notifications
        return out

    # ------------------------------------------------------------------ ingest

    def ingest(
        self,
        batch: Batch,
        before_apply: Callable[[IngestReport], None] | None = None,
        bounds: tuple[int, int] | None = None,
    ) -> IngestReport:
        """Fold one batch into Redis (one script call; retried once if offsets moved).

        ``before_apply`` gets the report (late and malformed events) before the script runs:
        once Redis holds the batch's offsets a redelivery skips it, so anything published
        about those events must be out before then (at least once).

        ``bounds`` = ``(lo, hi)``: events with a time outside ``[lo, hi]`` are refused
        (reason ``time_out_of_range``) before they count for lateness or any window; the
        live monitor passes bounds around the wall clock, replay around its range end.

        Raises :class:`StateLost` when Redis lost offsets this engine had applied.
        """
        report = IngestReport()
        for _attempt in range(5):
            fresh = self._unapplied(batch)
            report.skipped = len(batch) - int(fresh.sum())
            work = batch.select(fresh) if report.skipped else batch
            if len(work) == 0:
                return report
            guards, deltas, min_time, rep, samples = self._fold(work, bounds)
            if before_apply is not None and (rep.late or rep.dead):
                before_apply(rep)
            if samples:  # idempotent, so before the guarded script (see add_samples)
                self.state.add_samples(samples, SAMPLE_SIZE, self.ttl_s)
            result = self.state.apply(guards, deltas, min_time, self.ttl_s, cutoff=self._cutoff())
            if result.status == LOST:
                self.forget_buckets()
                raise StateLost(sorted({g.partition for g in guards}))
            self.offsets.update(result.offsets)
            self.max_times.update(result.max_times)
            self.floor = result.floor
            self.first = result.first
            if result.status == APPLIED:
                rep.skipped = report.skipped
                rep.applied = len(work)
                return rep
        raise RuntimeError(f"pipeline {self.name}: offsets kept moving while applying a batch")

    def _unapplied(self, batch: Batch) -> np.ndarray:
        keep = np.ones(len(batch), dtype=bool)
        for p in np.unique(batch.partitions):
            last = self.offsets.get(f"{batch.topic}:{int(p)}")
            if last is not None:
                keep &= ~((batch.partitions == p) & (batch.offsets <= last))
        return keep

    def _fold(
        self, batch: Batch, bounds: tuple[int, int] | None = None
    ) -> tuple[
        list[Guard], dict[str, BucketDelta], int | None, IngestReport, dict[str, dict[bytes, float]]
    ]:
        rep = IngestReport()
        docs, ok, reasons = decode_results(
            batch.values, self._with_inputs, bool(self._sample_folds)
        )
        times = np.fromiter(
            (0 if d is None else d.time for d in docs), dtype=np.int64, count=len(docs)
        )
        if bounds is not None:
            out = ok & ((times < bounds[0]) | (times > bounds[1]))
            for pos in np.flatnonzero(out).tolist():
                ok[pos] = False
                reasons[pos] = "time_out_of_range"
        late = np.zeros(len(batch), dtype=bool)
        guards: list[Guard] = []
        new_max: dict[int, int] = {}
        for p in np.unique(batch.partitions):
            p = int(p)
            sel = batch.partitions == p
            good = sel & ok
            lt, mx = classify_late(times[good], self.max_times.get(p), self.lateness_ms, self.floor)
            late[np.flatnonzero(good)[lt]] = True
            offs = batch.offsets[sel]
            prev = self.offsets.get(f"{batch.topic}:{p}", -1)
            max_time = mx if mx is not None else self.max_times.get(p, 0)
            new_max[p] = max_time
            guards.append(Guard(batch.topic, p, int(offs.min()), int(offs.max()), max_time, prev))
        accept = ok & ~late
        # Tensors of malformed shapes are caught per event only when the fast path fails.
        deltas: dict[str, BucketDelta] = {}
        samples: dict[str, dict[bytes, float]] = {}
        idx = np.flatnonzero(accept)
        if idx.size:
            acc_docs: list[Doc] = [
                d
                for d in (docs if idx.size == len(docs) else [docs[i] for i in idx])
                if d is not None
            ]
            try:
                tensors = self._tensors(acc_docs)
            except (ValueError, KeyError, TypeError, IndexError, AttributeError):
                bad = self._bad_rows(acc_docs)
                for j in np.flatnonzero(bad):
                    ok[idx[j]] = False
                    reasons[idx[j]] = "bad-tensor-shape"
                idx = idx[~bad]
                acc_docs = [d for d in (docs[i] for i in idx) if d is not None]
                tensors = self._tensors(acc_docs) if idx.size else {}
            if idx.size:
                deltas = self._deltas(times[idx], tensors, idx.size)
                if self._sample_folds:
                    samples = self._samples(batch, idx, docs, times[idx], tensors)
        accept = np.zeros(len(batch), dtype=bool)
        accept[idx] = True
        for i in np.flatnonzero(~ok):
            rep.dead.append(
                (int(batch.partitions[i]), int(batch.offsets[i]), batch.values[i], reasons[i])
            )
        for i in np.flatnonzero(late & ok):
            rep.late.append((int(batch.partitions[i]), int(batch.offsets[i]), batch.values[i]))
        rep.accepted = int(idx.size)
        min_time = int(times[idx].min()) if idx.size else None
        return guards, deltas, min_time, rep, samples

    def _samples(
        self,
        batch: Batch,
        idx: np.ndarray,
        docs: Sequence[Doc | None],
        times: np.ndarray,
        tensors: Mapping[tuple[str, str], Sequence[np.ndarray]],
    ) -> dict[str, dict[bytes, float]]:
        """Bottom-k sample members of the accepted rows, per bucket (non-finite values skipped)."""
        acc = [docs[i] for i in idx.tolist()]
        prio = priorities(
            [getattr(d, "id", None) for d in acc],
            [getattr(d, "row", 0) for d in acc],
            batch.partitions[idx].tolist(),
            batch.offsets[idx].tolist(),
        )
        out: dict[str, dict[bytes, float]] = {}
        n = idx.size
        for prefix, y in self._sample_folds:
            values = np.asarray(evaluate(y.iopath, tensors, self.tensor_names), dtype=np.float64)
            if values.shape != (n,):
                values = np.broadcast_to(values, (n,))
            starts = bucket_start(times, y.interval_ms)
            finite = np.isfinite(values)
            for start in np.unique(starts[finite]).tolist():
                sel = np.flatnonzero((starts == start) & finite)
                best = sel[np.argsort(prio[sel], kind="stable")[:SAMPLE_SIZE]]
                key = self.state.sample_key(prefix, y.interval_ms, int(start))
                members = out.setdefault(key, {})
                for j in best.tolist():
                    members[member(float(prio[j]), float(values[j]))] = float(prio[j])
        return out

    def _tensors(self, docs: list[Doc]) -> dict[tuple[str, str], list[np.ndarray]]:
        return build_tensors(docs, self._needed, self.tensor_names)

    def _bad_rows(self, docs: list[Doc]) -> np.ndarray:
        """Rows whose tensor shapes differ from the most common shape (or are missing)."""
        sigs: list[Any] = []
        for d in docs:
            try:
                sig = []
                for model, kind in sorted(self._needed):
                    if kind == "inputs":
                        sig.append(input_signature(getattr(d, "inputs", None)))
                    else:
                        # numbers of any length (variable-length outputs) or strings
                        sig.append(output_signature(d.outputs[model]))
                sigs.append(tuple(sig))
            except (ValueError, KeyError, TypeError):
                sigs.append(None)
        valid = [s for s in sigs if s is not None]
        if not valid:
            return np.ones(len(docs), dtype=bool)
        common = max(set(valid), key=valid.count)
        return np.array([s != common for s in sigs], dtype=bool)

    def _deltas(
        self, times: np.ndarray, tensors: Mapping[tuple[str, str], Sequence[np.ndarray]], n: int
    ) -> dict[str, BucketDelta]:
        deltas: dict[str, BucketDelta] = {}

        def bucket(interval: int, start: int) -> BucketDelta:
            key = self.state.bucket_key(interval, start)
            d = deltas.get(key)
            if d is None:
                d = deltas[key] = BucketDelta(start)
            return d

        for a in self.alerts:
            cond = a.condition
            values = cond.row_values(tensors, self.tensor_names)
            if values.shape != (n,):
                values = np.broadcast_to(values, (n,))
            b = bucket_start(times, cond.interval_ms)
            starts, cnt, total, known = fold_sums(b, values)
            for s, c, t, k in zip(
                starts.tolist(), cnt.tolist(), total.tolist(), known.tolist(), strict=True
            ):
                d = bucket(cond.interval_ms, s)
                if cond.aggregate in ("count", "rate"):
                    d.ints[f"c:{a.counter}"] = c
                else:
                    d.floats[f"s:{a.counter}"] = t
                    d.ints[f"k:{a.counter}"] = k
        for prefix, y in self._hist_folds:
            names = self._hist_fields[prefix]
            values = np.asarray(evaluate(y.iopath, tensors, self.tensor_names), dtype=np.float64)
            if values.shape != (n,):
                values = np.broadcast_to(values, (n,))
            fine = np.asarray(y.baseline.fine_index(values), dtype=np.int64)
            b = bucket_start(times, y.interval_ms)
            starts, counts = fold_counts(b, fine, y.baseline.num_fine_bins)
            for s, row in zip(starts.tolist(), counts, strict=True):
                nz = np.flatnonzero(row)
                bucket(y.interval_ms, s).ints.update(
                    zip([names[j] for j in nz.tolist()], row[nz].tolist(), strict=True)
                )
        return deltas

    def _cutoff(self) -> int | None:
        """Oldest bucket start any future window can still need (None: keep everything)."""
        names = [a.name for a in self.alerts] + [y.name for y in self.assays]
        if not names or any(n not in self._emitted for n in names):
            return None
        return min(self._emitted[n] for n in names) - self.longest_ms

    # ------------------------------------------------------------------ close

    def watermark(self, floor: int | None = None) -> int | None:
        f = self.floor if floor is None else max(floor, self.floor or floor)
        return pipeline_watermark(self.max_times, self.partitions, self.lateness_ms, f)

    def close(self, floor: int | None = None) -> ClosedWindows:
        """Evaluate every window whose end the watermark has reached and that is not emitted.

        ``floor`` raises the watermark (idle pipelines, end of a replay range). Raises
        :class:`StateLost` when Redis holds less than this engine applied.
        """
        snap = self.state.snapshot()
        behind = [f for f, off in self.offsets.items() if snap.offsets.get(f, -1) < off]
        if behind:  # Redis lost what this engine applied: closing on it would emit wrong windows
            self.forget_buckets()
            raise StateLost(sorted({split_field(f)[1] for f in behind}))
        self.max_times.update(snap.max_times)
        self.floor = snap.floor
        self.first = snap.first if snap.first is not None else self.first
        emitted, states = self.state.emitted()
        self._emitted = emitted
        out = ClosedWindows(
            floor=floor if floor is not None and floor > (self.floor or -1) else None
        )
        wm = self.watermark(floor)
        out.watermark = wm
        if wm is None:  # a partition has seen nothing yet: no window can close
            return out
        for a in self.alerts:
            ends = window_ends(
                emitted.get(a.name), self.first, wm, a.interval_ms, MAX_WINDOWS_PER_CLOSE
            )
            if ends.size == 0:
                continue
            values = self._alert_values(a, ends, wm)
            holds = np.array([a.condition.holds(float(v)) for v in values], dtype=bool)
            st = AlertState.from_dict(states.get(a.name))
            st, transitions = run(st, holds, ends, values, a.for_ms, a.repeat_ms)
            for t in transitions:
                out.notifications.append(self._notification(a, t))
            out.marks.append((a.name, int(ends[-1]), st.to_dict()))
        for y in self.assays:
            ends = window_ends(
                emitted.get(y.name), self.first, wm, y.interval_ms, MAX_WINDOWS_PER_CLOSE
            )
            if ends.size == 0:
                continue
            results, ast, notes = self._assay_windows(y, ends, states.get(y.name), wm)
            out.assays.extend(results)
            out.notifications.extend(notes)
            out.marks.append((y.name, int(ends[-1]), ast))
        return out

    def commit(self, closed: ClosedWindows) -> None:
        """Record the windows as emitted (call after their events reached Kafka)."""
        if not closed:
            return
        self.state.mark(closed.marks, floor=closed.floor)
        for name, end, st in closed.marks:
            if end >= self._emitted.get(name, end):
                self._emitted[name] = end
                self._states[name] = st
        if closed.floor is not None:
            self.floor = max(closed.floor, self.floor or closed.floor)

    def aggregate_names(self) -> list[tuple[str, int]]:
        """``(name, interval_ms)`` of every alert and assay."""
        return [(a.name, a.interval_ms) for a in self.alerts] + [
            (y.name, y.interval_ms) for y in self.assays
        ]

    def restore_marks(self, at_least: int | None) -> None:
        """After a rebuild: re-record what this engine remembers having emitted, and never
        emit windows ending at or before ``at_least`` (they may lack events the rebuild could
        not replay)."""
        self.forget_buckets()
        marks: list[tuple[str, int, dict[str, Any] | None]] = []
        for name, interval in self.aggregate_names():
            end = self._emitted.get(name)
            if at_least is not None:
                floor_end = at_least - at_least % interval
                if end is None or end < floor_end:
                    end = floor_end
            if end is not None:
                marks.append((name, end, self._states.get(name)))
        if marks:
            self.state.mark(marks)

    def _bucket_matrix(
        self, interval: int, lo: int, hi: int, fields: Sequence[str], watermark: int
    ) -> tuple[np.ndarray, np.ndarray]:
        cache = self._final.get((interval, fields[0]))
        if cache is None:
            cache = self._final[(interval, fields[0])] = FinalBuckets(len(fields))
        final = watermark - watermark % interval
        return cache.read(
            lambda a, b: self.state.read_matrix(interval, a, b, fields), lo, hi, final
        )

    def forget_buckets(self) -> None:
        """Drop the buckets held in memory (Redis lost or rebuilt them)."""
        self._final = {}

    def _alert_values(self, a: AlertPlan, ends: np.ndarray, watermark: int) -> np.ndarray:
        cond = a.condition
        lo, hi = int(ends[0]) - cond.width_ms, int(ends[-1])
        if cond.aggregate in ("count", "rate"):
            starts, mat = self._bucket_matrix(
                cond.interval_ms, lo, hi, [f"c:{a.counter}"], watermark
            )
            total = window_sums(starts, mat[:, 0], ends, cond.width_ms)
            n = np.zeros_like(total)
        else:
            starts, mat = self._bucket_matrix(
                cond.interval_ms, lo, hi, [f"s:{a.counter}", f"k:{a.counter}"], watermark
            )
            sums = window_sums(starts, mat, ends, cond.width_ms)
            total, n = sums[:, 0], sums[:, 1]
        return np.array(
            [cond.value(float(t), round(k)) for t, k in zip(total, n, strict=True)],
            dtype=np.float64,
        )

    def _notification(self, a: AlertPlan, t: Transition) -> Notification:
        return Notification(
            id=t.id(self.name, a.name),
            alert=a.name,
            pipeline=self.name,
            state=t.state,
            value=t.value,
            condition=to_text(a.condition.expr),
            window={"start": t.at - a.width_ms, "end": t.at},
            at=t.at,
            severity=a.severity,
            notify=list(a.notify),
            spec=self.spec_version,
        )

    @staticmethod
    def _scan(y: AssayPlan, merged: Mapping[int, np.ndarray]) -> dict[str, Any]:
        """The scan of one window: Bonferroni over the merged windows' p-values."""
        assert y.scan is not None
        p_values: dict[str, float] = {}
        for s in y.scan.scales:
            counts = np.rint(merged[s]).astype(np.int64)
            if counts.sum() > 0:
                p_values[str(s)] = y.baseline.p_value(counts, y.scan.test)
        best = min(p_values, key=lambda k: (p_values[k], int(k)))
        cut = y.scan.alpha / len(y.scan.scales)
        return {
            "test": y.scan.test,
            "alpha": y.scan.alpha,
            "p_value": min(1.0, p_values[best] * len(y.scan.scales)),
            "scale": int(best),
            "p_values": p_values,
            "status": "alert" if p_values[best] <= cut else "ok",
        }

    def _assay_windows(
        self, y: AssayPlan, ends: np.ndarray, st: dict[str, Any] | None, watermark: int
    ) -> tuple[list[AssayResult], dict[str, Any] | None, list[Notification]]:
        nb = y.baseline.num_fine_bins
        fields = self._hist_fields[self._hist_prefix[y.name]]
        starts, mat = self._bucket_matrix(
            y.interval_ms, int(ends[0]) - y.span_ms, int(ends[-1]), fields, watermark
        )

        def sums_over(width: int) -> np.ndarray:
            if not starts.size:
                return np.zeros((ends.size, nb))
            return window_sums(starts, mat, ends, width)

        sums = sums_over(y.width_ms)
        sampled = self._window_samples(y, ends, starts) if y.name in self._sample_prefix else None
        scales = y.scan.scales if y.scan else ()
        merged = {s: sums if s == 1 else sums_over(s * y.width_ms) for s in scales}
        results: list[AssayResult] = []
        notes: list[Notification] = []
        for i, (end, counts) in enumerate(zip(ends.tolist(), sums, strict=True)):
            fine = np.rint(counts).astype(np.int64)
            total = int(fine.sum())
            if total == 0:
                continue
            if sampled is not None and sampled[i].size < 2:
                continue  # too few finite values for a sample test: no result, like empty
            try:
                if sampled is not None:
                    r = y.baseline.compare_sample(sampled[i])  # type: ignore[attr-defined]
                else:
                    r = y.baseline.compare_counts(fine)
                scan = self._scan(y, {s: m[i] for s, m in merged.items()}) if y.scan else None
            except Exception as exc:  # a detector or baseline fault: this pipeline's, named
                raise AssayFailed(y.name, exc) from exc
            score = float(r.score)
            status = r.status
            if scan is not None and scan["status"] == "alert":
                status = "alert"
            results.append(
                AssayResult(
                    pipeline=self.name,
                    assay=y.name,
                    iopath=to_text(y.iopath),
                    window_start=end - y.width_ms,
                    window_end=end,
                    count=total,
                    metric=r.metric,
                    score=score if math.isfinite(score) else float("nan"),
                    p_value=None if r.p_value is None else float(r.p_value),
                    status=status,
                    thresholds={k: float(v) for k, v in r.thresholds.items()},
                    edges=[float(e) for e in r.edges],
                    baseline_densities=[float(x) for x in r.baseline_densities],
                    window_densities=[float(x) for x in r.window_densities],
                    spec=self.spec_version,
                    scan=scan,
                )
            )
            self._metric("assay_score", score, {"pipeline": self.name, "assay": y.name})
            self._metric(
                "assay_status",
                {"ok": 0.0, "warning": 1.0, "alert": 2.0}[status],
                {"pipeline": self.name, "assay": y.name},
            )
            st, transitions = step_assay(st, status, end, score, y.for_ms, y.repeat_ms)
            for t in transitions:
                notes.append(
                    assay_notification(
                        self.name, self.spec_version, self.longest_ms, y, t, r, status, total
                    )
                )
        return results, st, notes

    def _window_samples(
        self, y: AssayPlan, ends: np.ndarray, starts: np.ndarray
    ) -> list[np.ndarray]:
        """Each window's raw-value sample (buckets with counts only: the others are empty)."""
        prefix = self._sample_prefix[y.name]
        lo = int(ends[0]) - y.width_ms
        held = [int(b) for b in starts.tolist() if b >= lo]
        rows = self.state.read_samples(
            [self.state.sample_key(prefix, y.interval_ms, b) for b in held], SAMPLE_SIZE
        )
        by_start = dict(zip(held, rows, strict=True))
        out: list[np.ndarray] = []
        for end in ends.tolist():
            inside = [r for b, r in by_start.items() if end - y.width_ms <= b < end]
            out.append(np.asarray(merge(inside, SAMPLE_SIZE), dtype=np.float64))
        return out
