"""Wiring and lifecycle of one replica: settings -> sinks -> poll loop, plus signals."""

from __future__ import annotations

import logging
import os
import signal
import threading
from types import FrameType
from typing import Any

from consumer.db.migrate import check_schema
from consumer.dependencies import Dependencies
from consumer.flush import Sinks
from consumer.health_alerts.repository import RuleCache
from consumer.http import Sidecar, liveness
from consumer.metrics import Metrics
from consumer.poll_loop import PollLoop
from consumer.settings import Settings
from consumer.sinks.dlq import DeadLetterSink
from consumer.sinks.mysql import MySQLSink, make_engine
from consumer.sinks.redis import RedisSink
from consumer.topics import admin_client, ensure_topic, partition_count

log = logging.getLogger(__name__)


class Replica:
    """One member of the consumer group with everything it writes to."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        url = settings.database_url.get_secret_value()
        self.engine = make_engine(url, settings.db_pool_size)
        check_schema(self.engine, url)
        admin = admin_client(settings.kafka_bootstrap_servers, settings.kafka_client)
        source_partitions = partition_count(admin, settings.kafka_topic)
        ensure_topic(admin, settings.dlq_topic, partitions=min(source_partitions, 6))
        self.dependencies = Dependencies()
        self.metrics = Metrics()
        self.sinks = Sinks(
            topic=settings.kafka_topic,
            mysql=MySQLSink(self.engine),
            redis=RedisSink(
                settings.redis_url.get_secret_value(),
                settings.redis_socket_timeout_s,
                settings.redis_retry_max_s,
                on_status=lambda up, err: self.dependencies.report("redis", up, err),
            ),
            dlq=DeadLetterSink(
                settings.kafka_bootstrap_servers, settings.dlq_topic, settings.kafka_client
            ),
            rules=RuleCache(self.engine, settings.alert_rules_refresh_s),
            dependencies=self.dependencies,
            metrics=self.metrics,
            db_backoff_initial_s=settings.db_retry_initial_backoff_s,
            db_backoff_max_s=settings.db_retry_max_backoff_s,
        )
        self.loop = PollLoop(settings, self.sinks)
        self.sidecar = Sidecar(
            settings.http_host,
            settings.http_port,
            self.metrics,
            routes={
                "/livez": liveness(lambda: self.loop.stats.last_poll_at, max_age_s=30.0),
                "/readyz": self._readiness,
            },
        )

    def _readiness(self, _query: dict[str, list[str]]) -> tuple[int, Any]:
        deps = self.dependencies.snapshot()
        ready = self.loop.stats.joined and deps["kafka"].up and deps["mysql"].up
        body = {
            "ready": ready,
            "joined": self.loop.stats.joined,
            "partitions": sorted(self.loop.partitions),
            "dependencies": {name: state.up for name, state in deps.items()},
        }
        return (200 if ready else 503), body

    def run(self) -> None:
        self.sidecar.start()
        try:
            self.loop.run()
        finally:
            self.sidecar.close()
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
        replica.loop.request_stop()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)


def run(settings: Settings) -> None:
    replica = Replica(settings)
    install_signal_handlers(replica)
    replica.run()
