"""Adopting a legacy ljwx database: add what the consumer needs, change nothing it has.

A company switching to healthstream keeps its database, its dashboards and possibly the
legacy writers for a while, so adoption is additive only:
- a table that is missing entirely is created as on a fresh database;
- a column the consumer writes or reads that is missing is added (nullable or with a
  default, so a legacy writer that does not know it keeps working);
- the legacy `upload_method` ENUM gets the values it lacks ('esim' came late);
- a missing unique key of ours (`tables.upsert_key`) is added after the rows that would
  break it are moved
  (never deleted) to `<table>_dup`: per key the row with the lowest id stays.
Nothing is dropped, renamed or narrowed: a legacy DOUBLE stays DOUBLE, a VARCHAR(20)
stays VARCHAR(20) (the plan's notes say what that means for our writes).

`plan_adoption` is pure (an inspected schema in, SQL out) so it is unit-tested without a
server; `inspect_schema` and `execute` are the thin I/O around it. `consumer.db.migrate`
runs them and then stamps ADOPTED_REVISION, the revision whose schema the plan builds.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Enum, Table, UniqueConstraint
from sqlalchemy.dialects import mysql
from sqlalchemy.schema import CreateColumn, CreateIndex, CreateTable

ADOPTED_REVISION = "0002_legacy_compat"
ADOPTION_TABLE = "healthstream_adoption"  # one row per adoption; 0002 refuses to downgrade
MOVE_TABLE = "hs_adopt_move"  # temporary: ids of the rows one move takes out
_DIALECT = mysql.dialect()


class AdoptionError(Exception):
    """The legacy schema is one the plan cannot adopt safely; the message says why."""


@dataclass(frozen=True, slots=True)
class ColumnInfo:
    """One existing column, as information_schema.COLUMNS describes it."""

    name: str
    column_type: str  # COLUMN_TYPE: "varchar(20)", "enum('wifi','bluetooth')", ...
    nullable: bool = True
    default: str | None = None  # COLUMN_DEFAULT as the server reports it
    charset: str | None = None
    collation: str | None = None
    comment: str = ""


@dataclass(frozen=True, slots=True)
class IndexInfo:
    name: str
    columns: tuple[str, ...]
    unique: bool


@dataclass(frozen=True, slots=True)
class TableInfo:
    name: str
    columns: tuple[ColumnInfo, ...]
    indexes: tuple[IndexInfo, ...] = ()

    def column(self, name: str) -> ColumnInfo | None:
        return next((c for c in self.columns if c.name.lower() == name.lower()), None)


@dataclass(frozen=True, slots=True)
class MoveDuplicates:
    """What a move step needs at run time: how to count the rows it would move."""

    count_sql: str


@dataclass(frozen=True, slots=True)
class Step:
    table: str
    action: str
    statements: tuple[str, ...]
    # Set on the duplicate move: its statements run in one transaction, and only when
    # count_sql finds rows to move.
    move: MoveDuplicates | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    steps: tuple[Step, ...]
    notes: tuple[str, ...] = ()

    @property
    def nothing_to_do(self) -> bool:
        return not self.steps


@dataclass(slots=True)
class AdoptionReport:
    statements: int = 0
    moved: dict[str, int] = field(default_factory=dict)  # table -> rows moved to _dup


# ---------------------------------------------------------------- planning (pure)


def plan_adoption(existing: Mapping[str, TableInfo], target: Iterable[Table]) -> Plan:
    """The SQL that brings `existing` (tables present, by name) up to `target`, additively."""
    steps: list[Step] = []
    notes: list[str] = []
    for table in target:
        have = existing.get(table.name)
        if have is None:
            steps.append(_create_table(table))
            continue
        notes += _compatibility_notes(table, have)
        added = [c for c in table.columns if have.column(c.name) is None]
        if added:
            clauses = ", ".join(f"ADD COLUMN {_column_ddl(c)}" for c in added)
            steps.append(
                Step(
                    table.name,
                    f"add columns {', '.join(c.name for c in added)}",
                    (f"ALTER TABLE {q(table.name)} {clauses}",),
                )
            )
        steps += _extend_enums(table, have)
        columns_after = [c.name for c in have.columns] + [c.name for c in added]
        for key_name, key_columns in _upsert_keys(table):
            if _has_unique(have, key_columns):
                continue
            steps.append(_move_duplicates(table.name, have, key_columns, columns_after))
            name = _free_index_name(have, key_name)
            steps.append(
                Step(
                    table.name,
                    f"add unique key {name} ({', '.join(key_columns)})",
                    (
                        f"ALTER TABLE {q(table.name)} ADD UNIQUE KEY {q(name)} "
                        f"({', '.join(q(c) for c in key_columns)})",
                    ),
                )
            )
    return Plan(tuple(steps), tuple(notes))


def q(identifier: str) -> str:
    return "`" + identifier.replace("`", "``") + "`"


def _create_table(table: Table) -> Step:
    statements = [str(CreateTable(table).compile(dialect=_DIALECT)).strip()]
    statements += [
        str(CreateIndex(ix).compile(dialect=_DIALECT)).strip()
        for ix in sorted(table.indexes, key=lambda ix: str(ix.name))
    ]
    return Step(table.name, "create table (missing)", tuple(statements))


def _column_ddl(column: Any) -> str:
    return str(CreateColumn(column).compile(dialect=_DIALECT)).strip()


def _upsert_keys(table: Table) -> list[tuple[str, tuple[str, ...]]]:
    """Our unique keys (tables.upsert_key); a legacy key we merely mirror (the rules'
    uniqueness) is the legacy system's business, never added by adoption."""
    return [
        (str(c.name), tuple(col.name for col in c.columns))
        for c in table.constraints
        if isinstance(c, UniqueConstraint) and c.info.get("upsert_key")
    ]


def _has_unique(have: TableInfo, columns: tuple[str, ...]) -> bool:
    """Any unique index on exactly these columns (in any order) enforces the same key."""
    wanted = {c.lower() for c in columns}
    return any(
        ix.unique and {c.lower() for c in ix.columns} == wanted and len(ix.columns) == len(wanted)
        for ix in have.indexes
    )


def _free_index_name(have: TableInfo, name: str) -> str:
    taken = {ix.name.lower() for ix in have.indexes}
    candidate, n = name, 1
    while candidate.lower() in taken:
        n += 1
        candidate = f"{name}_{n}"
    return candidate


def _primary_key(have: TableInfo) -> str:
    primary = next((ix for ix in have.indexes if ix.name.upper() == "PRIMARY"), None)
    if primary is None or len(primary.columns) != 1:
        raise AdoptionError(
            f"{have.name} has no single-column primary key: cannot tell which duplicate row to keep"
        )
    return primary.columns[0]


def _move_duplicates(table: str, have: TableInfo, key: tuple[str, ...], columns: list[str]) -> Step:
    """Rows sharing a key value with a lower-id row go to `<table>_dup`, in one transaction.

    The ids are fixed first (a temporary table), so the copy and the delete name exactly
    the same rows; under REPEATABLE READ the INSERT ... SELECT share-locks them until the
    DELETE, so a concurrent legacy UPDATE cannot slip in between. NULL keys never collide
    in a unique index, so they are not duplicates.
    """
    pk = _primary_key(have)
    side = f"{table}_dup"
    not_null = " AND ".join(f"{q(c)} IS NOT NULL" for c in key)
    group = ", ".join(q(c) for c in key)
    dup_keys = (
        f"SELECT {group}, MIN({q(pk)}) AS keep_id FROM {q(table)} WHERE {not_null} "
        f"GROUP BY {group} HAVING COUNT(*) > 1"
    )
    on = " AND ".join(f"t.{q(c)} = d.{q(c)}" for c in key)
    cols = ", ".join(q(c) for c in columns)
    in_move = f"{q(pk)} IN (SELECT id FROM {q(MOVE_TABLE)})"
    statements = (
        f"CREATE TABLE IF NOT EXISTS {q(side)} LIKE {q(table)}",
        f"CREATE TEMPORARY TABLE {q(MOVE_TABLE)} (PRIMARY KEY (id)) "
        f"SELECT t.{q(pk)} AS id FROM {q(table)} t JOIN ({dup_keys}) d "
        f"ON {on} WHERE t.{q(pk)} <> d.keep_id",
        f"INSERT INTO {q(side)} ({cols}) SELECT {cols} FROM {q(table)} WHERE {in_move}",
        f"DELETE FROM {q(table)} WHERE {in_move}",
        f"DROP TEMPORARY TABLE {q(MOVE_TABLE)}",
    )
    count_sql = (
        f"SELECT COALESCE(SUM(n - 1), 0) FROM (SELECT COUNT(*) AS n FROM {q(table)} "
        f"WHERE {not_null} GROUP BY {group} HAVING COUNT(*) > 1) d"
    )
    return Step(
        table,
        f"move rows that repeat ({', '.join(key)}) to {side}, keeping the lowest {pk}",
        statements,
        MoveDuplicates(count_sql),
    )


_ENUM_VALUE = re.compile(r"'((?:[^']|'')*)'")


def enum_values(column_type: str) -> tuple[str, ...] | None:
    """The values of an `enum('a','b')` column type; None for any other type."""
    if not column_type.lower().startswith("enum("):
        return None
    return tuple(v.replace("''", "'") for v in _ENUM_VALUE.findall(column_type))


def _literal(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def _extend_enums(table: Table, have: TableInfo) -> list[Step]:
    """Append the ENUM values we write that the legacy column lacks (a widening: every
    stored value keeps its meaning and its index)."""
    steps = []
    for column in table.columns:
        if not isinstance(column.type, Enum):
            continue
        existing = have.column(column.name)
        values = None if existing is None else enum_values(existing.column_type)
        if existing is None or values is None:
            continue
        missing = [v for v in column.type.enums if v not in values]
        if not missing:
            continue
        ddl = f"ENUM({', '.join(_literal(v) for v in (*values, *missing))})"
        if existing.charset:
            ddl += f" CHARACTER SET {existing.charset}"
        if existing.collation:
            ddl += f" COLLATE {existing.collation}"
        ddl += " NULL" if existing.nullable else " NOT NULL"
        default = _default_literal(existing.default)
        if default is not None:
            ddl += f" DEFAULT {default}"
        if existing.comment:
            ddl += f" COMMENT {_literal(existing.comment)}"
        steps.append(
            Step(
                table.name,
                f"extend enum {column.name} with {', '.join(missing)}",
                (f"ALTER TABLE {q(table.name)} MODIFY COLUMN {q(column.name)} {ddl}",),
            )
        )
    return steps


def _default_literal(default: str | None) -> str | None:
    """COLUMN_DEFAULT of an ENUM as SQL: MariaDB reports 'wifi' quoted, MySQL bare."""
    if default is None or default.upper() == "NULL":
        return None
    if default.startswith("'") and default.endswith("'") and len(default) >= 2:
        return default
    return _literal(default)


_WIDTH = re.compile(r"^(?:var)?char\((\d+)\)")


def _compatibility_notes(table: Table, have: TableInfo) -> list[str]:
    """What the kept legacy columns mean for our writes (adoption never narrows or widens)."""
    notes = []
    for column in table.columns:
        existing = have.column(column.name)
        if existing is None:
            continue
        want = getattr(column.type, "length", None)
        got = _WIDTH.match(existing.column_type.lower())
        if want is not None and got is not None and int(got.group(1)) < want:
            notes.append(
                f"{table.name}.{column.name} stays {existing.column_type} (a fresh schema has "
                f"{want}): a longer value makes its row fail (MySQL error 1406) and the "
                "reading is dead-lettered as db_rejected"
            )
        written = not column.primary_key and not column.info.get("server_filled")
        if written and existing.column_type.lower() == "timestamp":
            notes.append(
                f"{table.name}.{column.name} stays TIMESTAMP: a reading time outside "
                "1970-2038 fails its row (error 1292, db_rejected), and the server converts "
                "it from the session time zone"
            )
    return notes


def render(plan: Plan, counts: Mapping[int, int] | None = None) -> str:
    """The plan as an SQL script with comments (what `migrate --dry-run` prints)."""
    lines = [f"-- note: {n}" for n in plan.notes]
    for i, step in enumerate(plan.steps):
        lines.append(f"-- {step.table}: {step.action}")
        if step.move is not None and counts is not None:
            n = counts.get(i, 0)
            lines.append(f"--   {n} row(s) to move" + ("; nothing to run" if n == 0 else ""))
            if n == 0:
                continue
        if step.move is None:
            lines += [f"{s};" for s in step.statements]
            continue
        # As `_move` runs it: the side table's DDL first (DDL commits implicitly).
        create_side, *moves = step.statements
        lines += [f"{create_side};", "START TRANSACTION;", *(f"{s};" for s in moves), "COMMIT;"]
    if not plan.steps:
        lines.append("-- nothing to add")
    return "\n".join(lines)


# ---------------------------------------------------------------- I/O


def inspect_schema(conn: Connection, names: Iterable[str]) -> dict[str, TableInfo]:
    """The named tables that exist in the connection's database, with columns and keys."""
    wanted = list(names)
    marks = ", ".join(["%s"] * len(wanted))
    cur = _cursor(conn)
    try:
        cur.execute(
            "SELECT TABLE_NAME, COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE, COLUMN_DEFAULT, "
            "CHARACTER_SET_NAME, COLLATION_NAME, COLUMN_COMMENT FROM information_schema.COLUMNS "
            f"WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME IN ({marks}) "
            "ORDER BY TABLE_NAME, ORDINAL_POSITION",
            wanted,
        )
        columns: dict[str, list[ColumnInfo]] = {}
        for table, name, ctype, nullable, default, charset, collation, comment in cur.fetchall():
            columns.setdefault(table, []).append(
                ColumnInfo(name, ctype, nullable == "YES", default, charset, collation, comment)
            )
        cur.execute(
            "SELECT TABLE_NAME, INDEX_NAME, NON_UNIQUE, COLUMN_NAME FROM "
            "information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() "
            f"AND TABLE_NAME IN ({marks}) ORDER BY TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX",
            wanted,
        )
        keys: dict[str, dict[str, tuple[bool, list[str]]]] = {}
        for table, index, non_unique, column in cur.fetchall():
            keys.setdefault(table, {}).setdefault(index, (not int(non_unique), []))[1].append(
                column
            )
    finally:
        cur.close()
    return {
        table: TableInfo(
            table,
            tuple(cols),
            tuple(
                IndexInfo(name, tuple(ix_cols), unique)
                for name, (unique, ix_cols) in keys.get(table, {}).items()
            ),
        )
        for table, cols in columns.items()
    }


def count_moves(conn: Connection, plan: Plan) -> dict[int, int]:
    """Rows each move step would move (read-only; a full scan of its table)."""
    counts = {}
    for i, step in enumerate(plan.steps):
        if step.move is not None:
            counts[i] = int(_scalar(conn, step.move.count_sql))
    return counts


def execute(
    conn: Connection, plan: Plan, log: Callable[[str], None] = lambda _: None
) -> AdoptionReport:
    """Run the plan on an autocommit connection; each move runs in its own transaction."""
    report = AdoptionReport()
    for step in plan.steps:
        log(f"{step.table}: {step.action}")
        if step.move is None:
            for sql in step.statements:
                _run(conn, sql)
                report.statements += 1
            continue
        n = int(_scalar(conn, step.move.count_sql))
        if n == 0:
            log(f"{step.table}: no duplicates")
            continue
        report.moved[step.table] = report.moved.get(step.table, 0) + _move(conn, step, n)
        report.statements += len(step.statements)
        log(f"{step.table}: moved {n} duplicate row(s)")
    return report


def record_adoption(conn: Connection, report: AdoptionReport) -> None:
    """Leave a trace of what adoption did; its presence also stops 0002's downgrade from
    dropping legacy tables."""
    _run(
        conn,
        f"CREATE TABLE IF NOT EXISTS {q(ADOPTION_TABLE)} ("
        "id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, "
        "adopted_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP, "
        "revision VARCHAR(64) NOT NULL, statements INT NOT NULL, moved_rows TEXT NULL"
        ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
    )
    moved = ", ".join(f"{table}: {n}" for table, n in sorted(report.moved.items()))
    _run(
        conn,
        f"INSERT INTO {q(ADOPTION_TABLE)} (revision, statements, moved_rows) VALUES "
        f"({_literal(ADOPTED_REVISION)}, {report.statements}, {_literal(moved)})",
    )


def _move(conn: Connection, step: Step, expected: int) -> int:
    create_side, create_ids, copy, delete, drop_ids = step.statements
    _run(conn, create_side)  # DDL commits implicitly: outside the transaction
    _run(conn, "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    _run(conn, "START TRANSACTION")
    try:
        _run(conn, create_ids)
        copied = _run(conn, copy)
        deleted = _run(conn, delete)
        if not copied == deleted == expected:
            raise AdoptionError(
                f"{step.table}: counted {expected} duplicates, copied {copied}, "
                f"deleted {deleted}; rolled back (were rows written meanwhile? run again)"
            )
        _run(conn, drop_ids)
        _run(conn, "COMMIT")
    except BaseException:
        _run(conn, "ROLLBACK")
        _run(conn, f"DROP TEMPORARY TABLE IF EXISTS {q(MOVE_TABLE)}")
        raise
    return copied


def _cursor(conn: Connection) -> Any:
    return conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]


def _run(conn: Connection, sql: str) -> int:
    """Execute verbatim: with no arguments PyMySQL does not %-format (a legacy COMMENT
    may hold '%')."""
    cur = _cursor(conn)
    try:
        cur.execute(sql)
        return int(cur.rowcount)
    finally:
        cur.close()


def _scalar(conn: Connection, sql: str) -> Any:
    cur = _cursor(conn)
    try:
        cur.execute(sql)
        row = cur.fetchone()
        return None if row is None else row[0]
    finally:
        cur.close()
