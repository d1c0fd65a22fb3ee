"""Prometheus exposition of one replica, built at scrape time (prefix `health_consumer_`).

Nothing is pushed from the hot path: counters and histograms are the ledger's totals,
gauges come from the pipeline's view and the monitor's latest samples. A revoked
partition simply stops appearing, so its gauge series disappear.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from consumer import __version__
from consumer.health_alerts.repository import UNUSABLE_RULES, UnusableRules
from consumer.observe.health import Status
from consumer.observe.lag import LagStatus
from consumer.observe.monitor import Monitor
from consumer.observe.ops_rules import RULES
from consumer.pipeline.ledger import FLUSH_STAGES, REBALANCE_EVENTS, Histogram, Ledger
from consumer.pipeline.reasons import DeadLetterReason

P = "health_consumer_"
Family = CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily

# Known label values exist from the start, so dashboards show 0 instead of no data.
DEAD_LETTER_REASONS = tuple(DeadLetterReason)


class SinkStats(Protocol):
    """A sink as the collector sees it (observers do not import sinks)."""

    @property
    def name(self) -> str: ...

    def stats(self) -> Mapping[str, int]: ...


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(P + name, doc, value=value)


def _labelled(
    name: str, doc: str, label: str, values: Mapping[str, int], known: Iterable[str] = ()
) -> CounterMetricFamily:
    family = CounterMetricFamily(P + name, doc, labels=[label])
    for key in sorted({*known, *values}):
        family.add_metric([key], values.get(key, 0))
    return family


def _buckets(h: Histogram) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    running = 0
    for bound, count in zip([*h.bounds, float("inf")], h.counts, strict=True):
        running += count
        out.append(("+Inf" if bound == float("inf") else repr(bound), running))
    return out


class ReplicaCollector(Collector):
    def __init__(
        self,
        monitor: Monitor,
        ledger: Ledger,
        sinks: Sequence[SinkStats] = (),
        webhook_dropped: Callable[[], int] | None = None,
        unusable_rules: UnusableRules = UNUSABLE_RULES,
        partitions_ahead: Callable[[], float | None] | None = None,
    ) -> None:
        self.monitor = monitor
        self.ledger = ledger
        self.sinks = tuple(sinks)
        self.webhook_dropped = webhook_dropped
        self.unusable_rules = unusable_rules
        self.partitions_ahead = partitions_ahead

    def collect(self) -> Iterator[Family]:
        yield from self._counters()
        yield from self._gauges()

    def _counters(self) -> Iterator[Family]:
        t = self.ledger.totals()
        yield _counter("messages_consumed", "Kafka messages consumed", t.messages_consumed)
        yield _counter(
            "records_consumed", "Valid readings decoded from messages", t.records_consumed
        )
        yield _counter(
            "unkeyed_messages", "Messages without key accepted (one device)", t.unkeyed_messages
        )
        yield _counter(
            "readings_timestamp_from_kafka",
            "Readings without a timestamp, stored at the Kafka message time (DEVICE_TIMEZONE)",
            t.timestamps_from_kafka,
        )
        names = [sink.name for sink in self.sinks]
        yield _labelled(
            "records_written", "Records written, by sink", "sink", t.records_written, names
        )
        yield _counter(
            "records_duplicate", "Records already present in the DB", t.records_duplicate
        )
        yield _labelled(
            "records_failed", "Records that failed, by stage", "stage", {"db": t.records_rejected}
        )
        yield _labelled(
            "dead_letters",
            "Messages sent to the dead-letter topic",
            "reason",
            t.dead_letters,
            DEAD_LETTER_REASONS,
        )
        yield _labelled("health_alerts_fired", "Health alerts stored", "rule_type", t.alerts_fired)
        yield _labelled(
            "alert_rules_unusable",
            "Alert rules not evaluated (no evaluator for the rule_type, or an unknown "
            "physical_sign), each rule counted once",
            "reason",
            self.unusable_rules.counts(),
        )
        yield _labelled("rebalances", "Rebalance events", "event", t.rebalances, REBALANCE_EVENTS)
        yield _labelled(
            "commits", "Offset commits", "result", {"ok": t.commits_ok, "failed": t.commits_failed}
        )
        yield _counter(
            "db_retries",
            "DB calls (rules, bindings, the MySQL sink) retried after a retryable error",
            t.retries["mysql"],
        )
        yield _labelled(
            "sink_retries", "Writes a required sink retried, by sink", "sink", t.retries, names
        )
        yield _labelled(
            "sink_skipped_batches",
            "Batches a best-effort sink did not take (down, or failed), by sink",
            "sink",
            t.skipped_batches,
            names,
        )
        yield _labelled(
            "sink_refused_items",
            "Items a sink refused alone without failing the batch (Redis: a "
            "key's WRONGTYPE or script error), by sink",
            "sink",
            t.refused,
            names,
        )
        events = CounterMetricFamily(
            P + "sink_events",
            "Events a sink counts of its own (LOAD DATA redone, dead letters truncated, ...)",
            labels=["sink", "event"],
        )
        for sink in self.sinks:
            for event, count in sorted(sink.stats().items()):
                events.add_metric([sink.name, event], count)
        yield events
        if self.webhook_dropped is not None:
            yield _counter(
                "ops_webhook_dropped",
                "Ops-alert webhook events dropped (queue full, or still queued at close)",
                self.webhook_dropped(),
            )
        yield _counter("partition_pauses", "Partitions paused for backpressure", t.pauses)
        yield _counter(
            "binding_lookups", "Device-binding queries sent to the DB", t.binding_queries
        )
        yield _labelled(
            "binding_cache",
            "Device-binding cache look-ups, by result",
            "result",
            {"hit": t.binding_hits, "miss": t.binding_misses},
        )
        looked = t.binding_hits + t.binding_misses
        yield GaugeMetricFamily(
            P + "binding_cache_hit_ratio",
            "Device-binding cache hits / look-ups since start",
            value=t.binding_hits / looked if looked else 0.0,
        )
        yield HistogramMetricFamily(
            P + "batch_size_records",
            "Records per flushed batch",
            buckets=_buckets(t.batch_size),
            sum_value=t.batch_size.sum,
        )
        durations = HistogramMetricFamily(
            P + "flush_duration_seconds", "Flush time by stage", labels=["stage"]
        )
        for stage in FLUSH_STAGES:
            h = t.flush_duration[stage]
            durations.add_metric([stage], _buckets(h), h.sum)
        yield durations
        yield HistogramMetricFamily(
            P + "end_to_end_latency_seconds",
            "Kafka message CreateTime to DB commit",
            buckets=_buckets(t.e2e_latency),
            sum_value=t.e2e_latency.sum,
        )

    def _gauges(self) -> Iterator[Family]:
        ahead = None if self.partitions_ahead is None else self.partitions_ahead()
        if ahead is not None:  # absent: keeper off, or the table is not partitioned
            yield GaugeMetricFamily(
                P + "partitions_ahead_seconds",
                "How far the health table's last time partition reaches past now "
                "(DEVICE_TIMEZONE); readings past it land in p_future",
                value=ahead,
            )
        m = self.monitor
        view = m.view()
        depth = GaugeMetricFamily(
            P + "queue_depth_records",
            "Records queued in a partition's worker",
            labels=["partition"],
        )
        util = GaugeMetricFamily(
            P + "queue_utilization_ratio",
            "Queued records / WORKER_QUEUE_MAX_RECORDS",
            labels=["partition"],
        )
        paused = GaugeMetricFamily(
            P + "partition_paused",
            "1 while the partition is paused for backpressure",
            labels=["partition"],
        )
        utilization = m.queue_utilizations(view)
        for p, pv in sorted(view.partitions.items()):
            depth.add_metric([str(p)], pv.queued_records)
            util.add_metric([str(p)], utilization[p])
            paused.add_metric([str(p)], 1.0 if pv.paused else 0.0)
        yield from (depth, util, paused)

        offset_lag = GaugeMetricFamily(
            P + "offset_lag_records", "High watermark - committed offset", labels=["partition"]
        )
        time_lag = GaugeMetricFamily(
            P + "time_lag_seconds",
            "Age of the oldest unflushed or unconsumed record; 0 when caught up",
            labels=["partition"],
        )
        committed = GaugeMetricFamily(
            P + "committed_offset", "Group's committed offset", labels=["partition"]
        )
        high = GaugeMetricFamily(
            P + "high_watermark_offset", "Partition high watermark", labels=["partition"]
        )
        status = GaugeMetricFamily(
            P + "lag_status",
            "Burrow-style lag status (1 = current)",
            labels=["partition", "status"],
        )
        for p, pl in sorted(dict(m.lag).items()):
            if p not in view.partitions:
                continue
            offset_lag.add_metric([str(p)], pl.offset_lag)
            time_lag.add_metric([str(p)], pl.time_lag_s)
            committed.add_metric([str(p)], -1 if pl.committed is None else pl.committed)
            high.add_metric([str(p)], pl.high_watermark)
            for s in LagStatus:
                status.add_metric([str(p), s.value], 1.0 if pl.status is s else 0.0)
        yield from (offset_lag, time_lag, committed, high, status)

        yield GaugeMetricFamily(
            P + "assigned_partitions",
            "Partitions owned by this replica",
            value=len(view.partitions),
        )
        deps = GaugeMetricFamily(
            P + "dependency_up", "1 when the dependency answered last time", labels=["dependency"]
        )
        for name, st in m.dependencies.snapshot().items():
            deps.add_metric([name], 1.0 if st.up else 0.0)
        yield deps
        verdict = m.verdict().status
        health = GaugeMetricFamily(
            P + "health_status", "Overall health (1 = current)", labels=["status"]
        )
        for level in Status:
            health.add_metric([level.value], 1.0 if verdict is level else 0.0)
        yield health
        yield GaugeMetricFamily(
            P + "last_commit_timestamp_seconds",
            "Unix time of the last successful offset commit",
            value=view.last_commit_at,
        )
        yield GaugeMetricFamily(
            P + "processing_rate_records_per_second",
            "Records flushed per second over the stats window",
            value=m.processing_rate(),
        )
        firing = GaugeMetricFamily(
            P + "ops_alerts_firing", "1 while the operational alert fires", labels=["alert"]
        )
        active = {a.name for a in m.alerts.firing()}
        for name in (rule.name for rule in RULES):
            firing.add_metric([name], 1.0 if name in active else 0.0)
        yield firing
        info = GaugeMetricFamily(
            P + "build_info", "Build information", labels=["version", "python"]
        )
        info.add_metric([__version__, platform.python_version()], 1.0)
        yield info

    def describe(self) -> Iterator[Family]:
        return iter(())
