"""Device SNs compare byte for byte: `device_sn` in utf8mb4_bin on our four tables.

Kafka keys, the decoder and the Redis hash keys are case-sensitive; the unique keys were
not (the server's utf8mb4_unicode_ci), so a second device whose SN differs only in case
lost its readings as "duplicates" (issue 18, S4). Going from a case-insensitive to a
binary collation never makes two stored keys collide, so the change cannot fail on
existing rows; it rebuilds each table (plan a window on a large one). Downgrade goes back
to utf8mb4_unicode_ci and fails if case variants were stored meanwhile.

An adopted legacy database (`healthstream_adoption` exists) keeps its collation, as 0003
leaves it alone: the legacy bigscreen's lookups may count on it. The sink then proves
every skipped reading row by row, and a reading another device's row takes is
dead-lettered, never dropped (docs/legacy-compatibility.md, "One reading, one meaning").

Revision ID: 0004_device_sn_binary
Revises: 0003_drop_health_customer_ts
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import context, op

revision = "0004_device_sn_binary"
down_revision = "0003_drop_health_customer_ts"
branch_labels = None
depends_on = None

ADOPTED_UNCHANGED = True  # see 0003

TABLES = (
    "t_user_health_data",
    "t_user_health_data_daily",
    "t_user_health_data_weekly",
    "t_alert_info",
)
ADOPTION_TABLE = "healthstream_adoption"  # frozen copy of consumer.db.adopt's name


def _set(collation: str) -> None:
    if _adopted():
        return
    for table in TABLES:
        op.execute(
            f"ALTER TABLE {table} MODIFY device_sn VARCHAR(255) CHARACTER SET utf8mb4 "
            f"COLLATE {collation} NOT NULL"
        )


def upgrade() -> None:
    _set("utf8mb4_bin")


def downgrade() -> None:
    _set("utf8mb4_unicode_ci")


def _adopted() -> bool:
    if context.is_offline_mode():
        adopted = bool(context.config.attributes.get("adopted"))
        if adopted:
            op.execute(f"-- {revision}: an adopted database is left unchanged")
        return adopted
    return op.get_bind().exec_driver_sql(f"SHOW TABLES LIKE '{ADOPTION_TABLE}'").first() is not None
