"""Start-up without dependencies: wait for MySQL and Kafka instead of dying on them.

A replica started during an outage (or before its database) serves its sidecar at once,
so the orchestrator sees it alive but not ready, and health names what is down. Each
attempt logs one line; the waits back off with jitter. Only an unmigrated database is
fatal: waiting cannot fix it, an operator must run `health-consumer migrate`.
Redis is not waited for: it is a cache, and the data path runs without it (degraded),
exactly as during an outage in the middle of a run.
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy import Engine

from consumer.db.migrate import SchemaNotReady, check_schema
from consumer.dependencies import Dependencies
from consumer.pipeline.retry import Backoff
from consumer.settings import Settings
from consumer.topics import admin_client, ensure_topic, partition_count

log = logging.getLogger(__name__)

KAFKA_TIMEOUT_S = 5.0


def _check_mysql(engine: Engine, url: str) -> str | None:
    try:
        check_schema(engine, url)
    except SchemaNotReady:
        raise
    except Exception as exc:
        return f"{type(exc).__name__}: {str(exc)[:300]}"
    return None


def _check_kafka(settings: Settings) -> str | None:
    """The source topic must exist; the dead-letter topic is created when missing."""
    try:
        admin = admin_client(settings.kafka_bootstrap_servers, settings.kafka_client)
        source = partition_count(admin, settings.kafka_topic, KAFKA_TIMEOUT_S)
        ensure_topic(admin, settings.dlq_topic, min(source, 6), timeout_s=KAFKA_TIMEOUT_S)
    except Exception as exc:
        return f"{type(exc).__name__}: {str(exc)[:300]}"
    return None


def wait_for_dependencies(
    settings: Settings,
    engine: Engine,
    dependencies: Dependencies,
    stop: threading.Event,
    backoff: Backoff | None = None,
) -> bool:
    """Return True once MySQL (migrated) and Kafka answer; False if stopped first.

    Raises SchemaNotReady when the database answers but is not migrated.
    """
    backoff = backoff or Backoff(0.5, 15.0)
    url = settings.database_url.get_secret_value()
    while not stop.is_set():
        problems = {"mysql": _check_mysql(engine, url), "kafka": _check_kafka(settings)}
        for name, problem in problems.items():
            dependencies.report(name, problem is None, problem)
        down = {name: p for name, p in problems.items() if p is not None}
        if not down:
            if backoff.attempt:
                log.info("dependencies are up; starting to consume")
            return True
        delay = backoff.next_delay()
        log.warning(
            "waiting for dependencies before consuming",
            extra={"attempt": backoff.attempt, "down": down, "retry_in_s": round(delay, 2)},
        )
        stop.wait(delay)
    return False
