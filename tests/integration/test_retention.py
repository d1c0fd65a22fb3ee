"""`health-consumer retention` on the real MariaDB: old raw readings go, nothing else does.

A freshly migrated (partitioned, 0005) table and an adopted legacy one (not partitioned):
readings over ten days, an alert and a daily row that reference the oldest of them.
Retention with --keep-days 3 drops the partitions whose readings are all older than the
cutoff, deletes the rest in chunks, keeps every newer reading, the alerts and the daily
rows; a dry run changes nothing; a replay of the kept readings afterwards is all
duplicates (the unique key holds across partitions).
"""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import Engine, text

from consumer.db import partitions
from consumer.db.migrate import migrate
from consumer.sinks.mysql import MySQLSink, make_engine
from consumer.tools.retention import retention
from schemas.record import HealthRecord
from tests.integration.legacy import create_legacy
from tests.records import make_record

pytestmark = pytest.mark.integration

NOW = dt.datetime(2025, 6, 11, 12, 0, 0)
CUTOFF = NOW - dt.timedelta(days=3)
SNS = ("CRFTQ00000000001", "CRFTQ00000000002", "CRFTQ00000000003")


def readings() -> list[HealthRecord]:
    """Every 2 hours over ten days, three devices: 360 readings."""
    start = NOW - dt.timedelta(days=10)
    return [
        make_record(sn, timestamp=start + dt.timedelta(hours=2 * i))
        for i in range(120)
        for sn in SNS
    ]


def write(url: str, records: list[HealthRecord]) -> tuple[int, int]:
    engine = make_engine(url, pool_size=1)
    try:
        result = MySQLSink(engine).write(records, [])
        return result.inserted, result.duplicates
    finally:
        engine.dispose()


def old_alert_and_daily(engine: Engine) -> None:
    """An alert on the oldest reading and a daily row of its day, as the sink writes them."""
    with engine.begin() as conn:
        oldest = conn.execute(
            text(
                "SELECT id, device_sn, timestamp FROM t_user_health_data "
                "WHERE device_sn = :sn ORDER BY timestamp LIMIT 1"
            ),
            {"sn": SNS[0]},
        ).one()
        conn.execute(
            text(
                "INSERT INTO t_alert_info (rule_id, alert_type, device_sn, alert_timestamp, "
                "health_id) VALUES (1, 'heart_rate', :sn, :ts, :id)"
            ),
            {"sn": oldest.device_sn, "ts": oldest.timestamp, "id": oldest.id},
        )
        conn.execute(
            text(
                "INSERT INTO t_user_health_data_daily (device_sn, date, sleep_data) "
                "VALUES (:sn, :d, '{}')"
            ),
            {"sn": oldest.device_sn, "d": oldest.timestamp.date()},
        )


def counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            "old": conn.execute(
                text("SELECT COUNT(*) FROM t_user_health_data WHERE timestamp < :c"), {"c": CUTOFF}
            ).scalar_one(),
            "kept": conn.execute(
                text("SELECT COUNT(*) FROM t_user_health_data WHERE timestamp >= :c"), {"c": CUTOFF}
            ).scalar_one(),
            "alerts": conn.execute(text("SELECT COUNT(*) FROM t_alert_info")).scalar_one(),
            "daily": conn.execute(
                text("SELECT COUNT(*) FROM t_user_health_data_daily")
            ).scalar_one(),
        }


def test_partitions_are_dropped_the_rest_deleted_alerts_and_daily_rows_kept(
    database: tuple[str, Engine],
) -> None:
    url, engine = database
    migrate(url)
    with engine.begin() as conn:  # daily partitions from ten days ago, as retention keeps them
        partitions.ensure_ahead(conn, NOW - dt.timedelta(days=10), NOW, 1440)
    records = readings()
    assert write(url, records) == (len(records), 0)
    old_alert_and_daily(engine)
    before = counts(engine)

    dry = retention(url, 3, dry_run=True, now=NOW, partition_minutes=1440, exact=True)
    assert len(dry.dropped_partitions) == 7 and dry.deleted_rows == 6 * 3
    assert counts(engine) == before  # a dry run changes nothing

    # The first partition holds everything up to the end of day 1; six more whole days are
    # older than the cutoff (12:00 of day 8). Its own partition keeps its older half until
    # it expires whole, unless `exact`, which deletes that half in chunks.
    dropped = retention(url, 3, now=NOW, partition_minutes=1440)
    assert len(dropped.dropped_partitions) == 7 and dropped.deleted_rows == 0
    assert counts(engine) == {**before, "old": 6 * 3}
    done = retention(url, 3, now=NOW, partition_minutes=1440, chunk_rows=5, exact=True)
    assert done.dropped_partitions == []
    assert done.deleted_rows == 6 * 3 and done.chunks > 1
    assert counts(engine) == {**before, "old": 0}
    with engine.connect() as conn:
        names = [p.name for p in partitions.partitions(conn)]
    assert not set(dropped.dropped_partitions) & set(names)
    assert names[-1] == partitions.FUTURE and len(names) == 3 + 1 + 1  # + tomorrow, future
    kept = [r for r in records if r.timestamp >= CUTOFF]
    assert write(url, kept) == (0, len(kept))
    again = retention(url, 3, now=NOW, partition_minutes=1440, exact=True)
    assert (again.dropped_partitions, again.deleted_rows, again.statements) == ([], 0, [])


def test_old_readings_are_deleted_in_chunks_alerts_and_daily_rows_kept(
    database: tuple[str, Engine],
) -> None:
    url, engine = database
    migrate(url)  # one partition, p_future, until retention splits it: the chunked path
    records = readings()
    assert write(url, records) == (len(records), 0)
    old_alert_and_daily(engine)
    before = counts(engine)
    assert before["old"] == 7 * 12 * 3 and before["alerts"] == 1

    dry = retention(url, 3, dry_run=True, now=NOW, chunk_rows=50, ahead_hours=0, exact=True)
    assert dry.deleted_rows == before["old"] and dry.chunks == 0
    assert counts(engine) == before  # a dry run changes nothing

    done = retention(url, 3, now=NOW, chunk_rows=50, ahead_hours=0, exact=True)

    assert done.deleted_rows == before["old"] and done.chunks > 1 and done.statements == []
    assert counts(engine) == {**before, "old": 0}
    # Replayed readings: the kept ones are duplicates, the expired ones come back once.
    kept = [r for r in records if r.timestamp >= CUTOFF]
    assert write(url, kept) == (0, len(kept))
    assert retention(url, 3, now=NOW, ahead_hours=0, exact=True).deleted_rows == 0


def test_an_adopted_table_is_deleted_in_chunks(database: tuple[str, Engine]) -> None:
    url, engine = database
    create_legacy(engine)
    migrate(url)
    with engine.connect() as conn:
        assert partitions.partitions(conn) == []  # 0005 leaves an adopted table alone
    records = readings()
    assert write(url, records) == (len(records), 0)
    old_alert_and_daily(engine)
    before = counts(engine)

    done = retention(url, 3, now=NOW, chunk_rows=25)

    assert done.deleted_rows == before["old"] and done.chunks > 1 and done.statements == []
    assert counts(engine) == {**before, "old": 0}
