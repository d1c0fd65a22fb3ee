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

Adoption runs online, beside a legacy writer that keeps inserting (issue 18, A1-A4):
- what it cannot do safely it refuses before changing anything (`refusals`): a column of
  another kind than we write (an INT `upload_method_raw`), a DELETE trigger or a foreign
  key whose rows point at a duplicate it would move (an ON DELETE CASCADE would delete
  the legacy alert with it);
- duplicates move in chunks of MOVE_CHUNK_ROWS, each its own READ COMMITTED transaction
  that locks only the rows it moves (no gap locks: inserts never wait on it);
- every DDL statement runs with LOCK=NONE and a DDL_LOCK_WAIT_S metadata-lock wait, and
  is retried, so a writer queued behind it waits about a second at most;
- a failure stops at a step boundary: what ran is additive and the plan is recomputed
  from the schema on the next run, so `migrate` again resumes where it stopped.

`plan_adoption` and `refusals` are pure (an inspected schema and counts in, SQL and
reasons out) so they are unit-tested without a server; `inspect_schema`, `count_moves`,
`count_references` and `execute` are the thin I/O around them. `consumer.db.migrate`
runs them and then stamps ADOPTED_REVISION, the revision whose schema the plan builds.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    JSON,
    Connection,
    Date,
    DateTime,
    Enum,
    Float,
    Integer,
    Numeric,
    String,
    Table,
    UniqueConstraint,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.schema import CreateColumn, CreateIndex, CreateTable

ADOPTED_REVISION = "0002_legacy_compat"
ADOPTION_TABLE = "healthstream_adoption"  # one row per adoption; 0002 refuses to downgrade
MOVE_TABLE = "hs_adopt_move"  # temporary: (id, keep_id) of the rows one chunk moves
# Rows per move transaction: its locks cover these rows only, held for milliseconds.
MOVE_CHUNK_ROWS = 500
# Seconds a DDL statement waits for a metadata lock, and a chunk for a row lock, before it
# gives way and retries: what a legacy writer queued behind us can wait at most.
DDL_LOCK_WAIT_S = 1
ROW_LOCK_WAIT_S = 1
RETRIES = 20  # per statement or chunk, DDL_LOCK_WAIT_S apart
MOVE_PASSES = 3  # a live writer may add duplicates while we move: count and move again
_DIALECT = mysql.dialect()
_LOCK_ERRORS = (1205, 1213)  # lock wait timeout (row or metadata), deadlock
_DUPLICATE_ENTRY = 1062


class AdoptionError(Exception):
    """The legacy schema is one the plan cannot adopt safely; the message says why."""


class AdoptionRefused(AdoptionError):
    """Checked before any change: nothing was changed. One reason per line."""

    def __init__(self, reasons: Sequence[str]) -> None:
        super().__init__("\n".join(reasons))
        self.reasons = tuple(reasons)


class AdoptionStopped(AdoptionError):
    """A step failed midway; the steps before it are done and `migrate` again resumes."""


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
class ForeignKey:
    """A foreign key from `table` (the child) to `parent`."""

    name: str
    table: str
    columns: tuple[str, ...]
    parent: str
    parent_columns: tuple[str, ...]
    on_delete: str  # CASCADE | RESTRICT | SET NULL | NO ACTION

    def describe(self) -> str:
        return (
            f"foreign key {self.name}: {self.table}({', '.join(self.columns)}) -> "
            f"{self.parent}({', '.join(self.parent_columns)}) ON DELETE {self.on_delete}"
        )


@dataclass(frozen=True, slots=True)
class Trigger:
    name: str
    table: str
    timing: str  # BEFORE | AFTER
    event: str  # INSERT | UPDATE | DELETE


@dataclass(frozen=True, slots=True)
class TableInfo:
    name: str
    columns: tuple[ColumnInfo, ...]
    indexes: tuple[IndexInfo, ...] = ()
    referenced_by: tuple[ForeignKey, ...] = ()  # foreign keys of other rows to these
    references: tuple[ForeignKey, ...] = ()  # this table's own foreign keys
    triggers: tuple[Trigger, ...] = ()

    def column(self, name: str) -> ColumnInfo | None:
        return next((c for c in self.columns if c.name.lower() == name.lower()), None)


@dataclass(frozen=True, slots=True)
class MoveDuplicates:
    """What a move step needs at run time.

    `pairs_sql` lists (id, keep_id) of every row to move: a consistent read, no locks.
    Each chunk then locks its rows with `lock_sql` (only rows whose keeper still holds
    the same key), copies them with `copy_sql` and deletes them with `delete_sql`.
    """

    count_sql: str
    pairs_sql: str
    lock_sql: str
    copy_sql: str
    delete_sql: str
    referenced_by: tuple[ForeignKey, ...] = ()
    delete_triggers: tuple[Trigger, ...] = ()
    # Per foreign key: child rows pointing at a row to move, with {ids} or the pairs.
    reference_sql: tuple[str, ...] = ()


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
    # Refused whatever the data: columns of another kind than the consumer writes.
    conflicts: tuple[str, ...] = ()

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
    conflicts: list[str] = []
    for table in target:
        have = existing.get(table.name)
        if have is None:
            steps.append(_create_table(table))
            continue
        notes += _compatibility_notes(table, have)
        notes += _neighbour_notes(have)
        conflicts += _kind_conflicts(table, have)
        added = [c for c in table.columns if have.column(c.name) is None]
        if added:
            clauses = ", ".join(f"ADD COLUMN {_column_ddl(c)}" for c in added)
            steps.append(
                Step(
                    table.name,
                    f"add columns {', '.join(c.name for c in added)}",
                    (f"ALTER TABLE {q(table.name)} {clauses}, {ONLINE}",),
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
                        f"({', '.join(q(c) for c in key_columns)}), {ONLINE}",
                    ),
                )
            )
    return Plan(tuple(steps), tuple(notes), tuple(conflicts))


# Every ALTER: the legacy writer keeps writing, or the statement fails (and nothing runs).
ONLINE = "LOCK=NONE"


def refusals(plan: Plan, counts: Mapping[int, int], references: Mapping[int, int]) -> list[str]:
    """Why adoption must not start, given the rows each move step would move (`counts`)
    and the child rows pointing at them (`references`, per move step). Empty: go."""
    reasons = list(plan.conflicts)
    for i, step in enumerate(plan.steps):
        move = step.move
        if move is None or not counts.get(i):
            continue
        for trigger in move.delete_triggers:
            reasons.append(
                f"{step.table} has trigger {trigger.name} ({trigger.timing} DELETE): moving its "
                f"{counts[i]} duplicate row(s) to {step.table}_dup would fire it (it may refuse "
                "the delete or act on it); drop or disable it for the adoption, or remove the "
                "duplicates yourself"
            )
        if references.get(i):
            fks = "; ".join(fk.describe() for fk in move.referenced_by)
            reasons.append(
                f"{references[i]} row(s) point at duplicate {step.table} rows adoption would "
                f"move ({fks}): moving them would "
                + (
                    "delete those rows with them"
                    if any(fk.on_delete == "CASCADE" for fk in move.referenced_by)
                    else "be refused or orphan them"
                )
                + ". Point them at the kept row (the lowest id with the same key) or drop the "
                "foreign key, then run migrate again"
            )
    return reasons


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
    """Rows sharing a key value with a lower-id row go to `<table>_dup`, chunk by chunk.

    The (id, keep_id) pairs are read once without locks; each chunk then locks only its
    own rows and their keepers, re-checking that the keeper still holds the key (a legacy
    UPDATE or DELETE meanwhile leaves the row for the next pass). NULL keys never collide
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
    same_key = " AND ".join(f"k.{q(c)} = t.{q(c)}" for c in key)
    cols = ", ".join(q(c) for c in columns)
    in_chunk = f"{q(pk)} IN ({{ids}})"
    pairs_sql = (
        f"SELECT t.{q(pk)} AS id, d.keep_id FROM {q(table)} t JOIN ({dup_keys}) d "
        f"ON {on} WHERE t.{q(pk)} <> d.keep_id ORDER BY t.{q(pk)}"
    )
    lock_sql = (
        f"SELECT t.{q(pk)} FROM {q(MOVE_TABLE)} m JOIN {q(table)} t ON t.{q(pk)} = m.id "
        f"JOIN {q(table)} k ON k.{q(pk)} = m.keep_id AND {same_key} FOR UPDATE"
    )
    references = tuple(
        _reference_sql(table, pk, fk) for fk in have.referenced_by if fk.table != table
    )
    count_sql = (
        f"SELECT COALESCE(SUM(n - 1), 0) FROM (SELECT COUNT(*) AS n FROM {q(table)} "
        f"WHERE {not_null} GROUP BY {group} HAVING COUNT(*) > 1) d"
    )
    move = MoveDuplicates(
        count_sql=count_sql,
        pairs_sql=pairs_sql,
        lock_sql=lock_sql,
        copy_sql=f"INSERT INTO {q(side)} ({cols}) SELECT {cols} FROM {q(table)} WHERE {in_chunk}",
        delete_sql=f"DELETE FROM {q(table)} WHERE {in_chunk}",
        referenced_by=tuple(fk for fk in have.referenced_by if fk.table != table),
        delete_triggers=tuple(t for t in have.triggers if t.event.upper() == "DELETE"),
        reference_sql=references,
    )
    return Step(
        table,
        f"move rows that repeat ({', '.join(key)}) to {side}, keeping the lowest {pk}",
        (
            f"CREATE TABLE IF NOT EXISTS {q(side)} LIKE {q(table)}",
            pairs_sql,
            lock_sql,
            move.copy_sql,
            move.delete_sql,
        ),
        move,
    )


def _reference_sql(table: str, pk: str, fk: ForeignKey) -> str:
    """Child rows of `fk` pointing at a row to move: `{rows}` is a subquery of those rows'
    ids (the pairs at planning time, one chunk's locked ids when moving)."""
    on = " AND ".join(
        f"c.{q(a)} = t.{q(b)}" for a, b in zip(fk.columns, fk.parent_columns, strict=True)
    )
    return (
        f"SELECT COUNT(*) FROM {q(fk.table)} c JOIN {q(table)} t ON {on} "
        f"WHERE t.{q(pk)} IN ({{rows}})"
    )


def _neighbour_notes(have: TableInfo) -> list[str]:
    """Foreign keys and triggers adoption keeps: what each means for our writes."""
    notes = [
        f"{have.name}: {fk.describe()} is kept; a reading it refuses is dead-lettered (db_rejected)"
        for fk in have.references
    ]
    notes += [
        f"{have.name}: {fk.describe()} is kept; adoption refuses to move a duplicate a row "
        "of it points at"
        for fk in have.referenced_by
        if fk.table != have.name
    ]
    notes += [
        f"{have.name}: trigger {t.name} ({t.timing} {t.event}) is kept"
        + (
            "; it fires on every row the consumer writes"
            if t.event.upper() != "DELETE"
            else "; adoption refuses to move duplicates past it"
        )
        for t in have.triggers
    ]
    return notes


# What kind of value a column holds, from its COLUMN_TYPE: a consumer column is written
# into a legacy one of the same kind (an INT into a BIGINT, a VARCHAR into a TEXT).
_KINDS = (
    ("integer", re.compile(r"^(tiny|small|medium|big)?int\b|^integer\b|^bool")),
    ("number", re.compile(r"^(decimal|numeric|double|float|real)\b")),
    ("text", re.compile(r"^(var)?char\b|^(tiny|medium|long)?text\b|^enum\b|^set\b|^json\b")),
    ("datetime", re.compile(r"^(datetime|timestamp)\b")),
    ("date", re.compile(r"^date\b")),
)
# (ours, theirs): our values store there unchanged, or as the notes say.
_FITS = {
    ("integer", "integer"),
    ("integer", "number"),
    ("number", "number"),
    ("number", "integer"),  # a fraction is rounded: see _compatibility_notes
    ("text", "text"),
    ("datetime", "datetime"),
    ("date", "date"),
}


def _kind_of_type(column_type: str) -> str | None:
    text = column_type.strip().lower()
    return next((kind for kind, pattern in _KINDS if pattern.match(text)), None)


def _our_kind(column: Any) -> str | None:
    kinds: tuple[tuple[type, str], ...] = (
        (Enum, "text"),
        (JSON, "text"),
        (String, "text"),
        (DateTime, "datetime"),
        (Date, "date"),
        (Integer, "integer"),
        (Numeric, "number"),
        (Float, "number"),
    )
    return next((kind for cls, kind in kinds if isinstance(column.type, cls)), None)


def _kind_conflicts(table: Table, have: TableInfo) -> list[str]:
    """Columns we write that hold another kind of value in the legacy table: every row we
    wrote would fail there (an INT `upload_method_raw` refuses 'wifi', error 1366), so
    adoption refuses rather than dead-letter every reading. Unknown types are not judged."""
    conflicts = []
    for column in table.columns:
        existing = have.column(column.name)
        if existing is None or column.primary_key or column.info.get("server_filled"):
            continue
        ours, theirs = _our_kind(column), _kind_of_type(existing.column_type)
        if ours is None or theirs is None or (ours, theirs) in _FITS:
            continue
        want = str(column.type.compile(dialect=_DIALECT))
        conflicts.append(
            f"{table.name}.{column.name} is {existing.column_type} ({theirs}); the consumer "
            f"writes {want} ({ours}) there and every row would fail. Adoption never changes a "
            f"legacy column: alter it yourself (ALTER TABLE {q(table.name)} MODIFY "
            f"{q(column.name)} {want} NULL, if its values allow), then run migrate again"
        )
    return conflicts


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


# Columns whose stored value the consumer compares with what it writes: a NULL there
# changes the outcome (the sink reads it as the oldest time).
_COMPARED = frozenset({"data_timestamp"})
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
        if written and _our_kind(column) == "number" == _kind_of_type(existing.column_type):
            pass
        elif (
            written
            and _our_kind(column) == "number"
            and _kind_of_type(existing.column_type) == "integer"
        ):
            notes.append(
                f"{table.name}.{column.name} stays {existing.column_type}: a fraction the "
                "consumer writes there is rounded"
            )
        if column.name in _COMPARED and existing.nullable and not column.nullable:
            notes.append(
                f"{table.name}.{column.name} stays NULL-able (a fresh schema has NOT NULL): "
                "the consumer always writes it, and reads a NULL already there as "
                "'older than any reading'"
            )
        if written and existing.column_type.lower() == "timestamp":
            notes.append(
                f"{table.name}.{column.name} stays TIMESTAMP: a reading time outside "
                "1970-2038 fails its row (error 1292, db_rejected), and the server converts "
                "it from the session time zone"
            )
    return notes


def render(
    plan: Plan,
    counts: Mapping[int, int] | None = None,
    references: Mapping[int, int] | None = None,
) -> str:
    """The plan as an SQL script with comments (what `migrate --dry-run` prints)."""
    lines = [f"-- note: {n}" for n in plan.notes]
    if counts is not None:
        lines += [f"-- REFUSED: {r}" for r in refusals(plan, counts, references or {})]
    else:
        lines += [f"-- REFUSED: {r}" for r in plan.conflicts]
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
        create_side, pairs, lock, copy, delete = step.statements
        lines += [
            f"{create_side};",
            f"-- the rows to move, read once without locks:\n{pairs};",
            f"-- then per chunk of {MOVE_CHUNK_ROWS} ids (READ COMMITTED, a {ROW_LOCK_WAIT_S} s "
            "lock wait, retried), after filling the temporary table "
            f"{MOVE_TABLE} (id, keep_id):",
            "START TRANSACTION;",
            f"{lock};",
            f"{copy.format(ids='<locked ids>')};",
            f"{delete.format(ids='<locked ids>')};",
            "COMMIT;",
        ]
    if not plan.steps:
        lines.append("-- nothing to add")
    return "\n".join(lines)


# ---------------------------------------------------------------- I/O


def inspect_schema(conn: Connection, names: Iterable[str]) -> dict[str, TableInfo]:
    """The named tables that exist in the connection's database, with columns, keys,
    foreign keys (both ways) and triggers."""
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
        cur.execute(
            "SELECT k.CONSTRAINT_NAME, k.TABLE_NAME, k.COLUMN_NAME, k.REFERENCED_TABLE_NAME, "
            "k.REFERENCED_COLUMN_NAME, r.DELETE_RULE FROM information_schema.KEY_COLUMN_USAGE k "
            "JOIN information_schema.REFERENTIAL_CONSTRAINTS r ON r.CONSTRAINT_SCHEMA = "
            "k.CONSTRAINT_SCHEMA AND r.CONSTRAINT_NAME = k.CONSTRAINT_NAME AND r.TABLE_NAME = "
            "k.TABLE_NAME WHERE k.TABLE_SCHEMA = DATABASE() AND k.REFERENCED_TABLE_NAME IS NOT "
            f"NULL AND (k.TABLE_NAME IN ({marks}) OR k.REFERENCED_TABLE_NAME IN ({marks})) "
            "ORDER BY k.TABLE_NAME, k.CONSTRAINT_NAME, k.ORDINAL_POSITION",
            wanted + wanted,
        )
        fk_parts: dict[tuple[str, str], list[Any]] = {}
        for name, child, column, parent, parent_column, rule in cur.fetchall():
            entry = fk_parts.setdefault((child, name), [parent, rule, [], []])
            entry[2].append(column)
            entry[3].append(parent_column)
        cur.execute(
            "SELECT TRIGGER_NAME, EVENT_OBJECT_TABLE, ACTION_TIMING, EVENT_MANIPULATION "
            "FROM information_schema.TRIGGERS WHERE EVENT_OBJECT_SCHEMA = DATABASE() "
            f"AND EVENT_OBJECT_TABLE IN ({marks}) ORDER BY TRIGGER_NAME",
            wanted,
        )
        triggers = [Trigger(*row) for row in cur.fetchall()]
    finally:
        cur.close()
    fks = [
        ForeignKey(name, child, tuple(cols), parent, tuple(pcols), rule)
        for (child, name), (parent, rule, cols, pcols) in fk_parts.items()
    ]
    return {
        table: TableInfo(
            table,
            tuple(cols),
            tuple(
                IndexInfo(name, tuple(ix_cols), unique)
                for name, (unique, ix_cols) in keys.get(table, {}).items()
            ),
            referenced_by=tuple(fk for fk in fks if fk.parent == table),
            references=tuple(fk for fk in fks if fk.table == table),
            triggers=tuple(t for t in triggers if t.table == table),
        )
        for table, cols in columns.items()
    }


def count_moves(conn: Connection, plan: Plan) -> dict[int, int]:
    """Rows each move step would move (a consistent read, no locks; a full scan)."""
    counts = {}
    for i, step in enumerate(plan.steps):
        if step.move is not None:
            counts[i] = int(_scalar(conn, step.move.count_sql))
    return counts


def count_references(conn: Connection, plan: Plan, counts: Mapping[int, int]) -> dict[int, int]:
    """Per move step with rows to move: rows of other tables pointing at those rows."""
    found = {}
    for i, step in enumerate(plan.steps):
        move = step.move
        if move is None or not counts.get(i) or not move.reference_sql:
            continue
        rows = f"SELECT id FROM ({move.pairs_sql}) p"
        found[i] = sum(int(_scalar(conn, sql.format(rows=rows))) for sql in move.reference_sql)
    return found


def preflight(conn: Connection, plan: Plan) -> tuple[dict[int, int], dict[int, int], list[str]]:
    """Counts, references and the refusals they lead to; changes nothing."""
    counts = count_moves(conn, plan)
    references = count_references(conn, plan, counts)
    return counts, references, refusals(plan, counts, references)


def execute(
    conn: Connection, plan: Plan, log: Callable[[str], None] = lambda _: None
) -> AdoptionReport:
    """Run the plan on an autocommit connection, refusing first (AdoptionRefused, nothing
    changed) what `refusals` names; a failure midway raises AdoptionStopped."""
    counts, _references, reasons = preflight(conn, plan)
    if reasons:
        raise AdoptionRefused(reasons)
    _run(conn, f"SET SESSION lock_wait_timeout = {DDL_LOCK_WAIT_S}")
    _run(conn, f"SET SESSION innodb_lock_wait_timeout = {ROW_LOCK_WAIT_S}")
    _run(conn, "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
    report = AdoptionReport()
    for i, step in enumerate(plan.steps):
        log(f"{step.table}: {step.action}")
        try:
            if step.move is None:
                for sql in step.statements:
                    _ddl(conn, sql, step, plan, report, log)
                    report.statements += 1
            elif counts.get(i):
                moved = _move(conn, step, log)
                report.moved[step.table] = report.moved.get(step.table, 0) + moved
                report.statements += 1
                log(f"{step.table}: moved {moved} duplicate row(s)")
            else:
                log(f"{step.table}: no duplicates")
        except AdoptionError:
            raise
        except Exception as exc:  # a server error: stop at this step, resumable
            raise AdoptionStopped(_stopped(step, exc)) from exc
    return report


def _stopped(step: Step, exc: BaseException) -> str:
    return (
        f"adoption stopped at '{step.table}: {step.action}': {_error_text(exc)}. The steps "
        "before it are done and only added to the schema; run `health-consumer migrate` "
        "again to resume (--dry-run shows what is left)"
    )


def _error_text(exc: BaseException) -> str:
    orig = getattr(exc, "orig", exc)
    args: tuple[Any, ...] = getattr(orig, "args", ())
    if len(args) >= 2 and isinstance(args[0], int):
        return f"MySQL error {args[0]}: {args[1]}"
    return f"{type(orig).__name__}: {orig}"


def _error_code(exc: BaseException) -> int | None:
    args: tuple[Any, ...] = getattr(getattr(exc, "orig", exc), "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def _ddl(
    conn: Connection,
    sql: str,
    step: Step,
    plan: Plan,
    report: AdoptionReport,
    log: Callable[[str], None],
) -> None:
    """One ALTER, retried while a legacy transaction holds the table (each wait is at most
    DDL_LOCK_WAIT_S, so writers queued behind us wait no longer) or while a live writer
    adds a duplicate the new unique key refuses (moved again first)."""
    for attempt in range(1, RETRIES + 1):
        try:
            _run(conn, sql)
            return
        except Exception as exc:
            code = _error_code(exc)
            if attempt == RETRIES or code not in (*_LOCK_ERRORS, _DUPLICATE_ENTRY):
                raise
            if code == _DUPLICATE_ENTRY:
                move_step = next(
                    s for s in plan.steps if s.move is not None and s.table == step.table
                )
                moved = _move(conn, move_step, log)
                report.moved[step.table] = report.moved.get(step.table, 0) + moved
            log(f"{step.table}: retrying ({_error_text(exc)})")
            time.sleep(DDL_LOCK_WAIT_S / 2)


def _move(conn: Connection, step: Step, log: Callable[[str], None]) -> int:
    """Move the step's duplicates in chunks until none is left (a live writer may add
    some meanwhile); return how many moved."""
    move = step.move
    assert move is not None
    _ddl_plain(conn, step.statements[0])
    _run(
        conn,
        f"CREATE TEMPORARY TABLE IF NOT EXISTS {q(MOVE_TABLE)} "
        "(id BIGINT UNSIGNED NOT NULL PRIMARY KEY, keep_id BIGINT UNSIGNED NOT NULL)",
    )
    total = 0
    try:
        for _ in range(MOVE_PASSES):
            pairs = _rows(conn, move.pairs_sql)
            if not pairs:
                break
            moved = sum(_move_chunk(conn, step, c) for c in _chunks(pairs, MOVE_CHUNK_ROWS))
            total += moved
            if moved == len(pairs):  # all moved; a writer's new duplicate fails the key add
                break
    finally:
        _run(conn, f"DROP TEMPORARY TABLE IF EXISTS {q(MOVE_TABLE)}")
    return total


def _move_chunk(conn: Connection, step: Step, chunk: Sequence[tuple[int, int]]) -> int:
    move = step.move
    assert move is not None
    values = ", ".join(f"({int(i)}, {int(k)})" for i, k in chunk)
    for attempt in range(1, RETRIES + 1):
        _run(conn, "START TRANSACTION")
        try:
            _run(conn, f"DELETE FROM {q(MOVE_TABLE)}")
            _run(conn, f"INSERT INTO {q(MOVE_TABLE)} (id, keep_id) VALUES {values}")
            ids = ", ".join(str(int(r[0])) for r in _rows(conn, move.lock_sql))
            if not ids:
                _run(conn, "ROLLBACK")
                return 0
            pointing = sum(int(_scalar(conn, sql.format(rows=ids))) for sql in move.reference_sql)
            if pointing:
                raise AdoptionStopped(
                    f"adoption stopped at '{step.table}: {step.action}': {pointing} row(s) "
                    f"written meanwhile point at duplicate {step.table} rows; nothing of "
                    "this chunk moved. Run migrate again (it will refuse and say what to do)"
                )
            copied = _run(conn, move.copy_sql.format(ids=ids))
            deleted = _run(conn, move.delete_sql.format(ids=ids))
            if copied != deleted:
                raise AdoptionStopped(
                    f"adoption stopped at '{step.table}: {step.action}': copied {copied} "
                    f"rows but deleted {deleted}; rolled back"
                )
            _run(conn, "COMMIT")
            return copied
        except AdoptionError:
            _run(conn, "ROLLBACK")
            raise
        except Exception as exc:
            _run(conn, "ROLLBACK")
            if attempt == RETRIES or _error_code(exc) not in _LOCK_ERRORS:
                raise
            time.sleep(ROW_LOCK_WAIT_S / 2)
    raise AssertionError("unreachable")


def _ddl_plain(conn: Connection, sql: str) -> None:
    """A DDL statement retried on a metadata-lock timeout only."""
    for attempt in range(1, RETRIES + 1):
        try:
            _run(conn, sql)
            return
        except Exception as exc:
            if attempt == RETRIES or _error_code(exc) not in _LOCK_ERRORS:
                raise
            time.sleep(DDL_LOCK_WAIT_S / 2)


def _chunks(rows: Sequence[tuple[int, int]], size: int) -> Iterator[Sequence[tuple[int, int]]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


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


def _rows(conn: Connection, sql: str) -> list[tuple[int, int]]:
    cur = _cursor(conn)
    try:
        cur.execute(sql)
        return [tuple(r) for r in cur.fetchall()]
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
