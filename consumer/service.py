"""Wiring and lifecycle of one replica: settings -> sinks -> poll loop, plus signals.

Shutdown has one deadline, SHUTDOWN_TIMEOUT_S from the first SIGTERM, for everything: the
workers' drain gets all of it but `close_reserve_s`, which is left for the final commit,
leaving the group and closing the sinks; a watchdog exits the process at the deadline
whatever is still running. Keep SHUTDOWN_TIMEOUT_S below the orchestrator's grace period
(k8s `terminationGracePeriodSeconds`, 45 s in deploy/k8s) so SIGKILL never cuts a commit.
"""

from __future__ import annotations

import errno
import gc
import logging
import os
import signal
import socket
import threading
import time
from types import FrameType

from prometheus_client import CollectorRegistry, ProcessCollector

from consumer.db.partition_keeper import PartitionKeeper
from consumer.dependencies import Dependencies
from consumer.health_alerts.reload import RuleReloader
from consumer.health_alerts.repository import RuleCache
from consumer.observe.api import Api
from consumer.observe.health import Band, HealthThresholds
from consumer.observe.http import Route, Sidecar
from consumer.observe.monitor import Monitor
from consumer.observe.ops_alerts import AlertEngine
from consumer.observe.ops_rules import AlertThresholds
from consumer.observe.prometheus import ReplicaCollector
from consumer.observe.webhook import WebhookNotifier
from consumer.pipeline.batching import BatchPolicy
from consumer.pipeline.binding import BindingCache, DeviceDirectory
from consumer.pipeline.flush import Flusher, RetryPolicy
from consumer.pipeline.ledger import Ledger
from consumer.pipeline.poll_loop import PollLoop
from consumer.pipeline.worker import PartitionWorker
from consumer.settings import ConfigError, Settings
from consumer.sinks.base import SinkContext
from consumer.sinks.chain import Sinks, discover
from consumer.sinks.mysql import make_engine
from consumer.startup import wait_for_dependencies

log = logging.getLogger(__name__)

EXIT_SHUTDOWN_OVERRAN = 5


def close_reserve_s(shutdown_timeout_s: float) -> float:
    """The part of the shutdown deadline kept for commit, leaving the group and closing."""
    return min(10.0, shutdown_timeout_s / 3)


class Replica:
    """One member of the consumer group with everything it writes to."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        url = settings.database_url.get_secret_value()
        self.engine = make_engine(url, settings.db_pool_size)
        self._stop = threading.Event()
        self.dependencies = Dependencies()
        self.ledger = Ledger()
        context = SinkContext(settings, self.engine, self.dependencies)
        self.sinks = Sinks(settings.kafka_topic, tuple(discover(context)))
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
            settings, self.loop.view, self.ledger, self.dependencies, self.sinks.chain, self.alerts
        )
        self.monitor.thresholds = HealthThresholds(
            error_rate=Band(
                settings.health_error_rate_degraded, settings.health_error_rate_unhealthy
            ),
            resources_percent=Band(
                settings.health_resource_degraded_percent,
                settings.health_resource_unhealthy_percent,
            ),
            queue_utilization=Band(settings.health_queue_degraded, settings.health_queue_unhealthy),
        )
        self.keeper = (
            PartitionKeeper(
                make_engine(url, 1),
                settings.partition_minutes,
                settings.future_timestamp_horizon_s,
                settings.device_timezone,
            )
            if settings.partition_minutes
            else None
        )
        self.registry = CollectorRegistry()
        webhook = self.webhook
        dropped = None if webhook is None else (lambda: webhook.dropped)
        ahead = None if self.keeper is None else self.keeper.ahead_seconds
        self.registry.register(
            ReplicaCollector(
                self.monitor, self.ledger, self.sinks.chain, dropped, partitions_ahead=ahead
            )
        )
        ProcessCollector(registry=self.registry)
        self.sidecar = _bind_sidecar(settings, self.registry, Api(self.monitor).routes())
        self._deadline: float | None = None

    def _new_worker(self, partition: int) -> PartitionWorker:
        s = self.settings
        flusher = Flusher(
            partition,
            self.sinks,
            self.rules,
            self.dependencies,
            self.ledger,
            RetryPolicy(s.db_retry_initial_backoff_s, s.db_retry_max_backoff_s),
            self.directory,
        )
        policy = BatchPolicy(
            s.batch_max_records,
            s.batch_max_wait_ms / 1000.0,
            s.batch_eager,
            s.batch_min_wait_ms / 1000.0,
            s.batch_max_bytes,
        )
        return PartitionWorker(partition, flusher, policy)

    def request_stop(self) -> None:
        """Start the one shutdown deadline (the first call counts) and stop consuming."""
        if self._deadline is None:
            self._deadline = time.monotonic() + self.settings.shutdown_timeout_s
            _start_watchdog(self._deadline, self.settings.shutdown_timeout_s)
        self._stop.set()
        self.loop.request_stop(self._deadline - close_reserve_s(self.settings.shutdown_timeout_s))

    def _remaining(self, cap: float) -> float:
        if self._deadline is None:
            return cap
        return max(0.1, min(cap, self._deadline - time.monotonic()))

    def run(self) -> None:
        """Serve the sidecar at once, wait for MySQL and Kafka, then consume."""
        self.sidecar.start()
        self.monitor.start()
        self.rule_reloader.start()
        try:
            if wait_for_dependencies(
                self.settings, self.engine, self.dependencies, self._stop, self.sinks.chain
            ):
                if self.keeper is not None:
                    self.keeper.start()
                self.loop.run()
        finally:
            if self._deadline is None:  # the loop stopped by itself (a fault): same budget
                self._deadline = time.monotonic() + close_reserve_s(
                    self.settings.shutdown_timeout_s
                )
                _start_watchdog(self._deadline, self.settings.shutdown_timeout_s)
            self.rule_reloader.close()
            if self.keeper is not None:
                self.keeper.close()
            self.monitor.close()
            self.sidecar.close()
            if self.webhook is not None:
                self.webhook.close(self._remaining(5.0))
            for sink in reversed(self.sinks.chain):  # caches first, the dead letters last
                try:
                    sink.close(self._remaining(10.0))
                except Exception:  # one sink's close must not keep the others open
                    log.exception("closing a sink failed", extra={"sink": sink.name})
            self.engine.dispose()


def _bind_sidecar(
    settings: Settings, registry: CollectorRegistry, routes: dict[str, Route]
) -> Sidecar:
    """Bind the sidecar's port now; a port in use or a host that is not ours is a
    configuration mistake (exit 2 naming the variable), not a traceback."""
    where = f"{settings.http_host}:{settings.http_port}"
    try:
        return Sidecar(
            settings.http_host,
            settings.http_port,
            registry,
            routes,
            settings.http_max_connections,
            settings.http_timeout_s,
        )
    except socket.gaierror as exc:
        raise ConfigError(f"HTTP_HOST: cannot listen on {where}: {exc.strerror}") from None
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(f"HTTP_PORT: {where} is already in use") from None
        if exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
            raise ConfigError(
                f"HTTP_HOST: {settings.http_host} is not an address of this host ({exc.strerror})"
            ) from None
        if exc.errno == errno.EACCES:
            raise ConfigError(f"HTTP_PORT: no permission to listen on {where}") from None
        raise


def _start_watchdog(deadline: float, timeout_s: float) -> None:
    """Exit at the shutdown deadline whatever still runs (a hung DB call, a stuck close):
    uncommitted batches are re-read by the next owner, which is safe; SIGKILL mid-commit
    by the orchestrator is what the deadline exists to avoid."""

    def expire() -> None:
        time.sleep(max(0.0, deadline - time.monotonic()))
        log.critical(
            "shutdown did not finish within SHUTDOWN_TIMEOUT_S; exiting now",
            extra={"shutdown_timeout_s": timeout_s},
        )
        logging.shutdown()
        os._exit(EXIT_SHUTDOWN_OVERRAN)

    threading.Thread(target=expire, name="shutdown-watchdog", daemon=True).start()


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
