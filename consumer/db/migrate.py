"""Alembic, driven from code: `health-consumer migrate` and the start-up schema check."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


class SchemaNotReady(Exception):
    """The database is not at the head revision; the message says what to run."""


def alembic_config(database_url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    # ConfigParser interpolation would choke on a '%' in a password.
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return cfg


def upgrade_to_head(database_url: str) -> str:
    """Apply pending migrations; return the head revision."""
    cfg = alembic_config(database_url)
    command.upgrade(cfg, "head")
    head = ScriptDirectory.from_config(cfg).get_current_head()
    assert head is not None
    return head


def check_schema(engine: Engine, database_url: str) -> None:
    """Refuse to run against a database the migrations have not brought to head."""
    head = ScriptDirectory.from_config(alembic_config(database_url)).get_current_head()
    with engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
    if current != head:
        raise SchemaNotReady(
            f"database schema is at revision {current or 'none'}, the consumer needs {head}: "
            "run `health-consumer migrate` first"
        )
