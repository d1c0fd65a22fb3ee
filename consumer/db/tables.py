"""Table definitions with the legacy column names, so existing dashboards read them unchanged.

The Alembic migrations are the source of truth for the live schema; these Core tables
mirror them for queries and for the migration drift test.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Date,
    DateTime,
    Index,
    Integer,
    MetaData,
    Numeric,
    SmallInteger,
    String,
    Table,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.mysql import DATETIME

metadata = MetaData()

NOW = text("CURRENT_TIMESTAMP")
NOW3 = text("CURRENT_TIMESTAMP(3)")

health_data = Table(
    "t_user_health_data",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("device_sn", String(64), nullable=False),
    Column("user_id", BigInteger),
    Column("org_id", BigInteger),
    Column("customer_id", BigInteger),
    Column("heart_rate", Integer),
    Column("pressure_high", Integer),
    Column("pressure_low", Integer),
    Column("blood_oxygen", Integer),
    Column("stress", Integer),
    Column("step", Integer),
    Column("temperature", Numeric(5, 2)),
    Column("latitude", Numeric(10, 6)),
    Column("longitude", Numeric(10, 6)),
    Column("altitude", Numeric(10, 2)),
    Column("distance", Numeric(12, 2)),
    Column("calorie", Numeric(12, 2)),
    Column("sleep", Numeric(6, 2)),
    Column("timestamp", DateTime, nullable=False),
    Column("upload_method", String(32)),
    # When the row was written: lets operators and benchmarks measure ingest latency in SQL.
    Column("create_time", DATETIME(fsp=3), nullable=False, server_default=NOW3),
    UniqueConstraint("device_sn", "timestamp", name="uk_health_device_ts"),
    Index("idx_health_customer_ts", "customer_id", "timestamp"),
)


DAILY_FIELDS = ("sleep_data", "exercise_daily_data", "workout_data", "scientific_sleep_data")
WEEKLY_FIELDS = ("exercise_week_data",)


def _slow_field_table(name: str, period: str, json_columns: tuple[str, ...], suffix: str) -> Table:
    """Daily and weekly rows: one per (device, period), slow fields merged newest-first."""
    return Table(
        name,
        metadata,
        Column("id", BigInteger, primary_key=True, autoincrement=True),
        Column("device_sn", String(64), nullable=False),
        Column("customer_id", BigInteger),
        Column("org_id", BigInteger),
        Column("user_id", BigInteger),
        Column(period, Date, nullable=False),
        *(Column(c, JSON) for c in json_columns),
        # Reading time of the newest data merged in: a replay of older data only fills gaps.
        Column("data_timestamp", DateTime, nullable=False),
        Column("create_time", DateTime, nullable=False, server_default=NOW),
        Column("update_time", DateTime, nullable=False, server_default=NOW),
        UniqueConstraint("device_sn", period, name=f"uk_{suffix}_device_{period.split('_')[0]}"),
        Index(f"idx_{suffix}_customer_{period.split('_')[0]}", "customer_id", period),
    )


health_data_daily = _slow_field_table("t_user_health_data_daily", "date", DAILY_FIELDS, "daily")
health_data_weekly = _slow_field_table(
    "t_user_health_data_weekly", "week_start", WEEKLY_FIELDS, "weekly"
)

alert_rules = Table(
    "t_alert_rules",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("rule_type", String(64), nullable=False),
    Column("physical_sign", String(64), nullable=False),
    Column("threshold_min", Numeric(10, 2)),
    Column("threshold_max", Numeric(10, 2)),
    Column("trend_duration", Integer, nullable=False, server_default=text("1")),
    Column("severity_level", String(16), nullable=False, server_default=text("'warning'")),
    Column("alert_message", String(255)),
    Column("customer_id", BigInteger, nullable=False, server_default=text("0")),
    Column("is_enabled", SmallInteger, nullable=False, server_default=text("1")),
    Column("create_time", DateTime, nullable=False, server_default=NOW),
    Column("update_time", DateTime, nullable=False, server_default=NOW),
    Index("idx_rules_enabled_customer", "is_enabled", "customer_id"),
)

alert_info = Table(
    "t_alert_info",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("rule_id", BigInteger, nullable=False),
    Column("alert_type", String(64), nullable=False),
    Column("device_sn", String(64), nullable=False),
    Column("alert_timestamp", DateTime, nullable=False),
    Column("alert_desc", String(512)),
    Column("severity_level", String(16), nullable=False),
    Column("alert_status", String(16), nullable=False, server_default=text("'pending'")),
    Column("health_id", BigInteger),
    Column("customer_id", BigInteger),
    Column("org_id", BigInteger),
    Column("user_id", BigInteger),
    Column("create_time", DATETIME(fsp=3), nullable=False, server_default=NOW3),
    UniqueConstraint("device_sn", "rule_id", "alert_timestamp", name="uk_alert_device_rule_ts"),
    Index("idx_alert_status_time", "alert_status", "create_time"),
    Index("idx_alert_customer_status", "customer_id", "alert_status"),
)


def written_columns(table: Table, *skip: str) -> tuple[str, ...]:
    """The columns the consumer writes, in table order: all but the server-filled ones."""
    server_filled = {"id", "create_time", "update_time", *skip}
    return tuple(c.name for c in table.columns if c.name not in server_filled)


# The sinks take their column lists from here, so a table change cannot drift from them.
HEALTH_COLUMNS = written_columns(health_data)
ALERT_COLUMNS = written_columns(alert_info, "health_id")
