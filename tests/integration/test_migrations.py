"""The Alembic migrations and the Core tables the code queries describe the same schema."""

from __future__ import annotations

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
