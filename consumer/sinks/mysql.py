"""One DB transaction per batch: health rows, daily/weekly upserts and alerts, all idempotent.

Every statement is multi-row (PyMySQL's executemany folds `INSERT ... VALUES` into one
statement per ~1 MB), so the cost per record is a tuple, not a round trip. Duplicates are
detected by the unique keys and counted from the affected-row counts, which is why the
engine is created without CLIENT_FOUND_ROWS (a no-op `id=id` update then counts 0).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import pymysql
from pymysql.constants import SERVER_STATUS
from sqlalchemy import Connection, Engine, create_engine, event, exc
from sqlalchemy.pool import ConnectionPoolEntry, PoolResetState

from consumer.health_alerts.rules import Alert
from consumer.sinks.mysql_rows import (
    ALERT_COLUMNS,
    DAILY_FIELDS,
    HEALTH_COLUMNS,
    PARTY_FIELDS,
    WEEKLY_FIELDS,
    alert_row,
    daily_rows,
    render_health_values,
    weekly_rows,
)
from schemas.record import HealthRecord

# Server errors caused by the values of a row: bisecting the batch isolates the row.
ROW_ERROR_CODES = frozenset(
    {
        1048,  # column cannot be null
        1263,  # null to not-null
        1264,  # out of range value
        1265,  # data truncated
        1292,  # incorrect datetime/date value
        1366,  # incorrect value for column
        1406,  # data too long
        1690,  # value out of range in an expression
        3140,  # invalid JSON text (MySQL)
        3819,  # CHECK constraint violated (MySQL)
        4025,  # CHECK constraint failed (MariaDB JSON columns)
    }
)


class RowRejected(Exception):
    """The server rejected the statement because of the values of some row."""


class BugInStatement(Exception):
    """The server could not parse what we sent: retrying cannot help, isolating may."""


PARSE_ERROR = 1064


class DatabaseUnavailable(Exception):
    """Anything else: connection loss, deadlock, missing table... retried, never dropped."""


@dataclass(slots=True)
class WriteResult:
    inserted: int = 0
    duplicates: int = 0
    daily_rows: int = 0
    weekly_rows: int = 0
    new_alerts: list[Alert] = field(default_factory=list)


def make_engine(database_url: str, pool_size: int) -> Engine:
    """The engine every DB call shares; two round trips per flush, not four.

    No pre-ping: a connection the server dropped fails its first statement as a
    disconnect, SQLAlchemy invalidates the pool, and the flush retries it like any outage
    (`DatabaseUnavailable`), so the ping bought nothing but a round trip per flush.
    No blanket rollback when a connection returns to the pool: `_rollback_if_open` asks
    the server status of the last reply instead, so a committed flush is not followed by
    a ROLLBACK while a connection left inside a transaction still is rolled back.
    """
    engine = create_engine(
        database_url,
        pool_size=pool_size,
        max_overflow=4,
        pool_pre_ping=False,
        pool_reset_on_return=None,
        pool_recycle=3600,
        isolation_level="READ COMMITTED",  # no gap locks between partitions' inserts
        connect_args={
            # Without FOUND_ROWS, an `ON DUPLICATE KEY UPDATE id=id` no-op counts 0 rows.
            "client_flag": pymysql.constants.CLIENT.MULTI_RESULTS,
            "connect_timeout": 5,
            "read_timeout": 60,
            "write_timeout": 60,
            "init_command": "SET SESSION sql_mode = 'STRICT_TRANS_TABLES,NO_ENGINE_SUBSTITUTION'",
        },
    )
    event.listen(engine, "reset", _rollback_if_open)
    return engine


def _rollback_if_open(
    dbapi_connection: Any, _record: ConnectionPoolEntry, state: PoolResetState
) -> None:
    """Reset on return: roll back only a connection the server says is in a transaction."""
    if state.terminate_only or state.transaction_was_reset or dbapi_connection is None:
        return
    status = getattr(dbapi_connection, "server_status", None)
    if status is None or status & SERVER_STATUS.SERVER_STATUS_IN_TRANS:
        dbapi_connection.rollback()


def _insert_sql(table: str, columns: tuple[str, ...], on_duplicate: str) -> str:
    cols = ", ".join(f"`{c}`" for c in columns)
    marks = ", ".join(["%s"] * len(columns))
    return f"INSERT INTO {table} ({cols}) VALUES ({marks}) ON DUPLICATE KEY UPDATE {on_duplicate}"


def _slow_upsert_sql(table: str, period_column: str, fields: tuple[str, ...]) -> str:
    """Newer readings win per field; older (replayed) ones only fill NULLs."""
    newer = "VALUES(data_timestamp) >= data_timestamp"
    updates = [
        f"{f} = IF({newer}, COALESCE(VALUES({f}), {f}), COALESCE({f}, VALUES({f})))" for f in fields
    ]
    updates += [f"{p} = COALESCE(VALUES({p}), {p})" for p in PARTY_FIELDS]
    updates.append("update_time = CURRENT_TIMESTAMP")
    # Last: MySQL evaluates assignments left to right, the IFs above must see the old value.
    updates.append("data_timestamp = GREATEST(data_timestamp, VALUES(data_timestamp))")
    columns = ("device_sn", *PARTY_FIELDS, period_column, *fields, "data_timestamp")
    return _insert_sql(table, columns, ", ".join(updates))


# ~250 bytes a row: 2000 rows stay far below any max_allowed_packet (MySQL default 64 MB).
ROWS_PER_STATEMENT = 2000
HEALTH_SQL_HEAD = "INSERT INTO t_user_health_data ({}) VALUES ".format(
    ", ".join(f"`{c}`" for c in HEALTH_COLUMNS)
)
HEALTH_SQL_TAIL = " ON DUPLICATE KEY UPDATE id = id"
DAILY_SQL = _slow_upsert_sql("t_user_health_data_daily", "date", DAILY_FIELDS)
WEEKLY_SQL = _slow_upsert_sql("t_user_health_data_weekly", "week_start", WEEKLY_FIELDS)
ALERT_SQL = _insert_sql("t_alert_info", ALERT_COLUMNS, "id = id")


class MySQLSink:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def write(self, records: list[HealthRecord], alerts: list[Alert]) -> WriteResult:
        """Write one batch atomically; raise RowRejected or DatabaseUnavailable.

        Anything else that escapes is a bug (ours or the driver's): the flush isolates it.
        """
        try:
            with self.engine.begin() as conn:
                return self._write(conn, records, alerts)
        except exc.DBAPIError as err:
            raise classify(err.orig, err.connection_invalidated) from err
        except pymysql.err.MySQLError as err:  # raised by the raw cursor of execute_literal
            raise classify(err, False) from err

    def _write(
        self, conn: Connection, records: list[HealthRecord], alerts: list[Alert]
    ) -> WriteResult:
        result = WriteResult()
        if records:
            for start in range(0, len(records), ROWS_PER_STATEMENT):
                chunk = records[start : start + ROWS_PER_STATEMENT]
                sql = HEALTH_SQL_HEAD + render_health_values(chunk) + HEALTH_SQL_TAIL
                result.inserted += execute_literal(conn, sql)
            result.duplicates = len(records) - result.inserted
            daily = daily_rows(records)
            if daily:
                conn.exec_driver_sql(DAILY_SQL, [r.as_tuple(DAILY_FIELDS) for r in daily])
                result.daily_rows = len(daily)
            weekly = weekly_rows(records)
            if weekly:
                conn.exec_driver_sql(WEEKLY_SQL, [r.as_tuple(WEEKLY_FIELDS) for r in weekly])
                result.weekly_rows = len(weekly)
        if alerts:
            result.new_alerts = self._write_alerts(conn, alerts)
        return result

    def _write_alerts(self, conn: Connection, alerts: list[Alert]) -> list[Alert]:
        """Insert alerts not stored yet; return those, so a replay publishes nothing twice."""
        keys = {(a.record.device_sn, a.rule.id, a.record.timestamp): a for a in alerts}
        placeholders = ", ".join(["(%s, %s, %s)"] * len(keys))
        existing_sql = (
            "SELECT device_sn, rule_id, alert_timestamp FROM t_alert_info "
            f"WHERE (device_sn, rule_id, alert_timestamp) IN ({placeholders})"
        )
        flat: list[Any] = [v for k in keys for v in k]
        existing = {
            (row[0], int(row[1]), row[2])
            for row in conn.exec_driver_sql(existing_sql, tuple(flat)).all()
        }
        new = [a for k, a in keys.items() if k not in existing]
        if not new:
            return []
        health_ids = _health_ids(conn, {(a.record.device_sn, a.record.timestamp) for a in new})
        rows = [
            alert_row(a, health_ids.get((_sn_key(a.record.device_sn), a.record.timestamp)))
            for a in new
        ]
        conn.exec_driver_sql(ALERT_SQL, rows)
        return new


def _health_ids(
    conn: Connection, keys: set[tuple[str, dt.datetime]]
) -> dict[tuple[str, dt.datetime], int]:
    """Row ids of the readings that raised alerts, read back in the writing transaction.

    The ids of one multi-row INSERT are not consecutive under innodb_autoinc_lock_mode=2,
    and a reading stored by an earlier batch (a replay) was not inserted now at all, so
    LAST_INSERT_ID cannot name them; the unique key (device_sn, timestamp) can.
    Keyed by `_sn_key`: the key's collation may match a stored SN that differs in case.
    """
    ordered = sorted(keys)
    placeholders = ", ".join(["(%s, %s)"] * len(ordered))
    sql = (
        "SELECT device_sn, `timestamp`, id FROM t_user_health_data "
        f"WHERE (device_sn, `timestamp`) IN ({placeholders})"
    )
    flat = tuple(v for key in ordered for v in key)
    rows = conn.exec_driver_sql(sql, flat).all()
    return {(_sn_key(row[0]), row[1]): int(row[2]) for row in rows}


def _sn_key(device_sn: str) -> str:
    """A device SN as the unique key compares it (case-insensitive, PAD SPACE collations)."""
    return device_sn.rstrip(" ").casefold()


def execute_literal(conn: Connection, sql: str) -> int:
    """Run SQL whose values are already rendered as escaped literals; return rowcount.

    PyMySQL %-formats the statement whenever it is handed parameters, even an empty tuple
    (and SQLAlchemy's exec_driver_sql hands it one), so a device SN like `SN%s` was stored
    as `SN{}` and `100%` raised. The DB-API cursor called with no arguments at all is the one
    path that sends the text verbatim.
    """
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(sql)
        return int(cursor.rowcount)
    finally:
        cursor.close()


def classify(orig: BaseException | None, connection_invalidated: bool) -> Exception:
    """Row problems bisect; a statement the server cannot parse is our bug; everything
    else (outage, deadlock, lost connection, schema drift) is retried."""
    code = orig.args[0] if orig is not None and orig.args else None
    if isinstance(orig, pymysql.err.ProgrammingError) and code == PARSE_ERROR:
        return BugInStatement(f"{code}: {orig.args[1] if len(orig.args) > 1 else orig}")
    if (
        not connection_invalidated
        and isinstance(orig, pymysql.err.MySQLError)
        and not isinstance(orig, pymysql.err.InterfaceError)
        and code in ROW_ERROR_CODES
    ):
        return RowRejected(f"{code}: {orig.args[1] if len(orig.args) > 1 else orig}")
    return DatabaseUnavailable(f"{type(orig).__name__}: {orig}")
