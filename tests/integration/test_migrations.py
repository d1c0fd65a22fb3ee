"""The Alembic migrations and the Core tables the code queries describe the same schema."""

from __future__ import annotations

import datetime as dt

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine

from consumer.db.migrate import alembic_config, migrate, upgrade_to_head
from consumer.db.tables import metadata
from tests.integration.legacy import create_legacy
from tests.integration.stack import Stack

pytestmark = pytest.mark.integration


def test_tables_match_the_migrated_schema(stack: Stack) -> None:
    with stack.engine.connect() as conn:
        ctx = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": False}
        )
        diffs = [
            d
            for d in compare_metadata(ctx, metadata)
            if not (
                isinstance(d, tuple) and d[0] == "remove_table" and d[1].name == "alembic_version"
            )
        ]
    assert diffs == []


def test_downgrade_and_upgrade_round_trip(stack: Stack) -> None:
    command.downgrade(alembic_config(stack.database_url), "base")
    with stack.engine.connect() as conn:
        tables = {r[0] for r in conn.exec_driver_sql("SHOW TABLES")}
    assert tables <= {"alembic_version"}
    upgrade_to_head(stack.database_url)
    assert stack.health_rows() == 0


def test_upgrade_from_0001_keeps_and_maps_existing_rows(stack: Stack) -> None:
    """A database that ran 0001 keeps its rows: upload_method is mapped into the ENUM (the
    value sent kept in upload_method_raw), NULL customers become 0, old alerts get their
    occur_at and level."""
    command.downgrade(alembic_config(stack.database_url), "0001_initial")
    with stack.engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO t_user_health_data (device_sn, customer_id, timestamp, upload_method) "
            "VALUES ('A', NULL, '2025-01-01 00:00:00', NULL), "
            "('A', 3, '2025-01-01 00:01:00', '4g'), ('A', 3, '2025-01-01 00:02:00', 'lte'), "
            "('A', 3, '2025-01-01 00:03:00', 'bluetooth')"
        )
        conn.exec_driver_sql(
            "INSERT INTO t_alert_info (rule_id, alert_type, device_sn, alert_timestamp, "
            "severity_level, customer_id) VALUES (1, 'hr', 'A', '2025-01-01 00:01:00', "
            "'critical', NULL)"
        )
    upgrade_to_head(stack.database_url)
    rows = stack.rows(
        "SELECT customer_id, upload_method, upload_method_raw, user_name, is_deleted "
        "FROM t_user_health_data ORDER BY timestamp"
    )
    assert [tuple(r) for r in rows] == [
        (0, "wifi", None, "heguang", 0),
        (3, "esim", "4g", "heguang", 0),
        (3, "common_event", "lte", "heguang", 0),
        (3, "bluetooth", "bluetooth", "heguang", 0),
    ]
    alert = stack.rows("SELECT customer_id, occur_at, level, status, source FROM t_alert_info")
    assert [tuple(a) for a in alert] == [
        (0, dt.datetime(2025, 1, 1, 0, 1), "critical", "NEW", "server")
    ]


def health_indexes(engine: Engine) -> dict[str, tuple[str, ...]]:
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT INDEX_NAME, COLUMN_NAME FROM information_schema.STATISTICS "
            "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 't_user_health_data' "
            "ORDER BY INDEX_NAME, SEQ_IN_INDEX"
        ).all()
    found: dict[str, list[str]] = {}
    for index, column in rows:
        found.setdefault(index, []).append(column)
    return {k: tuple(v) for k, v in found.items()}


def test_0003_drops_the_customer_ts_index_and_its_downgrade_restores_it(stack: Stack) -> None:
    assert "idx_health_customer_ts" not in health_indexes(stack.engine)
    assert health_indexes(stack.engine)["idx_health_customer_user_time"] == (
        "customer_id", "user_id", "timestamp",
    )  # fmt: skip
    command.downgrade(alembic_config(stack.database_url), "0002_legacy_compat")
    assert health_indexes(stack.engine)["idx_health_customer_ts"] == ("customer_id", "timestamp")
    # Dropped by hand meanwhile: the upgrade has nothing to drop, and does not fail.
    with stack.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE t_user_health_data DROP INDEX idx_health_customer_ts")
    upgrade_to_head(stack.database_url)
    assert "idx_health_customer_ts" not in health_indexes(stack.engine)
    dry = migrate(stack.database_url, dry_run=True)
    assert dry.kind == "up to date"


def test_0003_leaves_an_adopted_database_unchanged(database: tuple[str, Engine]) -> None:
    """Even an index of that name that the legacy schema happens to have stays: adoption
    never drops anything, and revisions after 0002 leave adopted databases as they are."""
    url, engine = database
    create_legacy(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "ALTER TABLE t_user_health_data "
            "ADD INDEX idx_health_customer_ts (customer_id, timestamp)"
        )
    legacy = health_indexes(engine)
    migrate(url)
    adopted = health_indexes(engine)
    assert adopted.items() >= legacy.items()
    assert adopted["idx_health_customer_ts"] == ("customer_id", "timestamp")
    command.downgrade(alembic_config(url), "0002_legacy_compat")
    assert health_indexes(engine) == adopted
    upgrade_to_head(url)
    assert health_indexes(engine) == adopted


def test_a_fresh_dry_run_shows_the_drop(database: tuple[str, Engine]) -> None:
    url, _ = database
    assert "DROP INDEX idx_health_customer_ts ON t_user_health_data" in migrate(url, True).sql
