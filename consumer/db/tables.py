"""Table definitions with the legacy ljwx columns, so existing dashboards read them unchanged.

The Alembic migrations are the source of truth for the live schema; these Core tables
mirror them (the drift test compares them) for queries, for the sinks' column lists and as
the target that `consumer.db.adopt` brings a legacy database to.

Columns the consumer never writes are marked `server_filled` (see `legacy`): the server
default fills them (`is_deleted` 0, `user_name` 'heguang', ...), deliberately, so a
multi-row INSERT stays as short as the data it carries.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Date,
    DateTime,
    Enum,
    Index,
    Integer,
    MetaData,
    Numeric,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.mysql import DATETIME, DOUBLE, INTEGER, TINYINT

metadata = MetaData()

NOW = text("CURRENT_TIMESTAMP")
NOW3 = text("CURRENT_TIMESTAMP(3)")
NOW_ON_UPDATE = text("CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP")
TABLE_OPTIONS: dict[str, Any] = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4"}

# The members of the legacy `upload_method` ENUM column, in the legacy order (production
# appended 'esim' later). Not the uplinks a watch sends (schemas.clean.UPLOAD_METHODS):
# legacy_upload_method maps those onto these.
LEGACY_UPLOAD_METHOD_ENUM = ("wifi", "bluetooth", "common_event", "esim")
# The legacy column `upload_method_raw` holds the uplink the reading carried as the decoder
# normalized it (trimmed, lower-cased, at most 32 characters: not byte-for-byte raw), before
# the ENUM mapping. Its name is the legacy schema's; the legacy code cut nothing, we keep 64.
UPLOAD_METHOD_RAW_LENGTH = 64
ALERT_DESC_LENGTH = 2000  # as in production: the sink cuts longer descriptions
# Older than any reading the decoder accepts (2000-01-01): a row written by the legacy
# system, which has no data_timestamp, loses to every reading we merge into it.
OLDEST = text("'2000-01-01 00:00:00'")


def upsert_key(*columns: str, name: str) -> UniqueConstraint:
    """A unique key the consumer's idempotent writes rely on (adoption adds these)."""
    return UniqueConstraint(*columns, name=name, info={"upsert_key": True})


def legacy(column: Column[Any]) -> Column[Any]:
    """Mark a column the consumer leaves to its server default (or NULL)."""
    column.info["server_filled"] = True
    return column


def _audit_columns(time_null: bool) -> list[Column[Any]]:
    """The legacy who/when columns; written by the legacy admin tools, never by us."""
    return [
        legacy(Column("create_user", String(255))),
        legacy(Column("create_user_id", BigInteger)),
        legacy(Column("update_user", String(255))),
        legacy(Column("update_user_id", BigInteger)),
        legacy(Column("update_time", DateTime, nullable=time_null, server_default=NOW_ON_UPDATE)),
    ]


# Device SNs compare byte for byte, as Kafka keys and Redis keys do (issue 18, S4): two
# devices whose SNs differ only in case are two devices. Our schema since 0004; an
# adopted legacy table keeps its own collation (see docs/legacy-compatibility.md).
SN_COLLATION = "utf8mb4_bin"
SN_TYPE = String(255, collation=SN_COLLATION)


# Migration 0005 partitions our (not an adopted) table by `timestamp`, which makes its
# primary key (id, timestamp); Alembic compares neither, and adoption targets this table
# as written here, so the Core definition keeps PRIMARY KEY (id) for both.
health_data = Table(
    "t_user_health_data",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    # Written columns first, in the order `render_health_values` renders them.
    Column("device_sn", SN_TYPE, nullable=False),
    Column("user_id", BigInteger),
    Column("org_id", BigInteger),
    Column("customer_id", BigInteger, nullable=False, server_default=text("0")),
    Column("heart_rate", Integer),
    Column("pressure_high", Integer),
    Column("pressure_low", Integer),
    Column("blood_oxygen", Integer),
    Column("stress", Integer),
    Column("step", Integer),
    # Exact decimals where legacy has DOUBLE: readers get numbers either way.
    Column("temperature", Numeric(5, 2)),
    Column("latitude", Numeric(10, 6)),
    Column("longitude", Numeric(10, 6)),
    Column("altitude", Numeric(10, 2)),
    Column("distance", Numeric(12, 2)),
    Column("calorie", Numeric(12, 2)),
    Column("sleep", Numeric(6, 2)),
    Column("timestamp", DateTime, nullable=False, server_default=NOW),
    Column(
        "upload_method",
        Enum(*LEGACY_UPLOAD_METHOD_ENUM, native_enum=True, create_constraint=False),
        nullable=False,
        server_default=text("'wifi'"),
    ),
    # The uplink the reading carried, normalized by the decoder (see above), before
    # `legacy_upload_method` mapped it into the ENUM.
    Column("upload_method_raw", String(UPLOAD_METHOD_RAW_LENGTH)),
    legacy(Column("phone_number", String(20))),
    legacy(Column("user_name", String(255), nullable=False, server_default=text("'heguang'"))),
    legacy(Column("is_deleted", TINYINT(1), nullable=False, server_default=text("0"))),
    # When the row was written: lets operators and benchmarks measure ingest latency in SQL.
    legacy(Column("create_time", DATETIME(fsp=3), nullable=False, server_default=NOW3)),
    *_audit_columns(time_null=False),
    upsert_key("device_sn", "timestamp", name="uk_health_device_ts"),
    # Dashboards: one user's readings over time (legacy name); a customer's use its
    # (customer_id, ...) prefix. Device + time is the unique key. Every index costs every
    # insert (bench/bench_db.py, bench/db_variants.py): 0003 dropped (customer_id, timestamp).
    Index("idx_health_customer_user_time", "customer_id", "user_id", "timestamp"),
    **TABLE_OPTIONS,
)


DAILY_FIELDS = ("sleep_data", "exercise_daily_data", "workout_data", "scientific_sleep_data")
WEEKLY_FIELDS = ("exercise_week_data",)


def _slow_field_table(
    name: str, period: str, json_columns: tuple[str, ...], unique_name: str, suffix: str
) -> Table:
    """Daily and weekly rows: one per (device, period), slow fields merged newest-first."""
    short = period.split("_")[0]
    return Table(
        name,
        metadata,
        Column("id", BigInteger, primary_key=True, autoincrement=True),
        Column("device_sn", SN_TYPE, nullable=False),
        Column("customer_id", BigInteger),
        Column("org_id", BigInteger),
        Column("user_id", BigInteger),
        Column(period, Date, nullable=False),
        *(Column(c, JSON) for c in json_columns),
        # Reading time of the newest data merged in: a replay of older data only fills gaps.
        Column("data_timestamp", DateTime, nullable=False, server_default=OLDEST),
        legacy(Column("create_time", DateTime, nullable=False, server_default=NOW)),
        legacy(Column("update_time", DateTime, nullable=False, server_default=NOW_ON_UPDATE)),
        upsert_key("device_sn", period, name=unique_name),
        Index(f"idx_{suffix}_customer_{short}", "customer_id", period),
        Index(f"idx_{period}", period),
        **TABLE_OPTIONS,
    )


health_data_daily = _slow_field_table(
    "t_user_health_data_daily", "date", DAILY_FIELDS, "uk_device_date", "daily"
)
health_data_weekly = _slow_field_table(
    "t_user_health_data_weekly", "week_start", WEEKLY_FIELDS, "uk_device_week", "weekly"
)

# Written by the legacy admin side, read by us: nullability and defaults as in production.
alert_rules = Table(
    "t_alert_rules",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("rule_type", String(64), nullable=False, server_default=text("'metric'")),
    Column("physical_sign", String(64)),
    Column("threshold_min", Numeric(10, 2)),
    Column("threshold_max", Numeric(10, 2)),
    Column("deviation_percentage", Numeric(5, 2)),
    Column("trend_duration", Integer, server_default=text("1")),
    Column("parameters", JSON),
    Column("trigger_condition", Text),
    Column("alert_message", Text),
    Column("severity_level", String(16), server_default=text("'minor'")),
    Column("is_deleted", TINYINT(1), server_default=text("0")),
    Column("notification_type", String(50), server_default=text("'message'")),
    Column("customer_id", BigInteger, server_default=text("0")),
    Column("metric", String(64)),
    Column("event_type", String(64)),
    Column("dsl", JSON),
    Column("level", String(16), nullable=False, server_default=text("'minor'")),
    Column("notify", JSON),
    Column("is_enabled", SmallInteger, nullable=False, server_default=text("1")),
    Column("create_time", DateTime, nullable=False, server_default=NOW),
    *_audit_columns(time_null=False),
    UniqueConstraint(
        "rule_type",
        "physical_sign",
        "severity_level",
        "customer_id",
        name="uk_rule_type_physical_sign_severity_customer",
    ),
    Index("idx_rules_customer_enabled", "customer_id", "is_enabled", "is_deleted"),
    Index("idx_rules_metric", "metric", "is_enabled", "is_deleted"),
    Index("idx_rules_event_type", "event_type", "is_enabled", "is_deleted"),
    Index("idx_rules_level", "level", "is_enabled", "is_deleted"),
    **TABLE_OPTIONS,
)

alert_info = Table(
    "t_alert_info",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("rule_id", BigInteger, nullable=False),
    Column("alert_type", String(100), nullable=False),
    Column("device_sn", SN_TYPE, nullable=False),
    Column("alert_timestamp", DateTime, nullable=False),
    Column("alert_desc", String(ALERT_DESC_LENGTH)),
    Column("severity_level", String(50), nullable=False, server_default=text("'medium'")),
    Column("alert_status", String(50), nullable=False, server_default=text("'pending'")),
    # The t_user_health_data row of the reading that raised the alert.
    Column("health_id", BigInteger),
    Column("customer_id", BigInteger, nullable=False, server_default=text("0")),
    Column("org_id", BigInteger),
    Column("user_id", BigInteger),
    Column("source", String(16), nullable=False, server_default=text("'server'")),
    Column("metric", String(64)),
    Column("value", DOUBLE),
    Column("unit", String(16)),
    Column("level", String(16), nullable=False, server_default=text("'minor'")),
    Column("status", String(24), nullable=False, server_default=text("'NEW'")),
    Column("occur_at", DateTime, nullable=False, server_default=NOW),
    legacy(Column("assigned_user", String(255))),
    legacy(Column("assigned_user_id", BigInteger)),
    legacy(Column("is_deleted", TINYINT(1), server_default=text("0"))),
    legacy(Column("longitude", Numeric(12, 8), server_default=text("'22.54036796'"))),
    legacy(Column("latitude", Numeric(12, 8), server_default=text("'114.01508952'"))),
    legacy(Column("altitude", Numeric(10, 2), server_default=text("'0.00'"))),
    legacy(Column("responded_time", DateTime)),
    legacy(Column("response_duration", INTEGER(unsigned=True))),
    legacy(Column("event_type", String(64))),
    legacy(Column("dedup_key", String(128))),
    legacy(Column("throttle_until", DateTime)),
    legacy(Column("recover_at", DateTime)),
    legacy(Column("assigned_to", String(64))),
    legacy(Column("extend", JSON)),
    legacy(Column("create_time", DATETIME(fsp=3), nullable=False, server_default=NOW3)),
    *_audit_columns(time_null=True),
    upsert_key("device_sn", "rule_id", "alert_timestamp", name="uk_alert_device_rule_ts"),
    # The legacy KEY list minus the keys another key starts with (device_sn: the unique
    # key; org_id: org+user; user_id: user+time). Alerts are rare, so these cost little.
    Index("idx_rule_id", "rule_id"),
    Index("idx_alert_type", "alert_type"),
    Index("idx_alert_info_health_user", "health_id", "user_id"),
    Index("idx_alert_info_tenant_status", "customer_id", "alert_status"),
    Index("idx_alert_org_user", "org_id", "user_id"),
    Index("idx_alert_customer_user", "customer_id", "user_id"),
    Index("idx_alerts_status_level", "status", "level", "occur_at"),
    Index("idx_alerts_user_time", "user_id", "occur_at", "is_deleted"),
    Index("idx_alerts_metric_time", "metric", "occur_at", "is_deleted"),
    Index("idx_alerts_customer_status", "customer_id", "status", "occur_at"),
    Index("idx_alerts_dedup", "dedup_key", "throttle_until"),
    Index("idx_alerts_org_status", "org_id", "status", "level", "occur_at"),
    **TABLE_OPTIONS,
)

TABLES = (health_data, health_data_daily, health_data_weekly, alert_rules, alert_info)


def written_columns(table: Table, *skip: str) -> tuple[str, ...]:
    """The columns the consumer writes, in table order: all but the autoincrement id and
    the columns marked `legacy` (server-filled)."""
    return tuple(
        c.name
        for c in table.columns
        if not c.primary_key and not c.info.get("server_filled") and c.name not in skip
    )


# The sinks take their column lists from here, so a table change cannot drift from them.
HEALTH_COLUMNS = written_columns(health_data)
ALERT_COLUMNS = written_columns(alert_info)
