"""Initial schema: health data, daily/weekly slow fields, alert rules and alerts.

Revision ID: 0001_initial
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.mysql import DATETIME

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None

NOW = sa.text("CURRENT_TIMESTAMP")
NOW3 = sa.text("CURRENT_TIMESTAMP(3)")
TABLE_OPTS: dict[str, Any] = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4"}


def _party_columns() -> list[sa.Column[int]]:
    return [
        sa.Column("customer_id", sa.BigInteger),
        sa.Column("org_id", sa.BigInteger),
        sa.Column("user_id", sa.BigInteger),
    ]


def upgrade() -> None:
    op.create_table(
        "t_user_health_data",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("device_sn", sa.String(64), nullable=False),
        *_party_columns(),
        sa.Column("heart_rate", sa.Integer),
        sa.Column("pressure_high", sa.Integer),
        sa.Column("pressure_low", sa.Integer),
        sa.Column("blood_oxygen", sa.Integer),
        sa.Column("stress", sa.Integer),
        sa.Column("step", sa.Integer),
        sa.Column("temperature", sa.Numeric(5, 2)),
        sa.Column("latitude", sa.Numeric(10, 6)),
        sa.Column("longitude", sa.Numeric(10, 6)),
        sa.Column("altitude", sa.Numeric(10, 2)),
        sa.Column("distance", sa.Numeric(12, 2)),
        sa.Column("calorie", sa.Numeric(12, 2)),
        sa.Column("sleep", sa.Numeric(6, 2)),
        sa.Column("timestamp", sa.DateTime, nullable=False),
        sa.Column("upload_method", sa.String(32)),
        sa.Column("create_time", DATETIME(fsp=3), nullable=False, server_default=NOW3),
        sa.UniqueConstraint("device_sn", "timestamp", name="uk_health_device_ts"),
        **TABLE_OPTS,
    )
    op.create_index("idx_health_customer_ts", "t_user_health_data", ["customer_id", "timestamp"])

    op.create_table(
        "t_user_health_data_daily",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("device_sn", sa.String(64), nullable=False),
        *_party_columns(),
        sa.Column("date", sa.Date, nullable=False),
        sa.Column("sleep_data", sa.JSON),
        sa.Column("exercise_daily_data", sa.JSON),
        sa.Column("workout_data", sa.JSON),
        sa.Column("scientific_sleep_data", sa.JSON),
        sa.Column("data_timestamp", sa.DateTime, nullable=False),
        sa.Column("create_time", sa.DateTime, nullable=False, server_default=NOW),
        sa.Column("update_time", sa.DateTime, nullable=False, server_default=NOW),
        sa.UniqueConstraint("device_sn", "date", name="uk_daily_device_date"),
        **TABLE_OPTS,
    )
    op.create_index("idx_daily_customer_date", "t_user_health_data_daily", ["customer_id", "date"])

    op.create_table(
        "t_user_health_data_weekly",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("device_sn", sa.String(64), nullable=False),
        *_party_columns(),
        sa.Column("week_start", sa.Date, nullable=False),
        sa.Column("exercise_week_data", sa.JSON),
        sa.Column("data_timestamp", sa.DateTime, nullable=False),
        sa.Column("create_time", sa.DateTime, nullable=False, server_default=NOW),
        sa.Column("update_time", sa.DateTime, nullable=False, server_default=NOW),
        sa.UniqueConstraint("device_sn", "week_start", name="uk_weekly_device_week"),
        **TABLE_OPTS,
    )
    op.create_index(
        "idx_weekly_customer_week", "t_user_health_data_weekly", ["customer_id", "week_start"]
    )

    op.create_table(
        "t_alert_rules",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("rule_type", sa.String(64), nullable=False),
        sa.Column("physical_sign", sa.String(64), nullable=False),
        sa.Column("threshold_min", sa.Numeric(10, 2)),
        sa.Column("threshold_max", sa.Numeric(10, 2)),
        sa.Column("trend_duration", sa.Integer, nullable=False, server_default=sa.text("1")),
        sa.Column(
            "severity_level", sa.String(16), nullable=False, server_default=sa.text("'warning'")
        ),
        sa.Column("alert_message", sa.String(255)),
        sa.Column("customer_id", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("is_enabled", sa.SmallInteger, nullable=False, server_default=sa.text("1")),
        sa.Column("create_time", sa.DateTime, nullable=False, server_default=NOW),
        sa.Column("update_time", sa.DateTime, nullable=False, server_default=NOW),
        **TABLE_OPTS,
    )
    op.create_index("idx_rules_enabled_customer", "t_alert_rules", ["is_enabled", "customer_id"])

    op.create_table(
        "t_alert_info",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("rule_id", sa.BigInteger, nullable=False),
        sa.Column("alert_type", sa.String(64), nullable=False),
        sa.Column("device_sn", sa.String(64), nullable=False),
        sa.Column("alert_timestamp", sa.DateTime, nullable=False),
        sa.Column("alert_desc", sa.String(512)),
        sa.Column("severity_level", sa.String(16), nullable=False),
        sa.Column(
            "alert_status", sa.String(16), nullable=False, server_default=sa.text("'pending'")
        ),
        sa.Column("health_id", sa.BigInteger),
        *_party_columns(),
        sa.Column("create_time", DATETIME(fsp=3), nullable=False, server_default=NOW3),
        sa.UniqueConstraint(
            "device_sn", "rule_id", "alert_timestamp", name="uk_alert_device_rule_ts"
        ),
        **TABLE_OPTS,
    )
    op.create_index("idx_alert_status_time", "t_alert_info", ["alert_status", "create_time"])
    op.create_index("idx_alert_customer_status", "t_alert_info", ["customer_id", "alert_status"])


def downgrade() -> None:
    for table in (
        "t_alert_info",
        "t_alert_rules",
        "t_user_health_data_weekly",
        "t_user_health_data_daily",
        "t_user_health_data",
    ):
        op.drop_table(table)
