"""One typed settings object, read from the environment (and an optional `.env`).

Validated once at start-up so a bad deployment fails fast with the variable's name,
instead of failing later on the hot path.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from typing import Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.kafka_client import kafka_client_properties

KAFKA_CLIENT_PREFIX = "KAFKA_CLIENT_"

# Properties the consumer must own: overriding them would break commit-after-flush.
_PROTECTED_CONSUMER_PROPS = frozenset(
    {"enable.auto.commit", "enable.auto.offset.store", "group.id", "bootstrap.servers"}
)


# What the dead-letter producer's no-loss promise rests on; a KAFKA_CLIENT_* value outside
# these is refused at start-up (not silently forced), like the gateway does.
_DLQ_SAFE_PRODUCER_VALUES = {
    "acks": frozenset({"all", "-1"}),
    "request.required.acks": frozenset({"all", "-1"}),
    "enable.idempotence": frozenset({"true"}),
}
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)


class ConfigError(Exception):
    """Start-up configuration problem; the message names each bad variable."""


class Settings(BaseSettings):
    """Every knob of one consumer replica. Env var = field name upper-cased."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    # Endpoints
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    kafka_topic: str = "health-data"
    kafka_group_id: str = "health-data-consumers"
    dlq_topic: str = "health-data.dlq"
    normalized_topic: str | None = None  # e.g. health-data.normalized (sinks/normalized.py)
    database_url: SecretStr = SecretStr("mysql+pymysql://root@127.0.0.1:3306/health")
    redis_url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")

    # Batching and flow control
    batch_max_records: int = Field(1000, ge=1, le=100_000)
    batch_max_wait_ms: int = Field(250, ge=1, le=600_000)
    batch_eager: bool = True
    batch_min_wait_ms: int = Field(20, ge=0, le=600_000)
    worker_queue_max_records: int = Field(5000, ge=2, le=10_000_000)
    # Memory is bounded in bytes too (messages as consumed; decoded they take about as
    # much again): per partition, the batch in flight and everything queued behind it.
    batch_max_bytes: int = Field(4 << 20, ge=64 << 10, le=1 << 30)
    worker_queue_max_bytes: int = Field(8 << 20, ge=128 << 10, le=4 << 30)
    max_readings_per_message: int = Field(1000, ge=1, le=100_000)
    max_message_bytes: int = Field(1 << 20, ge=1024, le=64 << 20)
    poll_batch_size: int = Field(1000, ge=1, le=100_000)
    # The zone the devices' naive local times are in: a reading without a timestamp gets
    # its Kafka message time converted to it (deterministic, so replays stay exact).
    device_timezone: str = "UTC"
    # A reading dated more than this after its message's time is dead-lettered
    # (future_timestamp), not stored: the latest state only moves forward.
    future_timestamp_horizon_s: float = Field(86_400.0, gt=0, le=10 * 366 * 86_400)
    # Length of the health table's time partitions the replicas keep ahead of the readings
    # (consumer.db.partition_keeper; size it with docs/capacity.md); 0: keep none.
    partition_minutes: int = Field(15, ge=0, le=1440)

    # Fault handling
    shutdown_timeout_s: float = Field(30.0, gt=0, le=3600)
    revoke_flush_timeout_s: float = Field(10.0, gt=0, le=600)
    db_retry_initial_backoff_s: float = Field(0.1, gt=0, le=60)
    db_retry_max_backoff_s: float = Field(5.0, gt=0, le=600)
    db_pool_size: int = Field(16, ge=1, le=512)
    db_load_data: bool = True
    redis_retry_max_s: float = Field(2.0, ge=0, le=600)
    redis_socket_timeout_s: float = Field(1.0, gt=0, le=60)
    dlq_delivery_timeout_s: float = Field(30.0, gt=0, le=3600)

    # Health alert rules
    alert_rules_refresh_s: float = Field(60.0, gt=0, le=86_400)
    binding_cache_ttl_s: float = Field(300.0, gt=0, le=86_400)
    binding_negative_ttl_s: float = Field(60.0, gt=0, le=86_400)

    # Sidecar / observability
    http_host: str = "127.0.0.1"
    http_port: int = Field(8000, ge=0, le=65_535)
    http_max_connections: int = Field(32, ge=1, le=10_000)
    http_timeout_s: float = Field(5.0, gt=0, le=300)
    metrics_summary_interval_s: float = Field(30.0, gt=0, le=86_400)
    metrics_summary_file: str | None = None
    stats_window_s: float = Field(60.0, gt=0, le=3600)
    lag_sample_interval_s: float = Field(5.0, gt=0, le=600)
    lag_window_s: float = Field(120.0, gt=0, le=86_400)
    liveness_max_age_s: float = Field(30.0, gt=0, le=3600)

    # Health thresholds: below `degraded` is healthy, below `unhealthy` degraded.
    health_error_rate_degraded: float = Field(0.05, ge=0, le=1)
    health_error_rate_unhealthy: float = Field(0.10, ge=0, le=1)
    health_resource_degraded_percent: float = Field(80.0, ge=0, le=100)
    health_resource_unhealthy_percent: float = Field(90.0, ge=0, le=100)
    health_queue_degraded: float = Field(0.70, ge=0, le=1)
    health_queue_unhealthy: float = Field(0.90, ge=0, le=1)

    # Operational alert rules (in process)
    alert_check_interval_s: float = Field(60.0, gt=0, le=86_400)
    alert_error_rate: float = Field(0.10, ge=0, le=1)
    alert_queue_utilization: float = Field(0.80, ge=0, le=1)
    alert_memory_percent: float = Field(80.0, ge=0, le=100)
    alert_time_lag_s: float = Field(300.0, gt=0)
    alert_webhook_url: str | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_format: Literal["json", "text"] = "json"

    # librdkafka pass-through, filled from KAFKA_CLIENT_* variables.
    kafka_client: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _collect_kafka_client(cls, data: Any) -> Any:
        if isinstance(data, dict) and "kafka_client" not in data:
            data = {
                **data,
                "kafka_client": kafka_client_properties(os.environ, KAFKA_CLIENT_PREFIX),
            }
        return data

    @field_validator("device_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"{value!r} is not an IANA time zone name (e.g. UTC, Asia/Shanghai)"
            ) from None
        return value

    @field_validator("database_url")
    @classmethod
    def _mysql_url(cls, value: SecretStr) -> SecretStr:
        check_database_url(value.get_secret_value())
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: SecretStr) -> SecretStr:
        check_redis_url(value.get_secret_value())
        return value

    @field_validator("http_host")
    @classmethod
    def _bindable_host(cls, value: str) -> str:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            if not _HOSTNAME.match(value):
                raise ValueError(
                    f"{value!r} is not an IP address or host name to listen on "
                    "(e.g. 127.0.0.1, or 0.0.0.0 for every interface)"
                ) from None
        return value

    @model_validator(mode="after")
    def _check_consistency(self) -> Settings:
        if self.kafka_topic == self.dlq_topic:
            raise ValueError("DLQ_TOPIC must differ from KAFKA_TOPIC")
        if self.batch_max_records > self.worker_queue_max_records:
            raise ValueError(
                "BATCH_MAX_RECORDS must not exceed WORKER_QUEUE_MAX_RECORDS "
                "(a batch could never fill before the partition pauses)"
            )
        if self.batch_max_bytes > self.worker_queue_max_bytes:
            raise ValueError(
                f"BATCH_MAX_BYTES ({self.batch_max_bytes}) must not exceed "
                f"WORKER_QUEUE_MAX_BYTES ({self.worker_queue_max_bytes}): a batch could "
                "never fill before the partition pauses"
            )
        if self.batch_min_wait_ms > self.batch_max_wait_ms:
            raise ValueError("BATCH_MIN_WAIT_MS must not exceed BATCH_MAX_WAIT_MS")
        for name in ("error_rate", "resource", "queue"):
            suffix = "_percent" if name == "resource" else ""
            low = getattr(self, f"health_{name}_degraded{suffix}")
            high = getattr(self, f"health_{name}_unhealthy{suffix}")
            if low > high:
                raise ValueError(
                    f"HEALTH_{name.upper()}_DEGRADED{suffix.upper()} must not exceed "
                    f"HEALTH_{name.upper()}_UNHEALTHY{suffix.upper()}"
                )
        ahead = partitions_ahead(self.partition_minutes, self.future_timestamp_horizon_s)
        if ahead > MAX_PARTITIONS_AHEAD:
            raise ValueError(
                f"PARTITION_MINUTES={self.partition_minutes} with FUTURE_TIMESTAMP_HORIZON_S="
                f"{self.future_timestamp_horizon_s:g} needs {ahead} time partitions ahead, over "
                f"{MAX_PARTITIONS_AHEAD} (MariaDB allows 8,192 per table, retention needs the "
                "rest): lengthen the partitions or shorten the horizon"
            )
        protected = _PROTECTED_CONSUMER_PROPS & self.kafka_client.keys()
        if protected:
            names = ", ".join(sorted(protected))
            raise ValueError(f"KAFKA_CLIENT_* may not override {names}: the consumer owns them")
        check_kafka_client(self.kafka_client)
        return self


# A quarter of MariaDB's 8,192 partitions per table; the rest hold the kept days.
MAX_PARTITIONS_AHEAD = 2048
PARTITION_KEEPER_INTERVAL_S = 600.0


def partitions_ahead(minutes: int, future_horizon_s: float) -> int:
    """How many time partitions the keeper holds ahead of now (0: none kept)."""
    if minutes == 0:
        return 0
    return math.ceil((future_horizon_s + PARTITION_KEEPER_INTERVAL_S) / (minutes * 60)) + 1


def _var(prop: str) -> str:
    return KAFKA_CLIENT_PREFIX + prop.upper().replace(".", "_")


def check_database_url(url: str) -> None:
    """The one driver installed (PyMySQL), a numeric port and a database name; the
    messages never repeat the URL, which may hold a password."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ValueError as exc:  # int() of the port
        raise ValueError(f"the port is not a number ({exc})") from None
    except ArgumentError:
        raise ValueError("not a URL; expected mysql+pymysql://user:password@host:3306/db") from None
    if parsed.drivername != "mysql+pymysql":
        raise ValueError(
            f"scheme {parsed.drivername}:// is not supported; use mysql+pymysql:// "
            "(PyMySQL is the only MySQL driver installed)"
        )
    if parsed.port is not None and not 0 < parsed.port < 65_536:
        raise ValueError(f"port {parsed.port} is out of range 1-65535")
    if not parsed.database:
        raise ValueError("no database name; expected mysql+pymysql://user@host:3306/db")


def check_redis_url(url: str) -> None:
    """redis://, rediss:// or unix://, a numeric port and database number."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ValueError("scheme must be redis://, rediss:// or unix:// (e.g. redis://host:6379/0)")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"bad port ({exc})") from None
    if port is not None and port == 0:
        raise ValueError("port 0 is not a Redis port")
    if parts.scheme != "unix":
        if not parts.hostname:
            raise ValueError("no host (e.g. redis://host:6379/0)")
        db = parts.path.lstrip("/")
        if db and not db.isdigit():
            raise ValueError(f"database {db!r} is not a number (e.g. redis://host:6379/0)")


def check_kafka_client(props: dict[str, str]) -> None:
    """Refuse what would weaken the dead-letter producer, and let librdkafka itself judge
    every KAFKA_CLIENT_* name and value now, rather than in a traceback after start-up."""
    for prop, safe in _DLQ_SAFE_PRODUCER_VALUES.items():
        value = props.get(prop)
        if value is not None and value.strip().lower() not in safe:
            raise ValueError(
                f"{_var(prop)}={value} would weaken the dead-letter producer, whose "
                f"acknowledgements the no-loss promise rests on; allowed: "
                f"{', '.join(sorted(safe))} (or leave it unset)"
            )
    if not props:
        return
    problem = _librdkafka_rejects(props)
    if problem is None:
        return
    for prop, value in props.items():  # librdkafka quotes the property it rejects
        if f'"{prop}"' in problem:
            raise ValueError(f"{_var(prop)}={value}: {problem}")
    names = ", ".join(_var(p) for p in sorted(props))
    raise ValueError(f"{names}: {problem}")


def _librdkafka_rejects(props: dict[str, str]) -> str | None:
    """librdkafka's complaint about `props` in a consumer or a producer, or None. No
    bootstrap servers are given, so nothing connects; log_level 0 keeps it quiet."""
    from confluent_kafka import Consumer, KafkaException, Producer

    quiet = {"log_level": 0}
    try:
        Consumer({"group.id": "healthstream-config-check", **props, **quiet}).close()
        Producer({**props, **quiet})
    except KafkaException as exc:
        return str(exc.args[0].str()).strip()
    return None


def load_settings(**overrides: Any) -> Settings:
    """Build and validate settings; raise ConfigError naming the variables at fault."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            msg = err["msg"].removeprefix("Value error, ")
            problems.append(f"{loc.upper()}: {msg}" if loc else msg)
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None
