"""Everything the pipeline counts, counted once, and the record of recent batches.

The poll thread and the workers write here; every observer (sidecar API, Prometheus
collector, summaries) reads copies. Writes take one lock per `consume()` batch or per
flush, never per message, so counting costs the hot path a few lock acquisitions a second
per partition. Counters are lifetime totals: a revoked partition keeps its numbers, so the
Prometheus counters built from them never go backwards.
"""

from __future__ import annotations

import itertools
import threading
import time
from bisect import bisect_left
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from consumer.health_alerts.rules import Alert

LATENCY_BUCKETS = (
    0.01,
    0.025,
    0.05,
    0.1,
    0.15,
    0.2,
    0.25,
    0.3,
    0.35,
    0.4,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1800.0,
)
DURATION_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
SIZE_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
# Flush stages besides one per sink (named after it).
FLUSH_STAGES = ("alerts", "total")
REBALANCE_EVENTS = ("assign", "revoke", "lost")


@dataclass(slots=True)
class FlushReport:
    """What one flush did: the unit the ledger records."""

    partition: int
    messages: int
    records: int
    inserted: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    rejected_rows: int = 0
    alerts: list[Alert] = field(default_factory=list)  # stored for the first time
    written: Counter[str] = field(default_factory=Counter)  # readings taken, per sink
    refused: Counter[str] = field(default_factory=Counter)  # items refused alone, per sink
    skipped: list[str] = field(default_factory=list)  # best-effort sinks that did not take it
    stage_seconds: dict[str, float] = field(default_factory=dict)  # per sink
    alert_seconds: float = 0.0
    total_seconds: float = 0.0
    db_writes: int = 0  # transactions committed (more than one when the batch was bisected)
    db_committed_at: float = 0.0  # wall clock of the (last) DB commit: the e2e latency end


@dataclass(frozen=True, slots=True)
class BatchStat:
    """One flushed batch as the summaries and sliding-window rates see it."""

    batch_id: int
    partition: int
    at: float
    size: int
    messages: int
    success: int
    duplicates: int
    errors: int
    total_s: float
    alerts_s: float
    stage_s: dict[str, float]  # per sink

    @property
    def throughput(self) -> float:
        return self.size / self.total_s if self.total_s > 0 else 0.0


@dataclass(slots=True)
class PartitionCounters:
    """Lifetime totals of one partition on this replica."""

    messages: int = 0
    records: int = 0
    inserted: int = 0
    duplicates: int = 0
    errors: int = 0  # dead-lettered messages and DB-rejected rows
    batches: int = 0
    last_flush_at: float | None = None


class Histogram:
    """Bucket counts fed many values under one lock (prometheus-client takes one per value)."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # last slot: above the largest bound
        self.sum = 0.0

    def observe_many(self, values: Iterable[float]) -> None:
        bounds, counts = self.bounds, self.counts
        total = 0.0
        for value in values:
            counts[bisect_left(bounds, value)] += 1
            total += value
        self.sum += total

    def copy(self) -> Histogram:
        out = Histogram(self.bounds)
        out.counts, out.sum = list(self.counts), self.sum
        return out


@dataclass(slots=True)
class Totals:
    """A consistent copy of every counter, for one observer read."""

    messages_consumed: int = 0
    records_consumed: int = 0
    unkeyed_messages: int = 0
    records_written: Counter[str] = field(default_factory=Counter)  # per sink
    records_duplicate: int = 0
    records_rejected: int = 0
    batches: int = 0
    messages_flushed: int = 0
    records_flushed: int = 0
    errors: int = 0
    retries: Counter[str] = field(default_factory=Counter)  # per sink ("mysql": rules too)
    skipped_batches: Counter[str] = field(default_factory=Counter)  # per best-effort sink
    refused: Counter[str] = field(default_factory=Counter)  # items refused alone, per sink
    pauses: int = 0
    commits_ok: int = 0
    commits_failed: int = 0
    rebalances: Counter[str] = field(default_factory=Counter)
    dead_letters: Counter[str] = field(default_factory=Counter)
    alerts_fired: Counter[str] = field(default_factory=Counter)
    timestamps_from_kafka: int = 0  # readings without a timestamp, stored at the message time
    binding_queries: int = 0
    binding_hits: int = 0
    binding_misses: int = 0
    batch_size: Histogram = field(default_factory=lambda: Histogram(SIZE_BUCKETS))
    flush_duration: dict[str, Histogram] = field(
        default_factory=lambda: {s: Histogram(DURATION_BUCKETS) for s in FLUSH_STAGES}
    )  # per sink, plus FLUSH_STAGES
    e2e_latency: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS))


class Ledger:
    def __init__(self, keep_batches: int = 1000, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._t = Totals()
        self._partitions: dict[int, PartitionCounters] = {}
        self._recent: deque[BatchStat] = deque(maxlen=keep_batches)

    # --- the poll thread --------------------------------------------------------------------

    def consumed(
        self,
        messages: int,
        records: int,
        unkeyed: int,
        timestamps_from_kafka: int = 0,
    ) -> None:
        with self._lock:
            self._t.messages_consumed += messages
            self._t.records_consumed += records
            self._t.unkeyed_messages += unkeyed
            self._t.timestamps_from_kafka += timestamps_from_kafka

    def paused(self) -> None:
        with self._lock:
            self._t.pauses += 1

    def rebalanced(self, event: str) -> None:
        with self._lock:
            self._t.rebalances[event] += 1

    def committed(self, ok: bool) -> None:
        with self._lock:
            if ok:
                self._t.commits_ok += 1
            else:
                self._t.commits_failed += 1

    # --- the workers ------------------------------------------------------------------------

    def dead_lettered(self, reasons: Iterable[str]) -> None:
        with self._lock:
            self._t.dead_letters.update(reasons)

    def bound(self, hits: int, misses: int, queries: int) -> None:
        """One device-binding lookup: cache hits, misses and the queries they cost."""
        with self._lock:
            self._t.binding_hits += hits
            self._t.binding_misses += misses
            self._t.binding_queries += queries

    def retried(self, stage: str) -> None:
        """A write (or the DB look-ups before the sinks, "mysql") will be retried."""
        with self._lock:
            self._t.retries[stage] += 1

    def flushed(self, report: FlushReport, timestamps_ms: list[int]) -> BatchStat:
        """Record one durable flush: counters, histograms, e2e latency, the batch record."""
        now = self._clock()
        end_ms = (report.db_committed_at or now) * 1000.0
        latencies = [(end_ms - ts) / 1000.0 for ts in timestamps_ms if ts > 0]
        stat = BatchStat(
            next(self._ids),
            report.partition,
            now,
            report.records,
            report.messages,
            report.inserted,
            report.duplicates,
            report.dead_letters,
            report.total_seconds,
            report.alert_seconds,
            dict(report.stage_seconds),
        )
        t = self._t
        with self._lock:
            t.batches += 1
            t.messages_flushed += report.messages
            t.records_flushed += report.records
            t.errors += report.dead_letters
            t.records_written.update(report.written)
            t.records_duplicate += report.duplicates
            t.records_rejected += report.rejected_rows
            t.refused.update(report.refused)
            t.skipped_batches.update(report.skipped)
            t.alerts_fired.update(a.rule.rule_type for a in report.alerts)
            t.batch_size.observe_many((report.records,))
            stages = dict(report.stage_seconds)
            stages.update(alerts=report.alert_seconds, total=report.total_seconds)
            for stage, seconds in stages.items():
                histogram = t.flush_duration.get(stage)
                if histogram is None:
                    histogram = t.flush_duration[stage] = Histogram(DURATION_BUCKETS)
                histogram.observe_many((seconds,))
            t.e2e_latency.observe_many(latencies)
            p = self._partitions.setdefault(report.partition, PartitionCounters())
            p.messages += report.messages
            p.records += report.records
            p.inserted += report.inserted
            p.duplicates += report.duplicates
            p.errors += report.dead_letters
            p.batches += 1
            p.last_flush_at = now
            self._recent.append(stat)
        return stat

    # --- observers --------------------------------------------------------------------------

    def totals(self) -> Totals:
        with self._lock:
            t = self._t
            return replace(
                t,
                rebalances=Counter(t.rebalances),
                records_written=Counter(t.records_written),
                retries=Counter(t.retries),
                skipped_batches=Counter(t.skipped_batches),
                refused=Counter(t.refused),
                dead_letters=Counter(t.dead_letters),
                alerts_fired=Counter(t.alerts_fired),
                batch_size=t.batch_size.copy(),
                flush_duration={s: h.copy() for s, h in t.flush_duration.items()},
                e2e_latency=t.e2e_latency.copy(),
            )

    def partition(self, partition: int) -> PartitionCounters:
        with self._lock:
            return replace(self._partitions.get(partition) or PartitionCounters())

    def recent(self, since_id: int = 0) -> list[BatchStat]:
        """Batches still remembered, oldest first; `since_id` skips those already seen."""
        with self._lock:
            return [s for s in self._recent if s.batch_id > since_id]
