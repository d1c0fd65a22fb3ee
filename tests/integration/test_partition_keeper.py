"""The replicas keep the health table's time partitions ahead, on the real MariaDB.

A freshly migrated table has only `p_future`: the keeper splits it up to the future
horizon, one round and one partition ahead, readings of now and of the horizon then land
in time partitions (`p_future` stays empty), and a second round changes nothing. A
replica that does not get the lock only looks. A `p_future` already holding readings is
split when they are at most `max_copy_rows` (limit - 1, limit) and refused above (limit
+ 1): that copy blocks writes, and a real replica beside such a `p_future` consumes and says
why. An adopted (unpartitioned) table is left alone.
"""

from __future__ import annotations

import datetime as dt

import orjson
import pytest
from sqlalchemy import Engine, text

from consumer.db import partitions
from consumer.db.migrate import migrate
from consumer.db.partition_keeper import LOCK_NAME, MAX_COPY_ROWS, PartitionKeeper, horizon
from consumer.settings import PARTITION_KEEPER_INTERVAL_S
from consumer.sinks.mysql import MySQLSink, make_engine
from tests.integration.legacy import create_legacy
from tests.integration.stack import Stack, wait_for
from tests.records import make_record

pytestmark = pytest.mark.integration

HORIZON_S = 6 * 3600.0  # a short future horizon: fewer partitions to create
MINUTES = 30


def keeper(url: str, max_copy_rows: int = 10_000) -> PartitionKeeper:
    return PartitionKeeper(
        make_engine(url, 1), MINUTES, HORIZON_S, "UTC", max_copy_rows=max_copy_rows
    )


def in_future(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                text(f"SELECT COUNT(*) FROM t_user_health_data PARTITION ({partitions.FUTURE})")
            ).scalar_one()
        )


def names(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return [p.name for p in partitions.partitions(conn)]


def write(url: str, times: list[dt.datetime]) -> None:
    engine = make_engine(url, 1)
    try:
        records = [make_record(f"KEEPER{i:010d}", timestamp=t) for i, t in enumerate(times)]
        assert MySQLSink(engine).write(records, []).inserted == len(records)
    finally:
        engine.dispose()


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)


def test_a_fresh_table_is_split_up_to_the_horizon_and_readings_miss_p_future(
    database: tuple[str, Engine],
) -> None:
    url, engine = database
    migrate(url)
    assert names(engine) == [partitions.FUTURE]
    k = keeper(url)
    try:
        before = utc_now()
        first = k.run_once()
        assert first.partitioned is True and first.split is not None and first.problem is None
        assert first.ahead_until is not None
        wanted = horizon(before, HORIZON_S, PARTITION_KEEPER_INTERVAL_S, MINUTES)
        # The split's last bound is the last multiple of MINUTES up to the wanted horizon:
        # it covers the future horizon and one round.
        assert wanted - dt.timedelta(minutes=MINUTES) < first.ahead_until <= wanted
        listed = names(engine)
        assert listed[-1] == partitions.FUTURE and len(listed) >= HORIZON_S / (MINUTES * 60)

        write(url, [utc_now(), utc_now() + dt.timedelta(seconds=HORIZON_S)])
        assert in_future(engine) == 0

        second = k.run_once()
        assert second.split is None and second.ahead_until == first.ahead_until
        assert names(engine) == listed
        ahead = k.ahead_seconds()
        covered = HORIZON_S + PARTITION_KEEPER_INTERVAL_S
        assert ahead is not None and covered - 60 < ahead <= covered + MINUTES * 60
    finally:
        k.close()


def test_a_replica_without_the_lock_only_looks(database: tuple[str, Engine]) -> None:
    url, engine = database
    migrate(url)
    k = keeper(url)
    try:
        with engine.connect() as holder:
            assert holder.execute(text(f"SELECT GET_LOCK({LOCK_NAME}, 0)")).scalar() == 1
            looked = k.run_once()
            holder.execute(text(f"SELECT RELEASE_LOCK({LOCK_NAME})"))
        assert looked.partitioned is True and looked.split is None
        assert names(engine) == [partitions.FUTURE]
        assert k.run_once().split is not None
    finally:
        k.close()


@pytest.mark.parametrize("rows", [4, 5, 6])
def test_p_future_is_split_with_up_to_max_copy_rows_readings_and_refused_above(
    database: tuple[str, Engine], rows: int
) -> None:
    url, engine = database
    migrate(url)
    now = utc_now()
    write(url, [now - dt.timedelta(minutes=i) for i in range(rows)])
    assert in_future(engine) == rows
    k = keeper(url, max_copy_rows=5)
    try:
        result = k.run_once()
        if rows <= 5:
            assert result.split is not None and result.problem is None
            assert in_future(engine) == 0  # the readings moved to the first time partition
        else:
            assert result.split is None and result.problem is not None
            assert "retention" in result.problem and names(engine) == [partitions.FUTURE]
            assert in_future(engine) == rows
            assert k.ahead_seconds() == 0.0  # what HealthstreamPartitionsNotAhead sees
    finally:
        k.close()


def test_an_adopted_table_is_left_alone(database: tuple[str, Engine]) -> None:
    url, engine = database
    create_legacy(engine)
    migrate(url)
    k = keeper(url)
    try:
        result = k.run_once()
        assert result.partitioned is False and result.split is None
        assert names(engine) == [] and k.ahead_seconds() is None
    finally:
        k.close()


def test_a_replica_beside_a_crowded_p_future_consumes_and_says_why(stack: Stack) -> None:
    """Through the real `health-consumer run`: 0005 applied to a populated table leaves
    every row in `p_future`. With MAX_COPY_ROWS + 1 rows there the replica does not split
    (that copy would block writes), logs why once, exports 0 s ahead (what
    HealthstreamPartitionsNotAhead fires on) and consumes as usual."""
    now = utc_now()
    write(stack.database_url, [now - dt.timedelta(seconds=i) for i in range(MAX_COPY_ROWS + 1)])
    assert in_future(stack.engine) == MAX_COPY_ROWS + 1
    body = {"data": [{"deviceSn": "SN-KEEP", "heart_rate": 70, "upload_method": "wifi",
                      "timestamp": f"{now:%Y-%m-%d %H:%M:%S}"}]}  # fmt: skip
    stack.produce([(b"SN-KEEP", orjson.dumps(body), [])])

    proc = stack.consumer().start()
    wait_for(lambda: stack.health_rows() == MAX_COPY_ROWS + 2, 60, what="the reading stored")
    assert proc.metric("health_consumer_partitions_ahead_seconds") == 0.0
    assert names(stack.engine) == [partitions.FUTURE]
    assert proc.terminate() == 0
    warnings = [
        line for line in proc.log_path.read_text().splitlines()
        if "time partitions not kept ahead" in line
    ]  # fmt: skip
    assert len(warnings) == 1 and "retention" in warnings[0]
