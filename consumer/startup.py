"""Start-up without dependencies: wait for MySQL and Kafka instead of dying on them.

A replica started during an outage (or before its database) serves its sidecar at once,
so the orchestrator sees it alive but not ready, and health names what is down. Each
attempt logs one line; the waits back off with jitter. Only what waiting cannot fix is
fatal (exit 2): an unmigrated database (an operator must run `health-consumer migrate`),
a database name the server does not know, and size limits that contradict each other.
Redis is not waited for: it is a cache, and the data path runs without it (degraded),
exactly as during an outage in the middle of a run. Every other sink says what it needs
(`Sink.ready`): start-up waits for the required ones.

Once Kafka answers, every size limit on the path is read and checked against the others
(`check_limits`): the broker's and the DLQ topic's limits come from the admin client, so a
dead letter the broker would refuse is caught here, not resent forever on the hot path.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol
from zoneinfo import ZoneInfo

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from consumer.db.migrate import SchemaNotReady, check_schema
from consumer.dependencies import Dependencies
from consumer.pipeline.poll_loop import ZONE_METADATA_PREFIX
from consumer.pipeline.retry import Backoff
from consumer.settings import ConfigError, Settings
from consumer.sinks.dlq import MAX_DETAIL_CHARS, letter_headers, letter_size, producer_max_bytes
from consumer.topics import (
    admin_client,
    broker_max_message_bytes,
    ensure_topic,
    partition_count,
    topic_max_message_bytes,
)

log = logging.getLogger(__name__)

KAFKA_TIMEOUT_S = 5.0
ER_BAD_DB_ERROR = 1049  # MySQL/MariaDB: unknown database
# Connections a replica needs besides one per flushing worker (rule loads, binding look-ups).
POOL_RESERVE = 1


class StartupRefused(ConfigError):
    """Settings that cannot work against what the servers report; exit 2, no retry."""


@dataclass(frozen=True, slots=True)
class Limits:
    """The sizes the servers report, read once Kafka answers."""

    partitions: int  # of the source topic: all of them may land on one replica
    broker_max_bytes: int  # smallest broker `message.max.bytes` (the topics' default)
    dlq_topic_max_bytes: int  # DLQ topic `max.message.bytes`
    source_topic_max_bytes: int  # source topic `max.message.bytes`


def dlq_bytes_needed(producer_max: int) -> int:
    """What the broker must accept for the DLQ producer's largest batch: its
    `message.max.bytes` plus lz4's worst-case growth on incompressible data and framing."""
    return producer_max + producer_max // 200 + 1024


def letter_overhead(settings: Settings) -> int:
    """Bytes a dead letter adds around the message value: its headers and framing."""
    headers = letter_headers(
        "x" * 32, "x" * MAX_DETAIL_CHARS, settings.kafka_topic, 10**9, 10**19, 10**13
    )
    return letter_size(b"k" * 64, None, headers)


def check_limits(settings: Settings, limits: Limits, pool_capacity: int) -> list[str]:
    """Check every size limit against the others. Raise StartupRefused for what would lose
    or stall data; return warnings (each naming both values) for what only degrades."""
    producer_max = producer_max_bytes(settings.kafka_client)
    needed = dlq_bytes_needed(producer_max)
    # The topic's max.message.bytes is what the broker enforces for it; the broker's
    # message.max.bytes is only its default, named to say where the value comes from.
    if needed > limits.dlq_topic_max_bytes:
        raise StartupRefused(
            f"KAFKA_CLIENT_MESSAGE_MAX_BYTES: the dead-letter producer's message.max.bytes="
            f"{producer_max} needs {needed} bytes with framing and compression, more than "
            f"the DLQ topic {settings.dlq_topic}'s max.message.bytes="
            f"{limits.dlq_topic_max_bytes} (the broker's default message.max.bytes is "
            f"{limits.broker_max_bytes}): the broker would refuse large dead letters. Lower "
            "KAFKA_CLIENT_MESSAGE_MAX_BYTES or raise the topic's max.message.bytes"
        )
    warnings = []
    overhead = letter_overhead(settings)
    if settings.max_message_bytes + overhead > producer_max:
        warnings.append(
            f"MAX_MESSAGE_BYTES={settings.max_message_bytes} plus {overhead} bytes of "
            f"dead-letter headers exceeds the dead-letter producer's message.max.bytes="
            f"{producer_max} (KAFKA_CLIENT_MESSAGE_MAX_BYTES): dead letters of messages over "
            f"{producer_max - overhead} bytes are truncated (size and sha256 kept in "
            "headers) and `dlq replay` refuses them"
        )
    source_max_value = limits.source_topic_max_bytes - 512
    if source_max_value > settings.max_message_bytes:
        warnings.append(
            f"the topic {settings.kafka_topic}'s max.message.bytes="
            f"{limits.source_topic_max_bytes} admits messages over MAX_MESSAGE_BYTES="
            f"{settings.max_message_bytes}: those are dead-lettered as message_too_large"
        )
    if settings.max_readings_per_message > settings.batch_max_records:
        most_per_batch = settings.batch_max_records - 1 + settings.max_readings_per_message
        warnings.append(
            f"MAX_READINGS_PER_MESSAGE={settings.max_readings_per_message} exceeds "
            f"BATCH_MAX_RECORDS={settings.batch_max_records}: a message is never split, so "
            f"one batch may hold up to {most_per_batch} records"
        )
    needed_connections = limits.partitions + POOL_RESERVE
    if pool_capacity < needed_connections:
        warnings.append(
            f"DB_POOL_SIZE={settings.db_pool_size} (+{pool_capacity - settings.db_pool_size} "
            f"overflow = {pool_capacity} connections) is below the {limits.partitions} "
            f"partitions of {settings.kafka_topic} one replica can own (+{POOL_RESERVE}): "
            f"with every partition here, flushes wait for a connection; set DB_POOL_SIZE >= "
            f"{needed_connections - (pool_capacity - settings.db_pool_size)}"
        )
    return warnings


def pool_capacity(engine: Engine) -> int:
    """Connections the engine's pool may open at once (size + overflow)."""
    pool = engine.pool
    size = pool.size() if hasattr(pool, "size") else 1
    return int(size) + max(0, int(getattr(pool, "_max_overflow", 0)))


def describe_db_error(exc: BaseException) -> str:
    """One line about a connection failure, without the URL (it may hold a password)."""
    orig = getattr(exc, "orig", None)
    args: tuple[object, ...] = tuple(getattr(orig, "args", ()))
    if len(args) >= 2 and isinstance(args[0], int):
        return f"({args[0]}) {args[1]}"
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"


def _check_mysql(engine: Engine, url: str) -> str | None:
    try:
        check_schema(engine, url)
    except SchemaNotReady:
        raise
    except DBAPIError as exc:
        orig_args = getattr(exc.orig, "args", ())
        if orig_args and orig_args[0] == ER_BAD_DB_ERROR:
            raise StartupRefused(
                f"DATABASE_URL: the server answers but {describe_db_error(exc)}; create the "
                "database, then run `health-consumer migrate`"
            ) from None
        return f"{type(exc).__name__}: {str(exc)[:300]}"
    except Exception as exc:
        return f"{type(exc).__name__}: {str(exc)[:300]}"
    return None


def check_group_zone(settings: Settings, committed_metadata: list[str]) -> None:
    """Refuse a DEVICE_TIMEZONE other than the one the group committed with (issue 18, S6):
    a reading without a timestamp is stored at its message time in that zone, so a
    replica with another zone would store a re-read message's reading a second time, at
    another time."""
    zones = {
        m[len(ZONE_METADATA_PREFIX) :]
        for m in committed_metadata
        if m.startswith(ZONE_METADATA_PREFIX)
    }
    others = sorted(zones - {settings.device_timezone})
    if others:
        raise StartupRefused(
            f"DEVICE_TIMEZONE={settings.device_timezone} but group {settings.kafka_group_id} "
            f"committed with {', '.join(others)} (in its committed offsets' metadata): readings "
            "without a timestamp would be stored at other times; use the group's zone, or a "
            "new KAFKA_GROUP_ID"
        )


def has_daylight_saving(zone: str) -> bool:
    """Whether the zone's offset differs between January and July of this year."""
    tz = ZoneInfo(zone)
    year = datetime.now(tz).year
    return (
        datetime(year, 1, 1, tzinfo=tz).utcoffset() != datetime(year, 7, 1, tzinfo=tz).utcoffset()
    )


def committed_metadata(settings: Settings, partitions: int) -> list[str]:
    """The metadata of the group's committed offsets on the source topic."""
    from confluent_kafka import Consumer, TopicPartition

    conf = {
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        **settings.kafka_client,
        "group.id": settings.kafka_group_id,
        "enable.auto.commit": False,
    }
    probe = Consumer(conf)
    try:
        asked = [TopicPartition(settings.kafka_topic, p) for p in range(partitions)]
        return [tp.metadata or "" for tp in probe.committed(asked, timeout=KAFKA_TIMEOUT_S)]
    finally:
        probe.close()


def _kafka_limits(settings: Settings) -> Limits:
    """The size limits Kafka reports; the dead-letter topic is created when missing."""
    admin = admin_client(settings.kafka_bootstrap_servers, settings.kafka_client)
    source = partition_count(admin, settings.kafka_topic, KAFKA_TIMEOUT_S)
    ensure_topic(admin, settings.dlq_topic, min(source, 6), timeout_s=KAFKA_TIMEOUT_S)
    return Limits(
        partitions=source,
        broker_max_bytes=broker_max_message_bytes(admin, KAFKA_TIMEOUT_S),
        dlq_topic_max_bytes=topic_max_message_bytes(admin, settings.dlq_topic, KAFKA_TIMEOUT_S),
        source_topic_max_bytes=topic_max_message_bytes(
            admin, settings.kafka_topic, KAFKA_TIMEOUT_S
        ),
    )


def _check_kafka(settings: Settings) -> tuple[str | None, Limits | None, list[str]]:
    """The source topic must exist and the group's committed offsets must be readable (a
    group coordinator still loading after a restart is an outage to wait out, not a
    crash): (problem, limits, the committed offsets' metadata)."""
    try:
        limits = _kafka_limits(settings)
        metadata = committed_metadata(settings, limits.partitions)
    except Exception as exc:
        return f"{type(exc).__name__}: {str(exc)[:300]}", None, []
    return None, limits, metadata


class Ready(Protocol):
    """A sink as start-up sees it: what keeps it from taking batches, if anything."""

    @property
    def dependency(self) -> str: ...

    @property
    def policy(self) -> str: ...

    def ready(self) -> str | None: ...


def wait_for_dependencies(
    settings: Settings,
    engine: Engine,
    dependencies: Dependencies,
    stop: threading.Event,
    sinks: Sequence[Ready] = (),
    backoff: Backoff | None = None,
) -> bool:
    """Return True once MySQL (migrated), Kafka and every required sink answer; False if
    stopped first. A best-effort sink's problem is reported, never waited for.

    Raises SchemaNotReady when the database answers but is not migrated, StartupRefused
    when it does not exist or the size limits contradict each other.
    """
    backoff = backoff or Backoff(0.5, 15.0)
    url = settings.database_url.get_secret_value()
    while not stop.is_set():
        kafka, limits, metadata = _check_kafka(settings)
        problems = {"mysql": _check_mysql(engine, url), "kafka": kafka}
        for name, problem in problems.items():
            dependencies.report(name, problem is None, problem)
        down = {name: p for name, p in problems.items() if p is not None}
        if not down:  # a sink's check may need what the checks above made sure of
            for sink in sinks:
                problem = sink.ready()
                if problem is not None:
                    dependencies.report(sink.dependency, False, problem)
                    if sink.policy == "required":
                        down[sink.dependency] = problem
        if not down and limits is not None:
            for warning in check_limits(settings, limits, pool_capacity(engine)):
                log.warning("limit check: %s", warning)
            check_group_zone(settings, metadata)
            if has_daylight_saving(settings.device_timezone):
                log.warning(
                    "DEVICE_TIMEZONE %s has daylight saving time: a reading without a "
                    "timestamp in the hour the clocks go back gets the same local time as "
                    "one of the hour before; a zone without DST (UTC, Asia/Shanghai) has no "
                    "such hour",
                    settings.device_timezone,
                )
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
