"""Alembic, driven from code: `health-consumer migrate` and the start-up schema check.

`migrate` handles three databases:
- empty: the migrations create the schema;
- Alembic-managed: pending migrations are applied;
- a legacy ljwx database (our tables exist, no Alembic revision): it is adopted
  (`consumer.db.adopt`), stamped at ADOPTED_REVISION, then upgraded like any other, so
  every later revision applies to fresh and adopted databases alike.
`dry_run` prints the SQL each case would run and changes nothing.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine

from consumer.db import adopt
from consumer.db.tables import TABLES

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
TABLE_NAMES = tuple(t.name for t in TABLES)
# Per database (GET_LOCK names are server-wide): two replicas' init containers migrating
# one database take turns, migrations of other databases on the server never wait.
LOCK_NAME = "LEFT(CONCAT('healthstream_migrate.', DATABASE()), 64)"
LOCK_TIMEOUT_S = 30


class SchemaNotReady(Exception):
    """The database is not at the head revision; the message says what to run."""


@dataclass(slots=True)
class MigrateResult:
    """What `migrate` did (or, in a dry run, would do)."""

    kind: str  # "fresh" | "upgrade" | "adopt" | "up to date"
    revision: str | None
    sql: str = ""  # the SQL it ran or would run
    moved: dict[str, int] = field(default_factory=dict)  # adoption: table -> rows to _dup
    notes: tuple[str, ...] = ()
    refused: tuple[str, ...] = ()  # adoption: why it would not start (dry run)


def alembic_config(database_url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    # ConfigParser interpolation would choke on a '%' in a password.
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return cfg


def head_revision(database_url: str) -> str:
    head = ScriptDirectory.from_config(alembic_config(database_url)).get_current_head()
    assert head is not None
    return head


def upgrade_to_head(database_url: str) -> str:
    """Apply pending migrations; return the head revision."""
    command.upgrade(alembic_config(database_url), "head")
    return head_revision(database_url)


def current_revision(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def existing_tables(conn: Connection) -> set[str]:
    marks = ", ".join(["%s"] * len(TABLE_NAMES))
    rows = conn.exec_driver_sql(
        "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() "
        f"AND TABLE_NAME IN ({marks})",
        TABLE_NAMES,
    )
    return {r[0] for r in rows}


def migrate(
    database_url: str, dry_run: bool = False, log: Callable[[str], None] = lambda _: None
) -> MigrateResult:
    """Bring the database to head, adopting a legacy one first; see the module doc."""
    head = head_revision(database_url)
    engine = create_engine(database_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            # Two `migrate` runs at once (two replicas' init containers) take turns.
            lock = f"SELECT GET_LOCK({LOCK_NAME}, {LOCK_TIMEOUT_S})"
            if not conn.exec_driver_sql(lock).scalar():
                raise SchemaNotReady(
                    "another `health-consumer migrate` of this database still runs "
                    f"after {LOCK_TIMEOUT_S}s"
                )
            try:
                return _migrate(conn, database_url, head, dry_run, log)
            finally:
                conn.exec_driver_sql(f"SELECT RELEASE_LOCK({LOCK_NAME})")
    finally:
        engine.dispose()


def _migrate(
    conn: Connection, url: str, head: str, dry_run: bool, log: Callable[[str], None]
) -> MigrateResult:
    current = current_revision(conn)
    present = existing_tables(conn)
    if current is None and present:
        return _adopt(conn, url, head, dry_run, log)
    if current == head:
        return MigrateResult("up to date", current)
    kind = "fresh" if current is None else "upgrade"
    sql = _offline_sql(url, f"{current}:head" if current else "head")
    if not dry_run:
        upgrade_to_head(url)
    return MigrateResult(kind, current if dry_run else head, sql)


def _adopt(
    conn: Connection, url: str, head: str, dry_run: bool, log: Callable[[str], None]
) -> MigrateResult:
    plan = adopt.plan_adoption(adopt.inspect_schema(conn, TABLE_NAMES), TABLES)
    counts, references, refused = adopt.preflight(conn, plan)
    tail = [
        f"-- then: record the adoption in {adopt.ADOPTION_TABLE}, "
        f"stamp alembic_version at {adopt.ADOPTED_REVISION}"
    ]
    if head != adopt.ADOPTED_REVISION:
        tail.append(_offline_sql(url, f"{adopt.ADOPTED_REVISION}:head", adopted=True))
    sql = "\n".join([adopt.render(plan, counts, references), *tail])
    moved = {plan.steps[i].table: n for i, n in counts.items() if n}
    if dry_run:
        return MigrateResult("adopt", None, sql, moved, plan.notes, tuple(refused))
    if refused:
        raise adopt.AdoptionRefused(refused)
    report = adopt.execute(conn, plan, log)
    adopt.record_adoption(conn, report)
    command.stamp(alembic_config(url), adopt.ADOPTED_REVISION)
    if head != adopt.ADOPTED_REVISION:
        upgrade_to_head(url)
    return MigrateResult("adopt", head, sql, report.moved, plan.notes)


def _offline_sql(url: str, revisions: str, adopted: bool = False) -> str:
    """The SQL Alembic would run for `revisions`, without touching the database.

    `adopted`: rendered for a database being adopted, which offline revisions cannot
    detect themselves (they read `config.attributes["adopted"]` and print that they skip).
    """
    cfg = alembic_config(url)
    cfg.attributes["adopted"] = adopted
    buffer = io.StringIO()
    cfg.output_buffer = buffer
    command.upgrade(cfg, revisions, sql=True)
    return buffer.getvalue()


def check_schema(engine: Engine, database_url: str) -> None:
    """Refuse to run against a database the migrations have not brought to head."""
    head = head_revision(database_url)
    with engine.connect() as conn:
        current = current_revision(conn)
        legacy = current is None and bool(existing_tables(conn))
    if current != head:
        what = (
            "legacy ljwx tables without a schema revision"
            if legacy
            else (f"database schema is at revision {current or 'none'}")
        )
        raise SchemaNotReady(
            f"{what}, the consumer needs {head}: run `health-consumer migrate` first "
            "(`--dry-run` shows the SQL)"
        )
