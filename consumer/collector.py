"""Prometheus gauges computed at scrape time from the replica's live state.

Nothing here is pushed from the hot path: queue depth, lag and health are read when
Prometheus asks. A revoked partition simply stops appearing, so its series disappear.
"""

from __future__ import annotations

import platform
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from consumer import __version__
from consumer.health import Status
from consumer.lag import LagStatus
from consumer.monitor import Monitor
from consumer.ops_alerts import RULES
from consumer.stats import Stats

P = "health_consumer_"


class ReplicaCollector(Collector):
    def __init__(self, monitor: Monitor, stats: Stats) -> None:
        self.monitor = monitor
        self.stats = stats

    def collect(self) -> Iterator[GaugeMetricFamily]:
        m = self.monitor
        loop = m.loop
        partitions = dict(loop.partitions)
        cap = m.settings.worker_queue_max_records

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
        for p, state in sorted(partitions.items()):
            queued = state.worker.queued_records
            depth.add_metric([str(p)], queued)
            util.add_metric([str(p)], queued / cap)
            paused.add_metric([str(p)], 1.0 if state.paused else 0.0)
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
            if p not in partitions:
                continue
            offset_lag.add_metric([str(p)], pl.offset_lag)
            time_lag.add_metric([str(p)], pl.time_lag_s)
            committed.add_metric([str(p)], -1 if pl.committed is None else pl.committed)
            high.add_metric([str(p)], pl.high_watermark)
            for s in LagStatus:
                status.add_metric([str(p), s.value], 1.0 if pl.status is s else 0.0)
        yield from (offset_lag, time_lag, committed, high, status)

        yield GaugeMetricFamily(
            P + "assigned_partitions", "Partitions owned by this replica", value=len(partitions)
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
            value=loop.stats.last_commit_at,
        )
        yield GaugeMetricFamily(
            P + "processing_rate_records_per_second",
            "Records flushed per second over the stats window",
            value=self.stats.processing_rate(),
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

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())
