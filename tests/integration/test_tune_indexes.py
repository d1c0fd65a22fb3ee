"""`health-consumer migrate --tune-indexes` on an adopted legacy table, on the real MariaDB.

The three redundant per-device indexes go while another session writes (LOCK=NONE), the
legacy bigscreen's filters keep an index (EXPLAIN), dedup still holds, and a second run
finds nothing to do. A fresh schema has nothing to tune.
"""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from sqlalchemy import Engine, text

from consumer.db.migrate import migrate
from consumer.db.tune import REDUNDANT, indexes, tune_indexes
from consumer.sinks.mysql import MySQLSink, make_engine
from tests.integration.legacy import create_legacy
from tests.records import make_record

pytestmark = pytest.mark.integration

START = dt.datetime(2025, 7, 1)
# The bigscreen's filters (shared/ljwx: by customer, user or device and a time range).
QUERIES = {
    "device": "SELECT * FROM t_user_health_data WHERE device_sn = 'CRFTQ00000000007' "
    "AND timestamp BETWEEN '2025-07-01' AND '2025-07-02'",
    "customer_device": "SELECT * FROM t_user_health_data WHERE customer_id = 1001 "
    "AND device_sn = 'CRFTQ00000000007' AND timestamp >= '2025-07-01'",
    "customer_user": "SELECT heart_rate, blood_oxygen FROM t_user_health_data "
    "WHERE customer_id = 1001 AND user_id = 3001 AND timestamp >= '2025-07-01'",
    "time": "SELECT COUNT(*) FROM t_user_health_data WHERE timestamp >= '2025-07-01 01:00:00'",
}


def used_index(engine: Engine, sql: str) -> str | None:
    with engine.connect() as conn:
        row = conn.execute(text("EXPLAIN " + sql)).mappings().one()
    return row["key"]


def test_redundant_legacy_indexes_are_dropped_online_and_queries_keep_an_index(
    database: tuple[str, Engine],
) -> None:
    url, engine = database
    create_legacy(engine)
    migrate(url)
    with engine.connect() as conn:
        have = indexes(conn)
    assert set(REDUNDANT) <= set(have)

    dry = tune_indexes(url, dry_run=True)
    assert sorted(dry.dropped) == sorted(REDUNDANT) and "LOCK=NONE" in dry.sql
    with engine.connect() as conn:
        assert indexes(conn) == have  # a dry run changes nothing

    sink_engine = make_engine(url, pool_size=1)
    sink = MySQLSink(sink_engine)
    written: list[int] = []
    stop = threading.Event()

    def writer() -> None:  # the legacy writer keeps writing while the indexes go
        i = 0
        while not stop.is_set() and i < 200:
            batch = [
                make_record(f"CRFTQ{d:011d}", timestamp=START + dt.timedelta(minutes=i))
                for d in range(50)
            ]
            written.append(sink.write(batch, []).inserted)
            i += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        while len(written) < 5:
            stop.wait(0.05)
        done = tune_indexes(url)
    finally:
        stop.set()
        thread.join()
    assert sorted(done.dropped) == sorted(REDUNDANT)
    with engine.connect() as conn:
        left = indexes(conn)
        stored = conn.execute(text("SELECT COUNT(*) FROM t_user_health_data "
                                   "WHERE timestamp >= '2025-07-01'")).scalar_one()  # fmt: skip
    assert not set(REDUNDANT) & set(left)
    assert {"uk_health_device_ts", "idx_health_cover_basic", "idx_timestamp"} <= set(left)
    assert stored == sum(written) == 50 * len(written)

    # Every filter of the bigscreen still reads an index.
    for name, sql in QUERIES.items():
        assert used_index(engine, sql) is not None, name
    # A replay is still all duplicates.
    replay = [make_record(f"CRFTQ{d:011d}", timestamp=START) for d in range(50)]
    assert sink.write(replay, []).duplicates == 50
    sink_engine.dispose()
    assert tune_indexes(url).sql == ""  # nothing left to do


def test_a_fresh_schema_has_nothing_to_tune(database: tuple[str, Engine]) -> None:
    url, _ = database
    migrate(url)
    result = tune_indexes(url)
    assert (result.dropped, result.sql) == ([], "")
