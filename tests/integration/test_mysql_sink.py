"""MySQLSink on the real server: LOAD DATA LOCAL INFILE and the INSERT fallback store the
same rows, count the same duplicates, and a value strict mode refuses is still refused.

Each test gets a private, freshly migrated database (no Kafka).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pymysql
import pytest
from sqlalchemy import Engine, create_engine

import consumer.sinks.mysql as mysql
from consumer.db.migrate import migrate
from consumer.health_alerts.rules import Alert, HealthRule
from consumer.sinks.mysql import (
    InfileConnection,
    MySQLSink,
    RowRejected,
    make_engine,
)
from schemas.record import HealthRecord
from tests.records import make_record

pytestmark = pytest.mark.integration

# Everything the escaping of either path must get byte-exact.
HOSTILE_SN = "SN'q\"\\b\tt\nn\r\x00z\x1a\\N%s%%é😀 "
RULE = HealthRule(
    id=7,
    rule_type="heart_rate_rule",
    physical_sign="heart_rate",
    threshold_min=Decimal(40),
    threshold_max=Decimal(120),
    trend_duration=1,
    severity_level="critical",
    alert_message="hr",
    customer_id=0,
)
COLUMNS = (
    "device_sn, user_id, org_id, customer_id, heart_rate, pressure_high, pressure_low, "
    "blood_oxygen, stress, step, temperature, latitude, longitude, altitude, distance, "
    "calorie, sleep, timestamp, upload_method, upload_method_raw"
)


@pytest.fixture
def url(database: tuple[str, Engine]) -> str:
    """Our schema without 0005's partitions: the table an adopted database has, where the
    sink takes its LOAD DATA path (on the partitioned table it always INSERTs; see
    test_a_partitioned_table_is_written_with_insert_and_keeps_ids_unique)."""
    migrate(database[0])
    with database[1].begin() as conn:
        conn.exec_driver_sql("ALTER TABLE t_user_health_data REMOVE PARTITIONING")
    return database[0]


def test_a_partitioned_table_is_written_with_insert_and_keeps_ids_unique(
    database: tuple[str, Engine], loads: list[int]
) -> None:
    migrate(database[0])
    engine = make_engine(database[0], pool_size=1)
    try:
        sink = MySQLSink(engine)
        records = [make_record(f"P-{d}", seconds=s) for d in range(20) for s in range(0, 50, 5)]
        first = sink.write(records, [])
        replay = sink.write([*records[::2], make_record("P-new")], [])
        with engine.connect() as conn:
            rows, ids = conn.exec_driver_sql(
                "SELECT COUNT(*), COUNT(DISTINCT id) FROM t_user_health_data"
            ).one()
    finally:
        engine.dispose()
    assert loads == []  # never LOAD DATA on a partitioned table
    assert (first.inserted, first.duplicates) == (200, 0)
    assert (replay.inserted, replay.duplicates) == (1, 100)
    assert rows == ids == 201


@pytest.fixture
def engine(url: str) -> Iterator[Engine]:
    e = make_engine(url, pool_size=2)
    yield e
    e.dispose()


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of rows of every LOAD DATA the sink runs."""
    calls: list[int] = []
    real = mysql.load_health_rows

    def spy(dbapi: InfileConnection, records: list[HealthRecord]) -> tuple[int, Counter[str]]:
        calls.append(len(records))
        return real(dbapi, records)

    monkeypatch.setattr(mysql, "load_health_rows", spy)
    return calls


def batch() -> list[HealthRecord]:
    return [
        make_record(HOSTILE_SN, seconds=0, heart_rate=150, upload_method="4G\t\\x"),
        make_record(HOSTILE_SN, seconds=1, temperature=None, customer_id=None, user_id=None),
        make_record("NULL", seconds=2, upload_method="\\N", sleep=Decimal("7.25")),
        make_record("B-1", seconds=3, latitude=Decimal("-33.123456"), distance=Decimal("0.00")),
        make_record("B-1", seconds=3, heart_rate=99),  # same key in the same batch
    ]


def stored(engine: Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(
            f"SELECT {COLUMNS} FROM t_user_health_data ORDER BY device_sn, timestamp"
        ).all()
    return [tuple(r) for r in rows]


def written_by(url: str, load_data: bool, records: list[HealthRecord]) -> list[tuple[Any, ...]]:
    engine = make_engine(url, pool_size=1)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("DELETE FROM t_user_health_data")
        MySQLSink(engine, load_data=load_data).write(records, [])
        return stored(engine)
    finally:
        engine.dispose()


@pytest.mark.parametrize("load_data", [True, False], ids=["load_data", "insert"])
def test_both_paths_store_rows_count_duplicates_and_link_alerts(
    engine: Engine, loads: list[int], load_data: bool
) -> None:
    sink = MySQLSink(engine, load_data=load_data)
    records = batch()
    alerts = [Alert(RULE, records[0], 150, "heart_rate")]
    result = sink.write(records, alerts)
    assert (result.inserted, result.duplicates, result.new_alerts) == (4, 1, alerts)
    assert loads == ([4] if load_data else [])  # the repeated key is sent once
    rows = stored(engine)
    assert [r[0] for r in rows] == ["B-1", "NULL", HOSTILE_SN, HOSTILE_SN]
    # The second reading: no temperature, unbound (customer 0).
    assert rows[3][:4] == (HOSTILE_SN, None, 2001, 0) and rows[3][10] is None
    assert rows[3][16:] == (None, records[1].timestamp, "wifi", "wifi")
    assert rows[2][18:] == ("common_event", "4G\t\\x")  # raw: as the decoder handed it
    assert rows[0][4] == 66  # the first of the two readings with one key is kept
    with engine.connect() as conn:
        health_id = conn.exec_driver_sql(
            "SELECT a.health_id = h.id FROM t_alert_info a JOIN t_user_health_data h "
            "ON h.device_sn = a.device_sn AND h.timestamp = a.alert_timestamp"
        ).scalar()
    assert health_id == 1

    again = sink.write(records, alerts)  # a replay stores nothing twice
    assert (again.inserted, again.duplicates, again.new_alerts) == (0, 5, [])
    assert stored(engine) == rows
    assert sink.load_data_redone == 0


def test_load_data_and_insert_store_byte_identical_rows(url: str, loads: list[int]) -> None:
    records = batch()
    assert written_by(url, True, records) == written_by(url, False, records)
    assert loads == [len(records) - 1]  # the repeated key is sent once


@pytest.mark.parametrize(
    "bad",
    [
        {"device_sn": "X" * 300},  # too long: LOAD DATA would cut it (warning 1265)
        {"heart_rate": 2**40},  # out of range: LOAD DATA would store 2147483647
        {"temperature": Decimal("1000.00")},  # DECIMAL(5,2): LOAD DATA would store 999.99
    ],
    ids=["too_long", "int_out_of_range", "decimal_out_of_range"],
)
def test_a_value_strict_mode_refuses_is_refused_on_the_load_data_path(
    engine: Engine, loads: list[int], bad: dict[str, Any]
) -> None:
    """IGNORE makes the server coerce such a value with a warning: the sink sees a warning
    that no duplicate explains, rolls the LOAD DATA back and redoes the batch with the
    INSERT, whose strict-mode error the flush bisects to the dead-letter topic."""
    sink = MySQLSink(engine)
    good = make_record("GOOD", seconds=0)
    with pytest.raises(RowRejected):
        sink.write([good, make_record(**{"device_sn": "BAD", **bad})], [])
    assert loads == [2] and sink.load_data_redone == 1
    assert stored(engine) == []  # the LOAD DATA's rows were rolled back with it
    # What the flush's bisection then does: the good half goes in, by LOAD DATA.
    assert sink.write([good], []).inserted == 1
    assert loads == [2, 1] and sink.load_data_redone == 1


def test_a_row_a_check_constraint_skips_is_refused_not_counted_as_a_duplicate(
    engine: Engine, loads: list[int]
) -> None:
    """IGNORE skips a row that fails a CHECK constraint (warning 4025), exactly as it
    skips a duplicate: only the warnings' codes tell the two apart."""
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "ALTER TABLE t_user_health_data ADD CONSTRAINT chk_hr CHECK (heart_rate < 250)"
        )
    sink = MySQLSink(engine)
    good = [make_record("GOOD", seconds=i) for i in range(3)]
    sink.write(good[:1], [])
    with pytest.raises(RowRejected, match="4025"):
        sink.write([*good, make_record("BAD", heart_rate=260)], [])
    assert loads == [1, 4] and sink.load_data_redone == 1
    assert len(stored(engine)) == 1


def test_duplicates_alone_do_not_count_as_coerced_values(engine: Engine, loads: list[int]) -> None:
    """More duplicates than the server lists by default (max_error_count 64)."""
    sink = MySQLSink(engine)
    records = [make_record("D", seconds=i) for i in range(300)]
    sink.write(records[:200], [])
    result = sink.write(records, [])
    assert (result.inserted, result.duplicates, sink.load_data_redone) == (100, 200, 0)
    assert loads == [200, 300]
    result = sink.write([*records, *records], [])  # twice in one batch, all stored
    assert (result.inserted, result.duplicates, sink.load_data_redone) == (0, 600, 0)


def test_insert_is_used_where_load_data_is_not_available(
    url: str, engine: Engine, loads: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    # An engine not made by make_engine: plain PyMySQL connections.
    plain = create_engine(url)
    try:
        assert MySQLSink(plain).write([make_record("P", seconds=0)], []).inserted == 1
    finally:
        plain.dispose()
    assert loads == []
    # The server says local_infile = OFF (a global of the shared server: not switched here).
    monkeypatch.setattr(InfileConnection, "allows_load_data", lambda self: False)
    assert MySQLSink(engine).write([make_record("P", seconds=1)], []).inserted == 1
    assert loads == []
    assert len(stored(engine)) == 2


def test_a_refused_load_data_is_redone_with_insert_and_not_tried_again(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """local_infile switched off after the connection asked: error 1148, then INSERT."""
    tried: list[InfileConnection] = []

    def refused(dbapi: InfileConnection, records: list[HealthRecord]) -> tuple[int, Counter[str]]:
        tried.append(dbapi)
        raise pymysql.err.OperationalError(1148, "The used command is not allowed")

    monkeypatch.setattr(mysql, "load_health_rows", refused)
    sink = MySQLSink(engine)
    assert sink.write([make_record("R", seconds=0)], []).inserted == 1
    assert sink.load_data_redone == 1 and len(tried) == 1
    assert tried[0].server_local_infile is False
    sink.write([make_record("R", seconds=1)], [])
    assert len(stored(engine)) == 2


def test_the_connection_sends_no_file_it_was_not_given(engine: Engine) -> None:
    """PyMySQL's `local_infile` would open whatever file the server names; the sink's
    connections answer only the name of their own statement, with the armed rows."""
    with engine.connect() as conn:
        dbapi = conn.connection.dbapi_connection
        assert isinstance(dbapi, InfileConnection) and dbapi.allows_load_data()
        cursor = dbapi.cursor()
        sql = mysql.HEALTH_LOAD_SQL.replace(mysql.LOAD_DATA_FILE, "/etc/hostname")
        dbapi.infile = b"ROGUE\n"
        with pytest.raises(pymysql.err.OperationalError, match="refused LOAD DATA LOCAL"):
            cursor.execute(sql)
        assert dbapi.infile is None
        cursor.execute("SELECT COUNT(*) FROM t_user_health_data")  # still in step
        assert cursor.fetchone() == (0,)
        conn.rollback()
    with engine.connect() as conn:
        dbapi = conn.connection.dbapi_connection
        cursor = dbapi.cursor()
        with pytest.raises(RuntimeError, match="local_infile option is false"):
            cursor.execute(mysql.HEALTH_LOAD_SQL)  # nothing armed: PyMySQL refuses
        conn.invalidate()
    assert stored(engine) == []


def test_the_local_database_is_reached_without_tls_set_up(engine: Engine) -> None:
    with engine.connect() as conn:
        dbapi = conn.connection.dbapi_connection
        assert isinstance(dbapi, InfileConnection) and not dbapi.ssl
