"""Drop `idx_health_customer_ts (customer_id, timestamp)` from the health rows.

Every secondary index costs every insert: this one ~3-4 µs of MariaDB CPU per row
(docs/performance.md item 7, docs/legacy-compatibility.md "Indexes"). Customer-wide
time windows use the `(customer_id, ...)` prefix of `idx_health_customer_user_time`;
the legacy schema had no (customer_id, timestamp) index either.

An adopted legacy database (`healthstream_adoption` exists) is left exactly as it is:
it never had this index from us (adoption builds tables.py, which no longer has it),
and an index of that name there would be the legacy system's, which adoption promises
never to drop. Upgrade and downgrade change nothing there. On our own schema the index
is dropped only where it exists and recreated only where it does not, so the revision
also tolerates a DBA having done either by hand.

Offline (`--sql`, `migrate --dry-run`) the database cannot be asked: the statement is
printed, except when `consumer.db.migrate` renders the tail of an adoption
(`config.attributes["adopted"]`), where the revision prints only that it skips.

Revision ID: 0003_drop_health_customer_ts
Revises: 0002_legacy_compat
Create Date: 2026-11-28
"""

from __future__ import annotations

from alembic import context, op

revision = "0003_drop_health_customer_ts"
down_revision = "0002_legacy_compat"
branch_labels = None
depends_on = None

# Read by tests/unit/test_adopt_plan_legacy.py: a revision after 0002 must not change an
# adopted database, since adoption stamps 0002 after building tables.py's (head's) schema.
ADOPTED_UNCHANGED = True

TABLE = "t_user_health_data"
INDEX = "idx_health_customer_ts"
COLUMNS = ["customer_id", "timestamp"]
ADOPTION_TABLE = "healthstream_adoption"  # frozen copy of consumer.db.adopt's name


def upgrade() -> None:
    if _adopted():
        return
    if context.is_offline_mode() or _has_index():
        op.drop_index(INDEX, table_name=TABLE)


def downgrade() -> None:
    if _adopted():
        return
    if context.is_offline_mode() or not _has_index():
        op.create_index(INDEX, TABLE, COLUMNS)


def _adopted() -> bool:
    if context.is_offline_mode():
        adopted = bool(context.config.attributes.get("adopted"))
        if adopted:
            op.execute(f"-- {revision}: an adopted database is left unchanged")
        return adopted
    return op.get_bind().exec_driver_sql(f"SHOW TABLES LIKE '{ADOPTION_TABLE}'").first() is not None


def _has_index() -> bool:
    found = (
        op.get_bind()
        .exec_driver_sql(
            "SELECT 1 FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() "
            f"AND TABLE_NAME = '{TABLE}' AND INDEX_NAME = '{INDEX}' LIMIT 1"
        )
        .first()
    )
    return found is not None
