"""Adopting a legacy ljwx database on the real server, then writing into it with our sink.

The legacy tables are created with raw DDL exactly as the legacy schema dump has them
(shared/ljwx/tables.md; MariaDB has no utf8mb4_0900_ai_ci, so the default collation),
never through our migrations. Each test gets a private database.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine, text

from consumer import cli
from consumer.db import adopt
from consumer.db.migrate import (
    TABLE_NAMES,
    SchemaNotReady,
    check_schema,
    current_revision,
    head_revision,
    migrate,
)
from consumer.db.tables import TABLES
from consumer.health_alerts.rules import Alert, HealthRule
from consumer.sinks.mysql import MySQLSink, make_engine
from tests.integration.legacy import (
    HEALTH_DUPLICATES,
    OLD_METHODS,
    SN,
    T0,
    create_legacy,
)
from tests.records import make_record

pytestmark = pytest.mark.integration


def snapshot(engine: Engine) -> dict[str, Any]:
    """Every table's DDL and rows: what 'nothing changed' compares."""
    with engine.connect() as conn:
        tables = sorted(r[0] for r in conn.exec_driver_sql("SHOW TABLES"))
        return {
            t: (
                conn.exec_driver_sql(f"SHOW CREATE TABLE `{t}`").one()[1],
                conn.exec_driver_sql(f"SELECT * FROM `{t}` ORDER BY 1").all(),
            )
            for t in tables
        }


def columns(engine: Engine) -> dict[tuple[str, str], tuple[str, str, Any]]:
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT TABLE_NAME, COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE, COLUMN_DEFAULT "
            "FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE()"
        ).all()
    return {(r[0], r[1]): (r[2], r[3], r[4]) for r in rows}


def indexes(engine: Engine) -> set[tuple[str, str, tuple[str, ...]]]:
    """(table, index, columns) of every index in the database."""
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT TABLE_NAME, INDEX_NAME, COLUMN_NAME FROM information_schema.STATISTICS "
            "WHERE TABLE_SCHEMA = DATABASE() ORDER BY TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX"
        ).all()
    found: dict[tuple[str, str], list[str]] = {}
    for table, index, column in rows:
        found.setdefault((table, index), []).append(column)
    return {(t, i, tuple(c)) for (t, i), c in found.items()}


def unique_keys(engine: Engine, table: str) -> set[tuple[str, ...]]:
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(f"SHOW INDEX FROM `{table}` WHERE Non_unique = 0").all()
    keys: dict[str, list[str]] = {}
    for r in rows:
        keys.setdefault(r[2], []).append(r[4])
    return {tuple(v) for v in keys.values()}


def test_dry_run_changes_nothing_then_adoption_keeps_every_row(
    database: tuple[str, Engine],
) -> None:
    url, engine = database
    create_legacy(engine)
    before = snapshot(engine)
    legacy_columns = columns(engine)
    legacy_indexes = indexes(engine)

    dry = migrate(url, dry_run=True)
    assert dry.kind == "adopt" and dry.revision is None
    assert "ADD UNIQUE KEY `uk_health_device_ts`" in dry.sql
    assert "--   3 row(s) to move" in dry.sql and "--   1 row(s) to move" in dry.sql
    assert dry.moved == {"t_user_health_data": 3, "t_alert_info": 1}
    assert any(n.startswith("t_alert_info.device_sn stays varchar(20)") for n in dry.notes)
    assert "0003_drop_health_customer_ts: an adopted database is left unchanged" in dry.sql
    assert "idx_health_customer_ts" not in dry.sql.replace("drop_health_customer_ts", "")
    assert snapshot(engine) == before  # no table, column, key, row or revision changed

    done = migrate(url)
    assert done.kind == "adopt" and done.revision == head_revision(url)
    assert done.moved == {"t_user_health_data": HEALTH_DUPLICATES, "t_alert_info": 1}

    # No pre-existing row lost: main + side table = the original rows, byte for byte.
    with engine.connect() as conn:
        for table, n in (("t_user_health_data", 8), ("t_alert_info", 4)):
            original = {r[0]: r for r in before[table][1]}
            kept = {r[0]: r for r in conn.exec_driver_sql(f"SELECT * FROM {table}")}
            moved = {r[0]: r for r in conn.exec_driver_sql(f"SELECT * FROM {table}_dup")}
            assert len(original) == n and not kept.keys() & moved.keys()
            assert {**kept, **moved}.keys() == original.keys()
            width = len(next(iter(original.values())))
            for row_id, row in {**kept, **moved}.items():
                assert tuple(row[:width]) == tuple(original[row_id])  # added columns at the end
        # Per key the lowest id stays in place.
        assert conn.exec_driver_sql(
            "SELECT heart_rate FROM t_user_health_data WHERE device_sn = %s ORDER BY timestamp",
            (SN,),
        ).scalars().all() == [70, 71, 73]
    assert ("device_sn", "timestamp") in unique_keys(engine, "t_user_health_data")
    assert ("device_sn", "rule_id", "alert_timestamp") in unique_keys(engine, "t_alert_info")

    # Never dropped, renamed or narrowed: every legacy column is exactly as it was.
    after = columns(engine)
    for key, legacy in legacy_columns.items():
        assert after[key] == legacy, key
    added = {k for k in after if k[0] in TABLE_NAMES} - set(legacy_columns)
    assert added == {
        ("t_user_health_data", "upload_method_raw"),
        ("t_user_health_data_daily", "customer_id"),
        ("t_user_health_data_daily", "data_timestamp"),
        ("t_user_health_data_weekly", "customer_id"),
        ("t_user_health_data_weekly", "data_timestamp"),
    }

    # Every legacy index is still there (revisions after 0002 leave adopted databases be).
    assert indexes(engine) >= legacy_indexes

    # Alembic tracks it now (stamped 0002, then upgraded); the start-up check accepts it.
    with engine.connect() as conn:
        assert current_revision(conn) == head_revision(url)
    check_schema(engine, url)

    # Twice: nothing to do, nothing changed.
    adopted = snapshot(engine)
    again = migrate(url)
    assert again.kind == "up to date"
    with engine.connect() as conn:
        assert adopt.plan_adoption(adopt.inspect_schema(conn, TABLE_NAMES), TABLES).nothing_to_do
    assert snapshot(engine) == adopted


def test_cli_dry_run_prints_the_sql_and_adoption_reports_moves(
    database: tuple[str, Engine],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, engine = database
    create_legacy(engine, methods=OLD_METHODS)
    before = snapshot(engine)
    monkeypatch.setenv("DATABASE_URL", url)
    with pytest.raises(SchemaNotReady, match="legacy ljwx tables"):
        check_schema(engine, url)

    assert cli.main(["migrate", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "START TRANSACTION;" in out and "ADD UNIQUE KEY" in out
    # The older production ENUM gains 'esim' (appended: stored values keep their index).
    assert "MODIFY COLUMN `upload_method` ENUM('wifi', 'bluetooth', 'common_event', 'esim')" in out
    assert snapshot(engine) == before

    assert cli.main(["migrate"]) == 0
    out = capsys.readouterr().out
    assert "t_user_health_data: 3, t_alert_info: 1" in out
    assert columns(engine)[("t_user_health_data", "upload_method")][0] == (
        "enum('wifi','bluetooth','common_event','esim')"
    )
    assert cli.main(["migrate"]) == 0
    assert "nothing to do" in capsys.readouterr().out


def make_rule(rule_id: int, sign: str, low: int | None, high: int | None) -> HealthRule:
    values: dict[str, Any] = {
        "id": rule_id,
        "rule_type": f"{sign}_rule",
        "physical_sign": sign,
        "threshold_min": None if low is None else Decimal(low),
        "threshold_max": None if high is None else Decimal(high),
        "trend_duration": 1,
        "severity_level": "critical",
        "alert_message": f"{sign} out of range",
        "customer_id": 0,
        "level": "major",
    }
    names = {f.name for f in dataclasses.fields(HealthRule)}
    return HealthRule(**{k: v for k, v in values.items() if k in names})


def write_and_check(engine: Engine, url: str, legacy_daily: bool) -> None:
    """Our sink on the given schema: rows, mapped upload_method, alerts linked to rows.

    Both schemas already hold a reading of SN at minute 2 (the legacy's, or one a legacy
    writer stored, heart rate 70), so the first record is a duplicate: the stored reading
    is the reading (issue 18, S3), and the alert its other value (150) fired is not
    stored, never linked to a row that shows 70.
    """
    sink = MySQLSink(make_engine(url, pool_size=2))
    replay = make_record(
        SN,
        timestamp=T0 + dt.timedelta(minutes=2),
        heart_rate=150,
        upload_method="4g",
        customer_id=None,
        org_id=None,
        user_id=None,
    )
    fresh = [make_record(SN, seconds=3600 + i, heart_rate=150 + i, upload_method=m)
             for i, m in enumerate(("wifi", None, "lte"))]  # fmt: skip
    spo2 = make_record("SPO2DEVICE000001", seconds=60, blood_oxygen=85, customer_id=9)
    sleep = make_record(SN, timestamp=T0 + dt.timedelta(hours=3), sleep_data='{"v": 2}')
    records = [replay, *fresh, spo2, sleep]
    hr_rule = make_rule(11, "heart_rate", 40, 120)
    spo2_rule = make_rule(12, "blood_oxygen", 90, None)
    alerts = [Alert(hr_rule, r, r.heart_rate or 0, "heart_rate") for r in [replay, *fresh]]
    alerts.append(Alert(spo2_rule, spo2, 85, "blood_oxygen"))
    try:
        result = sink.write(records, alerts)
        assert (result.inserted, result.duplicates, result.daily_rows) == (5, 1, 1)
        assert result.new_alerts == alerts[1:]  # not the duplicate's
        alerts = alerts[1:]
        assert sink.write(records, alerts).new_alerts == []  # a replay stores nothing twice
    finally:
        sink.engine.dispose()

    with engine.connect() as conn:
        rows = {
            (r.device_sn, r.timestamp): r
            for r in conn.execute(
                text(
                    "SELECT id, device_sn, timestamp, upload_method, upload_method_raw, "
                    "customer_id, is_deleted, user_name FROM t_user_health_data"
                )
            )
        }
        alert_rows = conn.execute(
            text(
                "SELECT health_id, device_sn, alert_timestamp, alert_status, status, level, "
                "severity_level, metric, value, unit, source, occur_at, customer_id, org_id, "
                "user_id, alert_desc FROM t_alert_info WHERE rule_id IN (11, 12) ORDER BY id"
            )
        ).all()
        daily = conn.execute(
            text(
                "SELECT sleep_data, workout_data, customer_id FROM t_user_health_data_daily "
                "WHERE device_sn = :sn AND date = :day"
            ),
            {"sn": SN, "day": T0.date()},
        ).one()
    expected = zip(
        [*fresh, spo2], ["wifi", "wifi", "common_event", "wifi"], ["wifi", None, "lte", "wifi"],
        strict=True,
    )  # fmt: skip
    for record, method, raw in expected:
        row = rows[(record.device_sn, record.timestamp)]
        assert (row.upload_method, row.upload_method_raw) == (method, raw)
        assert (row.is_deleted, row.user_name) == (0, "heguang")  # server defaults
    has_level = "level" in {f.name for f in dataclasses.fields(HealthRule)}
    assert len(alert_rows) == len(alerts)
    for a, alert in zip(alert_rows, alerts, strict=True):
        r = alert.record
        assert a.health_id == rows[(r.device_sn, r.timestamp)].id  # the reading's own row
        assert (a.device_sn, a.alert_timestamp, a.occur_at) == (
            r.device_sn,
            r.timestamp,
            r.timestamp,
        )
        assert (a.alert_status, a.status, a.source) == ("pending", "NEW", "server")
        assert (a.severity_level, a.level) == ("critical", "major" if has_level else "critical")
        assert a.metric == alert.rule.physical_sign and a.value == float(alert.value)
        assert a.unit == ("bpm" if alert.field == "heart_rate" else "%")
        assert (a.customer_id, a.org_id, a.user_id) == (r.customer_id or 0, r.org_id, r.user_id)
        assert a.alert_desc == alert.description
    # A legacy daily row has no data_timestamp of its own: the reading's sleep data wins,
    # the field the reading did not carry is kept.
    workout = '{"w": 0}' if legacy_daily else None
    assert tuple(daily) == ('{"v": 2}', workout, sleep.customer_id)


def test_our_sink_writes_rows_and_alerts_into_adopted_tables(
    database: tuple[str, Engine],
) -> None:
    url, engine = database
    create_legacy(engine)
    migrate(url)
    write_and_check(engine, url, legacy_daily=True)
    with engine.connect() as conn:
        on_the_kept_row = conn.exec_driver_sql(
            "SELECT COUNT(*) FROM t_alert_info WHERE rule_id = 11 AND health_id = 4"
        ).scalar()
    assert on_the_kept_row == 0  # ids 4, 5, 6 repeated minute 2; 4 stayed, showing 70


def test_our_sink_on_a_fresh_database(database: tuple[str, Engine]) -> None:
    url, engine = database
    dry = migrate(url, dry_run=True)
    assert dry.kind == "fresh" and "CREATE TABLE t_user_health_data" in dry.sql
    assert snapshot(engine) == {}
    assert migrate(url).kind == "fresh"
    with engine.connect() as conn:
        assert not adopt.plan_adoption(adopt.inspect_schema(conn, TABLE_NAMES), TABLES).steps, (
            "a fresh schema already has everything adoption adds"
        )
    # Legacy rows a legacy writer stores must fit too (its columns, its defaults).
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO t_user_health_data (device_sn, timestamp, heart_rate) VALUES (%s, %s, 70)",
            (SN, T0 + dt.timedelta(minutes=2)),
        )
    write_and_check(engine, url, legacy_daily=False)
    assert migrate(url).kind == "up to date"


def test_an_adopted_database_refuses_to_downgrade(database: tuple[str, Engine]) -> None:
    """0001's downgrade drops the five tables: on an adopted database they are the legacy
    system's production data."""
    from alembic import command

    from consumer.db.migrate import alembic_config

    url, engine = database
    create_legacy(engine)
    migrate(url)
    adopted = snapshot(engine)
    with pytest.raises(RuntimeError, match="refusing to downgrade"):
        command.downgrade(alembic_config(url), "base")
    # Revisions after 0002 change nothing on an adopted database, downgrades included
    # (each step commits on MySQL): only the revision went back, to the refusing 0002.
    after = snapshot(engine)
    assert after.pop("alembic_version")[1] == [(adopt.ADOPTED_REVISION,)]
    adopted.pop("alembic_version")
    assert after == adopted
    with engine.connect() as conn:
        record = conn.exec_driver_sql(
            f"SELECT revision, moved_rows FROM {adopt.ADOPTION_TABLE}"
        ).one()
    assert tuple(record) == (adopt.ADOPTED_REVISION, "t_alert_info: 1, t_user_health_data: 3")
