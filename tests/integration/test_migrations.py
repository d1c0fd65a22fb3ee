"""The Alembic migrations and the Core tables the code queries describe the same schema."""

from __future__ import annotations

import datetime as dt

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from consumer.db.tables import metadata
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
    from alembic import command

    from consumer.db.migrate import alembic_config, upgrade_to_head

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
    from alembic import command

    from consumer.db.migrate import alembic_config, upgrade_to_head

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
