"""One DB transaction per batch: health rows, daily/weekly upserts and alerts, all idempotent.

Every statement is multi-row (PyMySQL's executemany folds `INSERT ... VALUES` into one
statement per ~1 MB), so the cost per record is a tuple, not a round trip. Duplicates are
detected by the unique keys and counted from the affected-row counts, which is why the
engine is created without CLIENT_FOUND_ROWS (a no-op `id=id` update then counts 0).

The health rows go in with `LOAD DATA LOCAL INFILE ... IGNORE` when the server allows it
(the rows as tab-separated text, sent from memory: the server skips the SQL parser that
took a fifth of its CPU for the multi-row INSERT), else with the rendered INSERT. Both
store the same rows and count the same duplicates; see `load_health_rows` for how the
LOAD DATA path keeps strict mode's guarantees.

A row the server skipped is a duplicate only once a row of its unique key is found in the
table (`MySQLSink._prove_skipped`): under `innodb_autoinc_lock_mode=2` a LOAD DATA that
skips a genuine duplicate can hand the following rows an id another transaction took, and
the server skips those too, on PRIMARY. Such rows are inserted again; what still has no
row raises `RowsNotStored`, never counted as a duplicate.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pymysql
from pymysql.constants import CLIENT, SERVER_STATUS
from pymysql.protocol import MysqlPacket
from sqlalchemy import Connection, Engine, create_engine, event, exc
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import ConnectionPoolEntry, PoolResetState

from consumer.health_alerts.rules import SIGN_FIELDS, Alert
from consumer.sinks.base import ORDER_STORE, Policy, SinkBase, SinkBatch, SinkContext, SinkResult
from consumer.sinks.errors import Bug, Contention, Retryable, RowFault
from consumer.sinks.mysql_rows import (
    ALERT_COLUMNS,
    DAILY_FIELDS,
    HEALTH_COLUMNS,
    PARTY_FIELDS,
    WEEKLY_FIELDS,
    alert_row,
    daily_rows,
    render_health_tsv,
    render_health_values,
    weekly_rows,
)
from schemas.record import HealthRecord

log = logging.getLogger(__name__)

# How a DB error is handled is decided by its class, never by "everything else":
# - the connection failed (client codes 2000-2999, InterfaceError, an invalidated
#   connection) or the server says it cannot work now (SERVER_NOT_READY):
#   `Retryable`, retried forever, health names MySQL;
# - contention (lock wait, deadlock) and an exhausted pool: `Contention`, retried, but
#   MySQL is not down;
# - the server answered with any other error: the values of some row are at fault,
#   `RowRejected` (a `RowFault`); the flush isolates the row (a value out of range, a
#   CHECK, a trigger's SIGNAL, a foreign key of an adopted table, ...) and dead-letters it;
# - a statement the server cannot parse: `BugInStatement` (a `Bug`); anything not from the
#   DB: a bug too (`sinks.errors`).
SERVER_NOT_READY = frozenset(
    {
        1021,  # disk full
        1030,  # error from the storage engine
        1040,  # too many connections
        1044,  # access denied to the database
        1045,  # access denied for the user
        1049,  # unknown database
        1053,  # server shutdown in progress
        1054,  # unknown column: the schema is not what the sink writes (drift)
        1114,  # table is full
        1142,  # command denied on a table
        1143,  # column access denied
        1146,  # table does not exist
        1180,  # error during commit
        1181,  # error during rollback
        1203,  # too many user connections
        1226,  # a user resource limit
        1227,  # privilege needed
        1290,  # --read-only and the like
        1317,  # query interrupted
        1792,  # read-only transaction
        1836,  # read-only mode
        1927,  # connection killed
        1969,  # statement timeout (MariaDB max_statement_time)
        3024,  # statement timeout (MySQL max_execution_time)
    }
)
CONTENTION = frozenset({1205, 1213})  # lock wait timeout, deadlock: retry the transaction


class RowRejected(RowFault):
    """The server rejected the statement because of the values of some row."""


class RowsNotStored(RowRejected):
    """Rows the server skipped although no row of their unique key is in the table (another
    unique index of an adopted table, say): not duplicates, so the flush isolates them."""


class BugInStatement(Bug):
    """The server could not parse what we sent: retrying cannot help, isolating may."""


PARSE_ERROR = 1064


@dataclass(slots=True)
class WriteResult:
    inserted: int = 0
    duplicates: int = 0
    daily_rows: int = 0
    weekly_rows: int = 0
    new_alerts: list[Alert] = field(default_factory=list)


def make_engine(database_url: str, pool_size: int) -> Engine:
    """The consumer's pool: READ COMMITTED, strict sql_mode, no FOUND_ROWS, connections
    that can answer LOAD DATA LOCAL INFILE from memory (`InfileConnection`), and no TLS
    set-up for a local server that the URL does not ask TLS of (`tls_args`).

    Two round trips per flush, not four. No pre-ping: a connection the server dropped
    fails its first statement as a disconnect, SQLAlchemy invalidates the pool, and the
    flush retries it like any outage (`Retryable`), so the ping bought nothing
    but a round trip per flush. No blanket rollback when a connection returns to the
    pool: `_rollback_if_open` asks the server status of the last reply instead, so a
    committed flush is not followed by a ROLLBACK while a connection left inside a
    transaction still is rolled back.
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
            # LOCAL_FILES announces LOAD DATA LOCAL; InfileConnection answers it from
            # memory. (PyMySQL's `local_infile=True` would also let the server read any
            # file this process can read: it stays off.)
            "client_flag": CLIENT.MULTI_RESULTS | CLIENT.LOCAL_FILES,
            "connect_timeout": 5,
            "read_timeout": 60,
            "write_timeout": 60,
            # max_error_count: SHOW WARNINGS lists every duplicate a LOAD DATA skipped.
            "init_command": "SET SESSION sql_mode = 'STRICT_TRANS_TABLES,NO_ENGINE_SUBSTITUTION', "
            f"max_error_count = {MAX_ERROR_COUNT}",
            **tls_args(make_url(database_url)),
        },
    )
    event.listen(engine, "reset", _rollback_if_open)
    event.listen(engine, "do_connect", _connect)
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


def _connect(_dialect: Any, _record: Any, cargs: Any, cparams: Any) -> InfileConnection:
    return InfileConnection(*cargs, **cparams)


LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def tls_args(url: URL) -> dict[str, Any]:
    """`ssl_disabled` for a local server, unless the URL says anything about TLS.

    Without TLS options PyMySQL (1.2 here) runs in "preferred" mode: every new connection
    builds an SSL context, loading the system's CA bundle (1.4% of a replica's CPU in a
    drain, more with connection churn), to encrypt if the server offers TLS, unverified.
    On the loopback or a unix socket that protects nothing, so it is skipped there. Any
    `ssl*` query argument (`?ssl_ca=...`, `?ssl_disabled=false`, ...) or an option file
    (`read_default_file`, which may hold ssl-* options) leaves TLS exactly as PyMySQL
    configures it, and so does every remote host: whoever relies on preferred mode today
    keeps it.
    """
    query = {k.lower() for k in url.query}
    option_file = query & {"read_default_file", "read_default_group"}
    if option_file or any(k.startswith("ssl") for k in query):
        return {}
    host = (url.host or "localhost").lower()
    local = host in LOCAL_HOSTS or host.startswith("127.") or "unix_socket" in query
    return {"ssl_disabled": True} if local else {}


class InfileConnection(pymysql.connections.Connection):  # type: ignore[misc]
    """A PyMySQL connection that answers LOAD DATA LOCAL INFILE with bytes in memory.

    PyMySQL answers the server's "send me file X" by opening X (`_send_local_file` in
    1.2, `LoadLocalFile.send_data` before): rows would have to be written to a file first,
    and the server could ask for any file this process can read. Here the sink arms the
    connection with the rows (`infile`) right before its LOAD DATA statement; the first
    packet read after that is the server's answer to it. If that is the file request,
    the rows are sent as data packets followed by the empty end packet, and the server's
    final OK (or error) is returned in its place, so PyMySQL's result reading sees an
    ordinary OK packet (affected rows, warning count). A request for any other name, or
    without armed rows, is refused: PyMySQL's own file handler is never reached with
    `local_infile` left off. Only the packet reader is overridden; its signature and the
    load-local packet (0xFB + file name) have been stable across PyMySQL releases, and
    the integration tests exercise the path against the real server.
    """

    # Class defaults: the handshake in Connection.__init__ already reads packets.
    infile: bytes | None = None  # rows armed for the next statement's file request
    server_local_infile: bool | None = None  # @@local_infile, read once per connection

    def _read_packet(self, packet_type: Any = MysqlPacket) -> Any:
        packet = super()._read_packet(packet_type)
        data = self.infile
        if data is None:
            return packet
        self.infile = None
        if not packet.is_load_local_packet():
            return packet
        if packet.get_all_data()[1:] != LOAD_DATA_FILE.encode():
            self.write_packet(b"")  # an empty file: the server answers, the protocol stays in step
            super()._read_packet(packet_type)
            raise pymysql.err.OperationalError(
                2000, f"refused LOAD DATA LOCAL of {packet.get_all_data()[1:]!r}"
            )
        step = min(self.max_allowed_packet, INFILE_PACKET_BYTES)
        view = memoryview(data)
        for start in range(0, len(data), step):
            self.write_packet(view[start : start + step])
        self.write_packet(b"")  # end of file
        return super()._read_packet(packet_type)

    def allows_load_data(self) -> bool:
        """Whether the server accepts LOAD DATA LOCAL (asked once per connection)."""
        if self.server_local_infile is None:
            cursor = self.cursor()
            try:
                cursor.execute("SELECT @@GLOBAL.local_infile")
                row = cursor.fetchone()
            finally:
                cursor.close()
            self.server_local_infile = row is not None and str(row[0]) in ("1", "ON")
        return self.server_local_infile


def _insert_sql(table: str, columns: tuple[str, ...], on_duplicate: str) -> str:
    cols = ", ".join(f"`{c}`" for c in columns)
    marks = ", ".join(["%s"] * len(columns))
    return f"INSERT INTO {table} ({cols}) VALUES ({marks}) ON DUPLICATE KEY UPDATE {on_duplicate}"


def _slow_upsert_sql(table: str, period_column: str, fields: tuple[str, ...]) -> str:
    """Newer readings win per field; older (replayed) ones only fill NULLs, and so does a
    reading of the same time (a duplicate: the first one stays, issue 18 S3). A NULL
    data_timestamp (an adopted table that had the column NULL-able) is older than any
    reading, as our default is: NULL must never make the comparison false (issue 18 A4)."""
    newer = "(data_timestamp IS NULL OR VALUES(data_timestamp) > data_timestamp)"
    updates = [
        f"{f} = IF({newer}, COALESCE(VALUES({f}), {f}), COALESCE({f}, VALUES({f})))" for f in fields
    ]
    updates += [f"{p} = COALESCE(VALUES({p}), {p})" for p in PARTY_FIELDS]
    updates.append("update_time = CURRENT_TIMESTAMP")
    # Last: MySQL evaluates assignments left to right, the IFs above must see the old value.
    updates.append(
        "data_timestamp = GREATEST(COALESCE(data_timestamp, VALUES(data_timestamp)), "
        "VALUES(data_timestamp))"
    )
    columns = ("device_sn", *PARTY_FIELDS, period_column, *fields, "data_timestamp")
    return _insert_sql(table, columns, ", ".join(updates))


# ~250 bytes a row: 2000 rows stay far below any max_allowed_packet (MySQL default 64 MB).
ROWS_PER_STATEMENT = 2000
HEALTH_SQL_HEAD = "INSERT INTO t_user_health_data ({}) VALUES ".format(
    ", ".join(f"`{c}`" for c in HEALTH_COLUMNS)
)
HEALTH_SQL_TAIL = " ON DUPLICATE KEY UPDATE id = id"
# The name the LOAD DATA statement gives: InfileConnection sends the armed rows for it and
# opens nothing. IGNORE: a duplicate key skips the row (a 1062 warning), like `id = id`.
LOAD_DATA_FILE = "healthstream:rows"
HEALTH_LOAD_SQL = (
    f"LOAD DATA LOCAL INFILE '{LOAD_DATA_FILE}' IGNORE INTO TABLE t_user_health_data "
    "CHARACTER SET utf8mb4 FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' "
    "LINES TERMINATED BY '\\n' ({})".format(", ".join(f"`{c}`" for c in HEALTH_COLUMNS))
)
# Rows per LOAD DATA: the warning count in the OK packet stops at 65535, so a statement
# never skips more rows than that (see load_health_rows); ~1.7 MB of text.
LOAD_ROWS_PER_STATEMENT = 10_000
INFILE_PACKET_BYTES = 64 * 1024
# The server refuses LOAD DATA LOCAL (local_infile switched off since the connection
# asked): MariaDB/MySQL 1148, MySQL 8 3948.
LOAD_DATA_REFUSED = frozenset({1148, 3948})
DUPLICATE_KEY = 1062
MAX_ERROR_COUNT = 65535  # the server's maximum; the default (64) lists too few warnings
DAILY_SQL = _slow_upsert_sql("t_user_health_data_daily", "date", DAILY_FIELDS)
WEEKLY_SQL = _slow_upsert_sql("t_user_health_data_weekly", "week_start", WEEKLY_FIELDS)
ALERT_SQL = _insert_sql("t_alert_info", ALERT_COLUMNS, "id = id")


# The vital signs the rules read (rules.SIGN_FIELDS), and what rebuilding a device's trend
# runs reads of its stored readings.
SIGN_COLUMNS = tuple(sorted({f for fields in SIGN_FIELDS.values() for f in fields}))
RUN_COLUMNS = ("device_sn", "timestamp", "customer_id", *SIGN_COLUMNS)


class RedoWithInsert(Exception):
    """The LOAD DATA of a batch cannot be used as it is: roll back, write it with INSERT."""


class MySQLSink(SinkBase):
    """The store of record: writes batches; `load_data=False` forces the rendered INSERT
    for the health rows (otherwise LOAD DATA is used on every connection whose server
    allows it)."""

    name = "mysql"
    dependency = "mysql"
    policy = Policy.REQUIRED
    order = ORDER_STORE

    def __init__(self, engine: Engine, load_data: bool = True) -> None:
        self.engine = engine
        self.load_data = load_data
        # Batches whose LOAD DATA was rolled back and redone with INSERT (values the
        # server would have coerced, or LOAD DATA refused). Unsynchronized: indicative.
        self.load_data_redone = 0
        # Rows a LOAD DATA skipped without a row of their key in the table, inserted again
        # (the auto-increment hazard above). Unsynchronized: indicative.
        self.rows_refilled = 0
        self.exact_keys: frozenset[str] | None = None  # see _exact_keys
        self.partitioned: bool | None = None  # see _partitioned

    def write_batch(self, batch: SinkBatch) -> SinkResult:
        """The sink protocol: the readings and the alerts fired on them, one transaction;
        a batch without readings opens none."""
        if not batch.records and not batch.alerts:
            return SinkResult()
        result = self.write(batch.records, batch.alerts)
        return SinkResult(result.inserted, result.duplicates, result.new_alerts)

    def health(self) -> tuple[bool, str | None]:
        try:
            with self.engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
        except Exception as exc:
            return False, f"{type(exc).__name__}: {exc}"
        return True, None

    def stats(self) -> dict[str, int]:
        return {"load_data_redone": self.load_data_redone, "rows_refilled": self.rows_refilled}

    def write(self, records: list[HealthRecord], alerts: list[Alert]) -> WriteResult:
        """Write one batch atomically; raise RowRejected or Retryable.

        Anything else that escapes is a bug (ours or the driver's): the flush isolates it.
        """
        try:
            try:
                with self.engine.begin() as conn:
                    return self._write(conn, records, alerts, self.load_data)
            except RedoWithInsert:
                # Rolled back: nothing of the LOAD DATA stays. The INSERT path raises the
                # strict-mode error the flush bisects on, or stores what LOAD DATA refused.
                self.load_data_redone += 1
                with self.engine.begin() as conn:
                    return self._write(conn, records, alerts, False)
        except exc.DBAPIError as err:
            raise classify(err.orig, err.connection_invalidated) from err
        except pymysql.err.MySQLError as err:  # raised by the raw DB-API cursors
            raise classify(err, False) from err
        except exc.TimeoutError as err:  # no pooled connection free in pool_timeout
            raise Contention(f"connection pool exhausted: {err}") from err

    def _write(
        self, conn: Connection, records: list[HealthRecord], alerts: list[Alert], load_data: bool
    ) -> WriteResult:
        result = WriteResult()
        if records:
            # The first reading of a key is the reading, in every table (issue 18, S3); a
            # reading repeated inside the batch is sent once, so the server skips only
            # readings stored by earlier batches.
            unique = distinct_readings(records)
            result.inserted = self._health_rows(conn, unique, load_data)
            result.duplicates = len(records) - result.inserted
            records = unique
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

    def _health_rows(self, conn: Connection, records: list[HealthRecord], load_data: bool) -> int:
        """Insert the readings (distinct keys) not stored yet; return how many were inserted."""
        dbapi = conn.connection.dbapi_connection
        inserted = 0
        loaded = (
            load_data
            and isinstance(dbapi, InfileConnection)
            and not self._partitioned(conn)
            and dbapi.allows_load_data()
        )
        skipped_on: Counter[str] = Counter()  # LOAD DATA: skipped rows per index named
        if loaded:
            assert isinstance(dbapi, InfileConnection)
            try:
                for start in range(0, len(records), LOAD_ROWS_PER_STATEMENT):
                    chunk = records[start : start + LOAD_ROWS_PER_STATEMENT]
                    done, on = load_health_rows(dbapi, chunk)
                    inserted += done
                    skipped_on += on
            except pymysql.err.MySQLError as err:
                if not err.args or err.args[0] not in LOAD_DATA_REFUSED:
                    raise
                dbapi.server_local_infile = False
                raise RedoWithInsert(f"LOAD DATA LOCAL refused: {err}") from err
            if inserted < len(records) and set(skipped_on) <= self._exact_keys(conn):
                return inserted  # the server named the (device_sn, timestamp) key each time
        else:
            inserted = insert_health_rows(conn, records)
        if inserted < len(records):
            inserted += self._prove_skipped(conn, records)
        return inserted

    def _partitioned(self, conn: Connection) -> bool:
        """Whether the health table is partitioned (0005): then the rendered INSERT, never
        LOAD DATA. A partitioned table cannot keep `id` unique by a key (every unique key
        must hold the partitioning column), and concurrent LOAD DATA ... IGNORE statements
        that skip duplicates then stored rows sharing an id (observed, under every
        auto-increment lock mode, by tests/integration/test_concurrent_duplicates.py; the
        mechanism inside the partition handler was not traced), where INSERT ... ON
        DUPLICATE KEY did not. Asked once per sink."""
        if self.partitioned is None:
            found = conn.exec_driver_sql(
                "SELECT 1 FROM information_schema.PARTITIONS WHERE TABLE_SCHEMA = DATABASE() "
                "AND TABLE_NAME = 't_user_health_data' AND PARTITION_NAME IS NOT NULL LIMIT 1"
            ).first()
            self.partitioned = found is not None
        return self.partitioned

    def _exact_keys(self, conn: Connection) -> frozenset[str]:
        """The unique indexes whose duplicate proves a row of the same reading exists: the
        (device_sn, timestamp) keys, when device_sn compares byte for byte (on a
        case-folding collation the row may be another device's: checked row by row).
        Asked once per sink (the schema is checked at start-up)."""
        if self.exact_keys is None:
            exact = health_sn_collation(conn).endswith("_bin")
            self.exact_keys = health_key_names(conn) if exact else frozenset()
        return self.exact_keys

    def _prove_skipped(self, conn: Connection, records: list[HealthRecord]) -> int:
        """Make sure every skipped reading has a row of its key; return rows added.

        Runs for a batch in which the server skipped rows that it did not itself name as
        duplicates of the (device_sn, timestamp) key (the INSERT's no-op updates say
        nothing; a LOAD DATA warning may name PRIMARY), inside the batch's transaction, so
        what it reads is what this commit will hold. The readings still without a row are
        inserted again with INSERT IGNORE, which names the index of every row it skips:
        - none skipped, or only on the (device_sn, timestamp) key byte for byte: proven;
        - some on PRIMARY: auto-increment ids other transactions hold (the lock-mode-2
          hazard, and seen right after a server restart, when the statement's ids start
          below rows already there): `Contention`, the batch is rolled back and retried;
        - on any other index (a unique key of an adopted table, a case-folding collation
          folding two devices' SNs): `RowsNotStored`, the rows are isolated, never taken
          for duplicates.
        """
        missing = absent_keys(conn, records)
        if not missing:
            return 0
        self.rows_refilled += len(missing)
        log.warning(
            "skipped rows are not duplicates; inserting them again",
            extra={"rows": len(missing), "batch": len(records)},
        )
        added, skipped_on = insert_ignore_health_rows(conn, missing)
        missing = absent_keys(conn, missing) if added < len(missing) else []
        if missing and "PRIMARY" in skipped_on:
            raise Contention(
                f"{skipped_on['PRIMARY']} rows skipped on PRIMARY: auto-increment ids held "
                "by other transactions (innodb_autoinc_lock_mode=2, or a restart); retrying"
            )
        if missing:
            first = missing[0]
            raise RowsNotStored(
                f"{len(missing)} readings skipped by the server without a row of their key "
                f"(device_sn, timestamp), first {first.device_sn!r}@{first.timestamp} (a "
                "stored SN that differs only in case, on a case-folding collation, or another "
                f"unique index: {', '.join(sorted(skipped_on)) or 'not named'})"
            )
        return added

    def recent_readings(
        self, first_seen: dict[str, dt.datetime], per_device: int
    ) -> list[HealthRecord]:
        """Up to `per_device` stored readings of each device from before its first reading
        in the batch at hand, oldest first: what its trend runs are rebuilt from."""
        if not first_seen or per_device <= 0:
            return []
        devices = sorted(first_seen.items())
        cols = ", ".join(f"`{c}`" for c in RUN_COLUMNS)
        before = " OR ".join(["(device_sn = %s AND `timestamp` < %s)"] * len(devices))
        sql = (
            f"SELECT {cols} FROM (SELECT {cols}, ROW_NUMBER() OVER (PARTITION BY device_sn "
            f"ORDER BY `timestamp` DESC) AS rn FROM t_user_health_data WHERE {before}) "
            "AS recent WHERE rn <= %s ORDER BY `timestamp`"
        )
        params = (*(v for device in devices for v in device), per_device)
        try:
            with self.engine.connect() as conn:
                rows = conn.exec_driver_sql(sql, params).all()
        except exc.DBAPIError as err:
            raise classify(err.orig, err.connection_invalidated) from err
        except exc.TimeoutError as err:
            raise Contention(f"connection pool exhausted: {err}") from err
        return [HealthRecord(**dict(zip(RUN_COLUMNS, row, strict=True))) for row in rows]

    def _write_alerts(self, conn: Connection, alerts: list[Alert]) -> list[Alert]:
        """Insert alerts not stored yet; return those, so a replay publishes nothing twice.

        Keyed by the SN byte for byte (`_sn_key`), as the readings are. Every new alert
        must be inserted: a row skipped all the same (on another unique key) raises
        `RowsNotStored` instead of being published.
        """
        keys = {(_sn_key(a.record.device_sn), a.rule.id, a.record.timestamp): a for a in alerts}
        placeholders = ", ".join(["(%s, %s, %s)"] * len(keys))
        existing_sql = (
            "SELECT device_sn, rule_id, alert_timestamp FROM t_alert_info "
            f"WHERE (device_sn, rule_id, alert_timestamp) IN ({placeholders})"
        )
        flat: list[Any] = [v for k in keys for v in k]
        existing = {
            (_sn_key(row[0]), int(row[1]), row[2])
            for row in conn.exec_driver_sql(existing_sql, tuple(flat)).all()
        }
        new = [a for k, a in keys.items() if k not in existing]
        if not new:
            return []
        stored = _stored_readings(conn, {(a.record.device_sn, a.record.timestamp) for a in new})
        # An alert stands only on the reading that is stored: a later reading of the same
        # key with other values (a duplicate) is not the reading, whatever it measured.
        new = [a for a in new if _shows(stored.get(_alert_key(a)), a)]
        if not new:
            return []
        rows = [alert_row(a, stored[_alert_key(a)][0]) for a in new]
        inserted = conn.exec_driver_sql(ALERT_SQL, rows).rowcount
        if inserted != len(rows):
            raise RowsNotStored(f"{len(rows) - inserted} of {len(rows)} new alerts not inserted")
        return new


def _stored_readings(
    conn: Connection, keys: set[tuple[str, dt.datetime]]
) -> dict[tuple[str, dt.datetime], tuple[int, dict[str, Any]]]:
    """Row id and vital signs of the readings that raised alerts, read back in the writing
    transaction.

    The ids of one multi-row INSERT are not consecutive under innodb_autoinc_lock_mode=2,
    and a reading stored by an earlier batch (a replay) was not inserted now at all, so
    LAST_INSERT_ID cannot name them; the unique key (device_sn, timestamp) can.
    Keyed by `_sn_key`: a row of another case (a case-folding collation) is not this
    reading's.
    """
    ordered = sorted(keys)
    placeholders = ", ".join(["(%s, %s)"] * len(ordered))
    signs = ", ".join(f"`{c}`" for c in SIGN_COLUMNS)
    sql = (
        f"SELECT device_sn, `timestamp`, id, {signs} FROM t_user_health_data "
        f"WHERE (device_sn, `timestamp`) IN ({placeholders})"
    )
    flat = tuple(v for key in ordered for v in key)
    rows = conn.exec_driver_sql(sql, flat).all()
    return {
        (_sn_key(row[0]), row[1]): (int(row[2]), dict(zip(SIGN_COLUMNS, row[3:], strict=True)))
        for row in rows
    }


def _alert_key(alert: Alert) -> tuple[str, dt.datetime]:
    return _sn_key(alert.record.device_sn), alert.record.timestamp


def _shows(stored: tuple[int, dict[str, Any]] | None, alert: Alert) -> bool:
    """Whether the stored reading shows the value the alert fired on. Compared as decimal
    text: an adopted legacy table keeps temperature in a DOUBLE, and the float 36.7 is not
    exactly Decimal("36.7")."""
    if stored is None:
        return False
    value = stored[1].get(alert.field)
    return value is not None and Decimal(str(value)) == Decimal(str(alert.value))


def distinct_readings(records: list[HealthRecord]) -> list[HealthRecord]:
    """The first record of each (device_sn, timestamp), in batch order."""
    first: dict[tuple[str, dt.datetime], HealthRecord] = {}
    for r in records:
        first.setdefault((r.device_sn, r.timestamp), r)
    return records if len(first) == len(records) else list(first.values())


# Keys per existence check: a row-constructor IN list the unique index answers by ranges.
KEYS_PER_CHECK = 1000


def absent_keys(conn: Connection, records: list[HealthRecord]) -> list[HealthRecord]:
    """The records no row of whose unique key (device_sn, timestamp) is in the table.

    Compared byte for byte (`_sn_key`, whole seconds as stored): a reading a case-folding
    collation folds onto another device's row has no row of its own.
    """
    keys = {(r.device_sn, r.timestamp.replace(microsecond=0)) for r in records}
    ordered = sorted(keys)
    present: set[tuple[str, dt.datetime]] = set()
    for start in range(0, len(ordered), KEYS_PER_CHECK):
        chunk = ordered[start : start + KEYS_PER_CHECK]
        placeholders = ", ".join(["(%s, %s)"] * len(chunk))
        sql = (
            "SELECT device_sn, `timestamp` FROM t_user_health_data "
            f"WHERE (device_sn, `timestamp`) IN ({placeholders})"
        )
        flat = tuple(v for key in chunk for v in key)
        present.update((_sn_key(row[0]), row[1]) for row in conn.exec_driver_sql(sql, flat))
    return [
        r
        for r in records
        if (_sn_key(r.device_sn), r.timestamp.replace(microsecond=0)) not in present
    ]


def insert_health_rows(conn: Connection, records: list[HealthRecord]) -> int:
    """The rendered multi-row INSERT of the health rows; return the rows inserted."""
    inserted = 0
    for start in range(0, len(records), ROWS_PER_STATEMENT):
        chunk = records[start : start + ROWS_PER_STATEMENT]
        sql = HEALTH_SQL_HEAD + render_health_values(chunk) + HEALTH_SQL_TAIL
        inserted += execute_literal(conn, sql)
    return inserted


HEALTH_IGNORE_HEAD = HEALTH_SQL_HEAD.replace("INSERT INTO", "INSERT IGNORE INTO", 1)


def insert_ignore_health_rows(
    conn: Connection, records: list[HealthRecord]
) -> tuple[int, Counter[str]]:
    """INSERT IGNORE of the rows; return the rows inserted and, per index name, the rows
    skipped as duplicates on it. A warning that is not a duplicate key (a value IGNORE
    coerced) raises RedoWithInsert: the strict INSERT then refuses or stores it exactly."""
    inserted = 0
    skipped_on: Counter[str] = Counter()
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        for start in range(0, len(records), ROWS_PER_STATEMENT):
            chunk = records[start : start + ROWS_PER_STATEMENT]
            cursor.execute(HEALTH_IGNORE_HEAD + render_health_values(chunk))
            inserted += int(cursor.rowcount)
            if int(cursor.warning_count):
                cursor.execute("SHOW WARNINGS")
                for row in cursor.fetchall():
                    if int(row[1]) != DUPLICATE_KEY:
                        raise RedoWithInsert(f"INSERT IGNORE warned {row[1]}: {row[2]}")
                    skipped_on[duplicate_key_name(str(row[2]))] += 1
    finally:
        cursor.close()
    return inserted, skipped_on


def _sn_key(device_sn: str) -> str:
    """A device SN as a reading's identity: byte for byte (issue 18, S4). On a table whose
    collation folds case (an adopted legacy one), a reading the key folds onto another
    device's row therefore has no row of its own: it is isolated and dead-lettered, never
    taken for a duplicate. Blanks at the end count for nothing in either (PAD SPACE
    collations; the contract strips them anyway)."""
    return device_sn.rstrip(" ")


def load_health_rows(
    dbapi: InfileConnection, records: list[HealthRecord]
) -> tuple[int, Counter[str]]:
    """LOAD DATA LOCAL INFILE ... IGNORE of the rows, sent from memory; return the rows
    inserted and, per index name, how many rows were skipped as a duplicate on it.

    IGNORE (which LOCAL implies anyway) turns what strict mode refuses in an INSERT into
    a warning: a value too long, out of range or not a date is coerced and stored, a row
    that fails a CHECK constraint (or a foreign key, a partition) is skipped. So the
    result is kept only when every warning is a duplicate key (1062), one per skipped
    row, which is what the INSERT's `ON DUPLICATE KEY UPDATE id = id` makes of the same
    rows. Anything else raises RedoWithInsert: the transaction is rolled back and
    `MySQLSink.write` redoes the batch with the INSERT, which stores the same rows or
    raises the error the flush bisects down to the dead-letter topic. Which index each
    duplicate names tells a proven duplicate (the (device_sn, timestamp) key: a row of the
    key exists) from a row skipped on PRIMARY (the auto-increment hazard, issue 16).

    The warning count comes in the OK packet: a batch without duplicates costs no extra
    round trip. With duplicates (replays), SHOW WARNINGS lists them; the session's
    max_error_count (make_engine) keeps all of a statement's warnings listable.
    """
    data = render_health_tsv(records).encode("utf-8")
    cursor = dbapi.cursor()
    dbapi.infile = data
    rows: list[Any] = []
    try:
        cursor.execute(HEALTH_LOAD_SQL)
        inserted = int(cursor.rowcount)
        warnings = int(cursor.warning_count)
        skipped = len(records) - inserted
        if warnings == skipped == 0:
            return inserted, Counter()
        if warnings == skipped <= MAX_ERROR_COUNT:
            cursor.execute("SHOW WARNINGS")
            rows = list(cursor.fetchall())
    finally:
        dbapi.infile = None
        cursor.close()
    codes = [int(row[1]) for row in rows]
    if warnings == skipped == len(codes) and all(code == DUPLICATE_KEY for code in codes):
        return inserted, Counter(duplicate_key_name(str(row[2])) for row in rows)
    other = sorted({c for c in codes if c != DUPLICATE_KEY})
    raise RedoWithInsert(
        f"LOAD DATA: {warnings} warnings (codes {other or 'not listed'}) for {skipped} skipped rows"
    )


_DUPLICATE_KEY_NAME = re.compile(r"for key '([^']*)'\s*$")


def duplicate_key_name(message: str) -> str:
    """The index a 1062 message names: MariaDB says `for key 'uk'`, MySQL 8 `for key
    't.uk'`; "" when the message has another form (then nothing is taken as proven)."""
    found = _DUPLICATE_KEY_NAME.search(message)
    return found.group(1).rsplit(".", 1)[-1] if found else ""


def health_sn_collation(conn: Connection) -> str:
    """The collation of t_user_health_data.device_sn ('' if it cannot be read)."""
    sql = (
        "SELECT COLLATION_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() "
        "AND TABLE_NAME = 't_user_health_data' AND COLUMN_NAME = 'device_sn'"
    )
    return str(conn.exec_driver_sql(sql).scalar() or "")


def health_key_names(conn: Connection) -> frozenset[str]:
    """The unique indexes of t_user_health_data on exactly the columns device_sn and
    timestamp, in either order (the same uniqueness): ours, an adopted legacy table's
    under another name, or a time-leading one a DBA built (docs/capacity.md, E2)."""
    sql = (
        "SELECT INDEX_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() "
        "AND TABLE_NAME = 't_user_health_data' AND NON_UNIQUE = 0 GROUP BY INDEX_NAME "
        "HAVING GROUP_CONCAT(COLUMN_NAME ORDER BY SEQ_IN_INDEX) "
        "IN ('device_sn,timestamp', 'timestamp,device_sn')"
    )
    return frozenset(str(row[0]) for row in conn.exec_driver_sql(sql))


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
    """The error class of a DB-API error (see SERVER_NOT_READY): total, one rule per class."""
    code = orig.args[0] if orig is not None and orig.args else None
    if (
        connection_invalidated
        or not isinstance(orig, pymysql.err.MySQLError)
        or isinstance(orig, pymysql.err.InterfaceError)
        or not isinstance(code, int)
        or 2000 <= code < 3000  # client errors: the connection, not the statement
    ):
        return Retryable(f"{type(orig).__name__}: {orig}")
    text = f"{code}: {orig.args[1] if len(orig.args) > 1 else orig}"
    if code in CONTENTION:
        return Contention(text)
    if code in SERVER_NOT_READY:
        return Retryable(text)
    if code == PARSE_ERROR:
        return BugInStatement(text)
    return RowRejected(text)


def build_sink(context: SinkContext) -> MySQLSink:
    return MySQLSink(context.engine, load_data=context.settings.db_load_data)
