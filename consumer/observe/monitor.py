"""The monitor thread: samples lag, probes dependencies, checks ops alerts, logs summaries.

It keeps the latest snapshot so the HTTP thread and the Prometheus collector answer from
memory, without touching Kafka or the DB on a request. It uses Kafka clients of its own
(never the poll thread's consumer): one reads the group's committed offsets and the high
watermarks — fetched from the broker each time, because librdkafka's cached watermark
freezes while a partition is paused — and one peeks at the next unconsumed message when a
partition has lag but nothing in flight, so time lag comes from real timestamps.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import psutil
from confluent_kafka import Consumer, KafkaException, TopicPartition

from consumer.dependencies import Dependencies
from consumer.observe import stats
from consumer.observe.health import (
    REQUIRED_DEPENDENCIES,
    HealthInputs,
    HealthThresholds,
    HealthVerdict,
    judge,
)
from consumer.observe.lag import LagSample, LagStatus, LagWindow
from consumer.observe.ops_alerts import AlertEngine
from consumer.observe.ops_rules import Observation
from consumer.pipeline.ledger import BatchStat, Ledger
from consumer.pipeline.view import LoopView
from consumer.settings import Settings

log = logging.getLogger(__name__)

TICK_S = 0.5


@dataclass(frozen=True, slots=True)
class PartitionLag:
    status: LagStatus
    offset_lag: int
    time_lag_s: float
    committed: int | None
    high_watermark: int
    sampled_at: float


@dataclass(frozen=True, slots=True)
class Resources:
    rss_mb: float = 0.0
    process_memory_percent: float = 0.0
    process_cpu_percent: float = 0.0  # of the whole machine
    threads: int = 0
    open_files: int = 0
    system_memory_percent: float = 0.0
    system_cpu_percent: float = 0.0


class Probe(Protocol):
    """A sink as the monitor sees it (observers do not import sinks): the dependency it
    names, whether the offset waits for it, and a probe of that dependency."""

    @property
    def dependency(self) -> str: ...

    @property
    def policy(self) -> str: ...

    def health(self) -> tuple[bool, str | None] | None: ...


class Monitor:
    def __init__(
        self,
        settings: Settings,
        view: Callable[[], LoopView],
        ledger: Ledger,
        dependencies: Dependencies,
        probes: Sequence[Probe],
        alerts: AlertEngine,
    ) -> None:
        self.settings = settings
        self.view = view
        self.ledger = ledger
        self._summarized_id = 0  # batches up to this id are in an earlier summary
        self.dependencies = dependencies
        self.probes = tuple(probes)
        self.required = REQUIRED_DEPENDENCIES | {
            p.dependency for p in self.probes if p.policy == "required"
        }
        self.alerts = alerts
        self.thresholds = HealthThresholds()
        self.lag: dict[int, PartitionLag] = {}
        self.resources = Resources()
        self._windows: dict[int, LagWindow] = {}
        self._process = psutil.Process()
        self._process.cpu_percent(None)  # first call primes the measurement
        psutil.cpu_percent(None)
        self._cores = psutil.cpu_count() or 1
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="monitor", daemon=True)
        base = {"bootstrap.servers": settings.kafka_bootstrap_servers, **settings.kafka_client}
        self._offsets = Consumer(
            {**base, "group.id": settings.kafka_group_id, "enable.auto.commit": False}
        )
        self._peek = Consumer(
            {
                **base,
                "group.id": f"{settings.kafka_group_id}.lag-probe-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "enable.partition.eof": False,
            }
        )

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for client in (self._offsets, self._peek):
            with contextlib.suppress(RuntimeError):
                client.close()

    # --- the thread -----------------------------------------------------------------------

    def _run(self) -> None:
        s = self.settings
        next_lag = next_alert = time.monotonic()
        next_summary = time.monotonic() + s.metrics_summary_interval_s
        while not self._stop.wait(TICK_S):
            now = time.monotonic()
            try:
                self._sample_resources()
                if now >= next_lag:
                    next_lag = now + s.lag_sample_interval_s
                    self._probe_dependencies()
                    self._sample_lag()
                if now >= next_alert:
                    next_alert = now + s.alert_check_interval_s
                    self.alerts.check(self.observation())
                if now >= next_summary:
                    next_summary = now + s.metrics_summary_interval_s
                    self._summary()
            except Exception:  # the monitor must outlive any one failed probe
                log.exception("monitor tick failed")

    def _sample_resources(self) -> None:
        p = self._process
        with p.oneshot():
            rss = p.memory_info().rss
            self.resources = Resources(
                rss_mb=round(rss / 1_048_576, 1),
                process_memory_percent=round(p.memory_percent(), 2),
                process_cpu_percent=round(p.cpu_percent(None) / self._cores, 1),
                threads=p.num_threads(),
                open_files=p.num_fds(),
                system_memory_percent=psutil.virtual_memory().percent,
                system_cpu_percent=psutil.cpu_percent(None),
            )

    def _probe_dependencies(self) -> None:
        """Each sink probes its own dependency; one that says None is watched elsewhere
        (Kafka: by the poll loop)."""
        for probe in self.probes:
            answer = probe.health()
            if answer is not None:
                self.dependencies.report(probe.dependency, *answer)

    def _sample_lag(self) -> None:
        topic = self.settings.kafka_topic
        owned = dict(self.view().partitions)
        for p in [p for p in self._windows if p not in owned]:
            del self._windows[p]
            self.lag.pop(p, None)
        if not owned:
            return
        tps = [TopicPartition(topic, p) for p in owned]
        try:
            committed = {tp.partition: tp.offset for tp in self._offsets.committed(tps, 5)}
            highs = {
                p: self._offsets.get_watermark_offsets(
                    TopicPartition(topic, p), timeout=5, cached=False
                )[1]
                for p in owned
            }
        except KafkaException as exc:
            self.dependencies.report("kafka", False, str(exc))
            return
        self.dependencies.report("kafka", True)
        now = time.time()
        for p, state in owned.items():
            offset = committed.get(p)
            position = offset if offset is not None and offset >= 0 else None
            high = highs[p]
            window = self._windows.setdefault(p, LagWindow(self.settings.lag_window_s))
            sample = LagSample(now, position, high)
            window.add(sample)
            time_lag = 0.0
            if sample.lag > 0:
                oldest = state.oldest_pending_timestamp_ms
                if oldest is None:
                    oldest = self._peek_timestamp_ms(p, position or 0)
                if oldest is not None and oldest > 0:
                    time_lag = max(0.0, now - oldest / 1000.0)
            self.lag[p] = PartitionLag(
                window.status(now), sample.lag, round(time_lag, 3), position, high, now
            )

    def _peek_timestamp_ms(self, partition: int, offset: int) -> int | None:
        """Timestamp of the next unconsumed message of a partition (read, never committed)."""
        try:
            self._peek.assign([TopicPartition(self.settings.kafka_topic, partition, offset)])
            for msg in self._peek.consume(1, timeout=1.0):
                if msg.error() is None:
                    return int(msg.timestamp()[1])
            return None
        finally:
            self._peek.unassign()

    def _summary(self) -> None:
        batches = self.ledger.recent(since_id=self._summarized_id)
        if batches:
            self._summarized_id = batches[-1].batch_id
        interval = self.settings.metrics_summary_interval_s
        summary = stats.summarize(batches, interval, time.time())
        log.info("summary", extra={"summary": summary})
        if self.settings.metrics_summary_file:
            try:
                stats.write_atomically(self.settings.metrics_summary_file, summary)
            except OSError as exc:
                log.warning("could not write METRICS_SUMMARY_FILE: %s", exc)

    # --- snapshots for the HTTP thread and the collector ----------------------------------

    def window(self, partition: int | None = None) -> list[BatchStat]:
        """The recent batches inside STATS_WINDOW_S (optionally of one partition)."""
        return stats.window(
            self.ledger.recent(), time.time(), self.settings.stats_window_s, partition
        )

    def processing_rate(self, partition: int | None = None) -> float:
        return stats.processing_rate(self.window(partition), self.settings.stats_window_s)

    def error_rate(self) -> float:
        return stats.error_rate(self.window())

    def queue_utilizations(self, view: LoopView | None = None) -> dict[int, float]:
        cap = self.settings.worker_queue_max_records
        view = view or self.view()
        return {p: pv.queued_records / cap for p, pv in view.partitions.items()}

    def poll_loop_alive(self, view: LoopView | None = None) -> bool:
        view = view or self.view()
        if view.failed is not None:
            return False
        if view.phase == "starting":  # waiting for dependencies: alive, not ready
            return True
        return time.monotonic() - view.last_poll_at <= self.settings.liveness_max_age_s

    def observation(self) -> Observation:
        deps = self.dependencies.snapshot()
        lag = dict(self.lag)
        return Observation(
            error_rate=self.error_rate(),
            max_queue_utilization=max(self.queue_utilizations().values(), default=0.0),
            memory_percent=max(
                self.resources.system_memory_percent, self.resources.process_memory_percent
            ),
            max_time_lag_s=max((pl.time_lag_s for pl in lag.values()), default=0.0),
            lag_statuses={p: pl.status for p, pl in lag.items()},
            dependencies_down=[name for name, st in deps.items() if not st.up],
        )

    def verdict(self) -> HealthVerdict:
        r = self.resources
        view = self.view()
        return judge(
            HealthInputs(
                error_rate=self.error_rate(),
                process_cpu_percent=r.process_cpu_percent,
                memory_percent=r.system_memory_percent,
                queue_utilization=max(self.queue_utilizations(view).values(), default=0.0),
                dependencies={n: st.up for n, st in self.dependencies.snapshot().items()},
                lag_statuses={p: pl.status for p, pl in dict(self.lag).items()},
                poll_loop_alive=self.poll_loop_alive(view),
                required_dependencies=frozenset(self.required),
            ),
            self.thresholds,
        )
