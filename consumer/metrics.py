"""Prometheus metrics of the data path (prefix `health_consumer_`, base units, bounded labels).

Updated per batch, never per message, so the hot path pays a few lock acquisitions per
flush. Gauges that describe current state (lag, queue depth) are computed at scrape time
by the sidecar's collector instead of being pushed from the workers.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from consumer.flush import FlushReport as FlushReportLike

LATENCY_BUCKETS = (
    0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0,
    30.0, 60.0,
    120.0, 300.0, 600.0, 1800.0,
)  # fmt: skip
DURATION_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
SIZE_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)


# `_created` samples double every counter's series and no dashboard or rule reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped upstream

DEAD_LETTER_REASONS = (
    "invalid_json", "invalid_envelope", "empty_envelope", "too_many_readings",
    "missing_device_sn", "invalid_timestamp", "schema_violation", "key_mismatch",
    "unkeyed_mixed_devices", "null_value", "db_rejected",
)  # fmt: skip


class Metrics:
    """All counters and histograms of one replica, on its own registry (tests make many)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        p = "health_consumer_"
        self.messages_consumed = Counter(
            p + "messages_consumed", "Kafka messages consumed", registry=r
        )
        self.records_consumed = Counter(
            p + "records_consumed", "Valid readings decoded from messages", registry=r
        )
        self.unkeyed_messages = Counter(
            p + "unkeyed_messages", "Messages without key accepted (one device)", registry=r
        )
        self.records_written = Counter(
            p + "records_written", "Records written, by sink", ["sink"], registry=r
        )
        self.records_duplicate = Counter(
            p + "records_duplicate", "Records already present in the DB", registry=r
        )
        self.records_failed = Counter(
            p + "records_failed", "Records that failed, by stage", ["stage"], registry=r
        )
        self.dead_letters = Counter(
            p + "dead_letters", "Messages sent to the dead-letter topic", ["reason"], registry=r
        )
        self.alerts_fired = Counter(
            p + "health_alerts_fired", "Health alerts stored", ["rule_type"], registry=r
        )
        self.rebalances = Counter(p + "rebalances", "Rebalance events", ["event"], registry=r)
        self.commits = Counter(p + "commits", "Offset commits", ["result"], registry=r)
        self.db_retries = Counter(
            p + "db_retries", "DB write attempts retried after an error", registry=r
        )
        self.redis_errors = Counter(
            p + "redis_errors", "Batches whose Redis update was skipped", registry=r
        )
        self.pauses = Counter(
            p + "partition_pauses", "Partitions paused for backpressure", registry=r
        )
        self.batch_size = Histogram(
            p + "batch_size_records",
            "Records per flushed batch",
            buckets=SIZE_BUCKETS,
            registry=r,
        )
        self.flush_duration = Histogram(
            p + "flush_duration_seconds",
            "Flush time by stage",
            ["stage"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.e2e_latency = BulkHistogram(
            p + "end_to_end_latency_seconds",
            "Kafka message CreateTime to DB commit",
            LATENCY_BUCKETS,
            registry=r,
        )
        # Known label values exist from the start, so dashboards show 0 instead of no data.
        for sink in ("mysql", "redis"):
            self.records_written.labels(sink)
        self.records_failed.labels("db")
        for reason in DEAD_LETTER_REASONS:
            self.dead_letters.labels(reason)
        for event in ("assign", "revoke", "lost"):
            self.rebalances.labels(event)
        for result in ("ok", "failed"):
            self.commits.labels(result)
        for stage in ("db", "redis", "alerts", "total"):
            self.flush_duration.labels(stage)


def observe_flush(metrics: Metrics, report: FlushReportLike, timestamps_ms: list[int]) -> None:
    """Record one flush: sizes, stage durations, outcomes, and per-message e2e latency."""
    metrics.batch_size.observe(report.records)
    metrics.flush_duration.labels("db").observe(report.db_seconds)
    metrics.flush_duration.labels("redis").observe(report.redis_seconds)
    metrics.flush_duration.labels("alerts").observe(report.alert_seconds)
    metrics.flush_duration.labels("total").observe(report.total_seconds)
    metrics.records_written.labels("mysql").inc(report.inserted)
    if report.duplicates:
        metrics.records_duplicate.inc(report.duplicates)
    if report.rejected_rows:
        metrics.records_failed.labels("db").inc(report.rejected_rows)
    if report.redis_skipped:
        metrics.redis_errors.inc()
    else:
        metrics.records_written.labels("redis").inc(report.records - report.rejected_rows)
    for alert in report.alerts:
        metrics.alerts_fired.labels(alert.rule.rule_type).inc()
    now_ms = (report.db_committed_at or time.time()) * 1000.0
    metrics.e2e_latency.observe_many([(now_ms - ts) / 1000.0 for ts in timestamps_ms if ts > 0])


class BulkHistogram(Collector):
    """A histogram fed a batch of values under one lock (one per flush, not per message).

    prometheus-client's Histogram takes a lock and scans its buckets for every value; at
    tens of thousands of messages a second that was a visible share of the CPU.
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        buckets: tuple[float, ...],
        registry: CollectorRegistry,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self._upper = list(buckets)
        self._counts = [0] * (len(buckets) + 1)  # last slot: above the largest bound
        self._sum = 0.0
        self._lock = threading.Lock()
        registry.register(self)

    def observe_many(self, values: list[float]) -> None:
        upper, counts = self._upper, self._counts
        with self._lock:
            for value in values:
                counts[bisect_left(upper, value)] += 1
            self._sum += sum(values)

    def observe(self, value: float) -> None:
        self.observe_many([value])

    def collect(self) -> Iterator[HistogramMetricFamily]:
        with self._lock:
            counts, total_sum = list(self._counts), self._sum
        cumulative, running = [], 0
        for bound, count in zip([*self._upper, float("inf")], counts, strict=True):
            running += count
            cumulative.append(("+Inf" if bound == float("inf") else repr(bound), running))
        yield HistogramMetricFamily(
            self.name, self.documentation, buckets=cumulative, sum_value=total_sum
        )

    def describe(self) -> Iterator[HistogramMetricFamily]:
        yield HistogramMetricFamily(self.name, self.documentation)
