"""Wiring and lifecycle of one replica: settings -> sinks -> poll loop, plus signals."""

from __future__ import annotations

import gc
import logging
import os
import signal
import threading
from types import FrameType

from prometheus_client import CollectorRegistry, ProcessCollector

from consumer.dependencies import Dependencies
from consumer.health_alerts.reload import RuleReloader
from consumer.health_alerts.repository import RuleCache
from consumer.observe.api import Api
from consumer.observe.health import Band, HealthThresholds
from consumer.observe.http import Sidecar
from consumer.observe.monitor import Monitor
from consumer.observe.ops_alerts import AlertEngine
from consumer.observe.ops_rules import AlertThresholds
from consumer.observe.prometheus import ReplicaCollector
from consumer.observe.webhook import WebhookNotifier
from consumer.pipeline.batching import BatchPolicy
from consumer.pipeline.binding import BindingCache, DeviceDirectory
from consumer.pipeline.flush import Flusher, RetryPolicy, Sinks
from consumer.pipeline.ledger import Ledger
from consumer.pipeline.poll_loop import PollLoop
from consumer.pipeline.worker import PartitionWorker
from consumer.settings import Settings
from consumer.sinks.dlq import DeadLetterSink
from consumer.sinks.mysql import MySQLSink, make_engine
from consumer.sinks.redis import RedisSink
from consumer.startup import wait_for_dependencies

log = logging.getLogger(__name__)


class Replica:
    """One member of the consumer group with everything it writes to."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        url = settings.database_url.get_secret_value()
        self.engine = make_engine(url, settings.db_pool_size)
        self._stop = threading.Event()
        self.dependencies = Dependencies()
        self.ledger = Ledger()
        self.sinks = Sinks(
            topic=settings.kafka_topic,
            mysql=MySQLSink(self.engine, load_data=settings.db_load_data),
            redis=RedisSink(
                settings.redis_url.get_secret_value(),
                settings.redis_socket_timeout_s,
                settings.redis_retry_max_s,
                on_status=lambda up, err: self.dependencies.report("redis", up, err),
            ),
            dlq=DeadLetterSink(
                settings.kafka_bootstrap_servers,
                settings.dlq_topic,
                settings.kafka_client,
                settings.dlq_delivery_timeout_s,
            ),
        )
        self.rules = RuleCache(self.engine, settings.alert_rules_refresh_s)
        self.rule_reloader = RuleReloader(
            settings.redis_url.get_secret_value(), settings.redis_socket_timeout_s, self.rules
        )
        self.directory = DeviceDirectory(
            self.engine,
            BindingCache(settings.binding_cache_ttl_s, settings.binding_negative_ttl_s),
            self.ledger,
        )
        self.loop = PollLoop(settings, self._new_worker, self.ledger, self.dependencies)
        self.webhook = (
            WebhookNotifier(settings.alert_webhook_url) if settings.alert_webhook_url else None
        )
        self.alerts = AlertEngine(
            AlertThresholds(
                error_rate=settings.alert_error_rate,
                queue_utilization=settings.alert_queue_utilization,
                memory_percent=settings.alert_memory_percent,
                time_lag_s=settings.alert_time_lag_s,
            ),
            notify=self.webhook,
        )
        self.monitor = Monitor(
            settings, self.loop.view, self.ledger, self.dependencies, self.engine,
            self.sinks.redis, self.alerts,
        )  # fmt: skip
        self.monitor.thresholds = HealthThresholds(
            error_rate=Band(settings.health_error_rate_degraded,
                            settings.health_error_rate_unhealthy),
            resources_percent=Band(settings.health_resource_degraded_percent,
                                   settings.health_resource_unhealthy_percent),
            queue_utilization=Band(settings.health_queue_degraded,
                                   settings.health_queue_unhealthy),
        )  # fmt: skip
        self.registry = CollectorRegistry()
        self.registry.register(ReplicaCollector(self.monitor, self.ledger))
        ProcessCollector(registry=self.registry)
        self.sidecar = Sidecar(
            settings.http_host, settings.http_port, self.registry, Api(self.monitor).routes(),
            settings.http_max_connections, settings.http_timeout_s,
        )  # fmt: skip

    def _new_worker(self, partition: int) -> PartitionWorker:
        s = self.settings
        flusher = Flusher(
            partition, self.sinks, self.rules, self.dependencies, self.ledger,
            RetryPolicy(s.db_retry_initial_backoff_s, s.db_retry_max_backoff_s), self.directory,
        )  # fmt: skip
        policy = BatchPolicy(
            s.batch_max_records, s.batch_max_wait_ms / 1000.0, s.batch_eager,
            s.batch_min_wait_ms / 1000.0, s.batch_max_bytes,
        )  # fmt: skip
        return PartitionWorker(partition, flusher, policy)

    def request_stop(self) -> None:
        self._stop.set()
        self.loop.request_stop()

    def run(self) -> None:
        """Serve the sidecar at once, wait for MySQL and Kafka, then consume."""
        self.sidecar.start()
        self.monitor.start()
        self.rule_reloader.start()
        try:
            if wait_for_dependencies(self.settings, self.engine, self.dependencies, self._stop):
                self.loop.run()
        finally:
            self.rule_reloader.close()
            self.monitor.close()
            self.sidecar.close()
            if self.webhook is not None:
                self.webhook.close()
            self.sinks.dlq.close()
            self.sinks.redis.close()
            self.engine.dispose()


def install_signal_handlers(replica: Replica) -> None:
    """First SIGTERM/SIGINT: graceful drain. Second: exit now, commit nothing more."""
    received = threading.Event()

    def handle(signum: int, _frame: FrameType | None) -> None:
        if received.is_set():
            log.critical("second signal: exiting without flushing")
            os._exit(128 + signum)
        received.set()
        log.info("signal received, draining", extra={"signal": signal.Signals(signum).name})
        replica.request_stop()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)


def tune_gc() -> None:
    """The hot path allocates short-lived, acyclic objects (records, dicts) at ~100k/s, so
    the cyclic GC's default gen-0 threshold (700) ran it hundreds of times a second for
    nothing. Freezing start-up objects and raising the threshold gave ~12% throughput."""
    gc.freeze()
    gc.set_threshold(50_000, 50, 50)


def run(settings: Settings) -> None:
    replica = Replica(settings)
    install_signal_handlers(replica)
    tune_gc()
    replica.run()
