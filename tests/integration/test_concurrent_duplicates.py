"""Concurrent flushes holding genuine duplicates store every distinct reading (issue 16).

Under `innodb_autoinc_lock_mode=2` (the local server's setting and MySQL 8's default) a
LOAD DATA that skips a genuine duplicate as the first row of a freshly reserved
auto-increment interval (rows 1, 3, 7, 15, ... of the statement) goes back to an id
another transaction has taken meanwhile: the rows after it fail on PRIMARY, not on the
unique key, and were taken for duplicates. These tests write the way partitions do
(six threads at once, duplicates inside and across batches, at those rows too) on every
write mode the sink ships, and hold the sink to the table: every distinct reading is a
row, and the duplicates it reports are the real ones.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text

from consumer.db.migrate import migrate
from consumer.sinks.errors import Retryable
from consumer.sinks.mysql import (
    MySQLSink,
    RowsNotStored,
    WriteResult,
    make_engine,
)
from schemas.record import HealthRecord
from tests.integration.stack import ROOT, free_port
from tests.records import make_record

pytestmark = pytest.mark.integration

THREADS = 6
BATCHES = 30
PER_BATCH = 300
# Where a LOAD DATA reserves a new auto-increment interval (1, 2, 4, ... values).
INTERVAL_STARTS = frozenset({1, 3, 7, 15, 31, 63, 127, 255})


@pytest.fixture
def url(database: tuple[str, Engine]) -> str:
    migrate(database[0])
    return database[0]


@pytest.fixture
def engine(url: str) -> Iterator[Engine]:
    e = make_engine(url, pool_size=THREADS)
    yield e
    e.dispose()


def partition_batches(partition: int) -> list[list[HealthRecord]]:
    """One partition's batches: every 37th record and the records at INTERVAL_STARTS are
    copies of an earlier reading, of this batch (odd batches) or of the previous one."""
    out: list[list[HealthRecord]] = []
    n = 0
    for b in range(BATCHES):
        batch: list[HealthRecord] = []
        while len(batch) < PER_BATCH:
            i = len(batch)
            if out and (i in INTERVAL_STARTS or i % 37 == 36):
                batch.append(batch[i - 1] if b % 2 else out[-1][(i * 7) % PER_BATCH])
            else:
                batch.append(make_record(f"P{partition}-D{n % 50:02d}", seconds=n))
                n += 1
        out.append(batch)
    return out


def write_concurrently(
    sink: MySQLSink,
    batches: dict[int, list[list[HealthRecord]]],
    attempts: int = 20,
    pause_s: float = 0.0,
) -> list[WriteResult]:
    """Each partition's batches in order on its own thread, retried on an outage (a
    deadlock among concurrent transactions) as the flush retries them."""
    results: list[WriteResult] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(len(batches))

    def run(mine: list[list[HealthRecord]]) -> None:
        start.wait()
        try:
            for batch in mine:
                for _attempt in range(attempts):
                    try:
                        result = sink.write(batch, [])
                        break
                    except Retryable:
                        time.sleep(pause_s)
                else:
                    raise AssertionError(f"a batch failed {attempts} times")
                with lock:
                    results.append(result)
        except BaseException as err:  # surfaced below
            errors.append(err)

    threads = [threading.Thread(target=run, args=(b,)) for b in batches.values()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return results


def stored(engine: Engine) -> tuple[int, int]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT COUNT(*) FROM t_user_health_data")).scalar_one()
        keys = conn.execute(
            text("SELECT COUNT(DISTINCT device_sn, `timestamp`) FROM t_user_health_data")
        ).scalar_one()
        # The primary key is (id, timestamp) on the partitioned table (0005): nothing but
        # AUTO_INCREMENT keeps ids unique, so check that no two rows share one.
        ids = conn.execute(text("SELECT COUNT(DISTINCT id) FROM t_user_health_data")).scalar_one()
    assert ids == rows, f"{rows - ids} rows share an id"
    return int(rows), int(keys)


@pytest.mark.parametrize("threads", [THREADS, 1], ids=["6-partitions", "1-partition"])
@pytest.mark.parametrize("load_data", [True, False], ids=["load_data", "insert"])
def test_concurrent_batches_with_duplicates_store_every_distinct_reading(
    engine: Engine, load_data: bool, threads: int
) -> None:
    sink = MySQLSink(engine, load_data=load_data)
    batches = {p: partition_batches(p) for p in range(threads)}
    records = [r for per in batches.values() for b in per for r in b]
    distinct = {(r.device_sn, r.timestamp) for r in records}

    results = write_concurrently(sink, batches)

    assert stored(engine) == (len(distinct), len(distinct))
    assert sum(r.inserted for r in results) == len(distinct)
    assert sum(r.duplicates for r in results) == len(records) - len(distinct)


@pytest.mark.parametrize("load_data", [True, False], ids=["load_data", "insert"])
def test_replayed_batches_beside_new_ones_count_only_real_duplicates(
    engine: Engine, load_data: bool
) -> None:
    """A replay after a crash: each batch starts with readings stored before, then new
    ones, while the other partitions write."""
    sink = MySQLSink(engine, load_data=load_data)
    batches = {p: partition_batches(p) for p in range(THREADS)}
    write_concurrently(sink, {p: per[:10] for p, per in batches.items()})
    # Re-cut partition p's records from batch 5 on with another batch size: the first
    # replayed batches straddle what was stored and what was not.
    replay: dict[int, list[list[HealthRecord]]] = {}
    for p, per in batches.items():
        flat = [r for b in per[5:] for r in b]
        size = 200 + 17 * p
        replay[p] = [flat[i : i + size] for i in range(0, len(flat), size)]
    results = write_concurrently(sink, replay)

    records = [r for per in batches.values() for b in per for r in b]
    distinct = {(r.device_sn, r.timestamp) for r in records}
    replayed = [r for per in replay.values() for b in per for r in b]
    new = distinct - {
        (r.device_sn, r.timestamp) for per in batches.values() for b in per[:10] for r in b
    }
    assert stored(engine) == (len(distinct), len(distinct))
    assert sum(r.inserted for r in results) == len(new)
    assert sum(r.duplicates for r in results) == len(replayed) - len(new)


@pytest.mark.parametrize("load_data", [True, False], ids=["load_data", "insert"])
def test_a_row_skipped_on_another_unique_key_is_not_a_duplicate(
    engine: Engine, load_data: bool
) -> None:
    """An adopted table may carry a unique index of its own: a reading it skips has no row
    of its (device_sn, timestamp), so the sink raises (the flush isolates and dead-letters
    it) instead of counting it as a duplicate and committing past it."""
    with engine.begin() as conn:
        # An adopted table is not partitioned (0005 leaves it alone), and a partitioned
        # one cannot carry a unique key without `timestamp`.
        conn.exec_driver_sql("ALTER TABLE t_user_health_data REMOVE PARTITIONING")
        conn.exec_driver_sql(
            "ALTER TABLE t_user_health_data ADD UNIQUE KEY uk_other (device_sn, heart_rate)"
        )
    sink = MySQLSink(engine, load_data=load_data)
    sink.write([make_record("U-1", seconds=0, heart_rate=70)], [])
    # The second: a new (device_sn, timestamp), skipped on uk_other.
    clash = [
        make_record("U-1", seconds=5, heart_rate=71),
        make_record("U-1", seconds=9, heart_rate=70),
    ]

    with pytest.raises(RowsNotStored, match="U-1"):
        sink.write(clash, [])

    assert stored(engine) == (1, 1)  # rolled back: the good reading too, until isolated
    alone = sink.write(clash[:1], [])
    assert (alone.inserted, alone.duplicates) == (1, 0)


@pytest.fixture(params=[0, 1], ids=["lock_mode_0", "lock_mode_1"])
def private_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A MariaDB of its own with another innodb_autoinc_lock_mode (read-only at run time)."""
    port = free_port()
    env = {
        **os.environ,
        "HEALTHSTREAM_RUNTIME_DIR": str(tmp_path / "runtime"),
        "HEALTHSTREAM_MARIADB_PORT": str(port),
        "HEALTHSTREAM_MARIADB_AUTOINC_LOCK_MODE": str(request.param),
    }
    services = [str(ROOT / "scripts" / "services.sh")]
    subprocess.run([*services, "up", "mariadb"], env=env, check=True, capture_output=True)
    try:
        url = f"mysql+pymysql://root@127.0.0.1:{port}/lock_mode"
        root = create_engine(url.rsplit("/", 1)[0] + "/mysql")
        with root.begin() as conn:
            mode = conn.execute(text("SELECT @@innodb_autoinc_lock_mode")).scalar_one()
            assert int(mode) == request.param
            conn.execute(text("CREATE DATABASE lock_mode CHARACTER SET utf8mb4"))
        root.dispose()
        migrate(url)
        yield url
    finally:
        subprocess.run([*services, "down", "mariadb"], env=env, check=False, capture_output=True)


@pytest.mark.parametrize("load_data", [True, False], ids=["load_data", "insert"])
def test_every_auto_increment_lock_mode_stores_every_distinct_reading(
    private_server: str, load_data: bool
) -> None:
    engine = make_engine(private_server, pool_size=THREADS)
    try:
        sink = MySQLSink(engine, load_data=load_data)
        batches = {p: partition_batches(p)[:12] for p in range(THREADS)}
        records = [r for per in batches.values() for b in per for r in b]
        distinct = {(r.device_sn, r.timestamp) for r in records}

        results = write_concurrently(sink, batches)

        assert stored(engine) == (len(distinct), len(distinct))
        assert sum(r.duplicates for r in results) == len(records) - len(distinct)
    finally:
        engine.dispose()


def test_a_server_restart_amid_concurrent_batches_loses_and_dead_letters_nothing(
    tmp_path: Path,
) -> None:
    """A MariaDB restart while six partitions write (lock mode 2): a LOAD DATA cut by the
    restart can skip a whole batch on PRIMARY, and the re-insert of those rows then met
    ids already taken. That is contention, retried with the batch; it was isolated as
    rows not stored (dead letters) before."""
    port = free_port()
    env = {
        **os.environ,
        "HEALTHSTREAM_RUNTIME_DIR": str(tmp_path / "runtime"),
        "HEALTHSTREAM_MARIADB_PORT": str(port),
    }
    services = [str(ROOT / "scripts" / "services.sh")]
    subprocess.run([*services, "up", "mariadb"], env=env, check=True, capture_output=True)
    url = f"mysql+pymysql://root@127.0.0.1:{port}/restart"
    engine = None
    try:
        root = create_engine(f"mysql+pymysql://root@127.0.0.1:{port}/mysql")
        with root.begin() as conn:
            conn.execute(text("CREATE DATABASE restart CHARACTER SET utf8mb4"))
        root.dispose()
        migrate(url)
        engine = make_engine(url, pool_size=THREADS)
        sink = MySQLSink(engine)
        batches = {p: partition_batches(p) for p in range(THREADS)}
        records = [r for per in batches.values() for b in per for r in b]

        def bounce() -> None:
            subprocess.run([*services, "down", "mariadb"], env=env, check=True, capture_output=True)
            subprocess.run([*services, "up", "mariadb"], env=env, check=True, capture_output=True)

        restart = threading.Timer(0.5, bounce)
        restart.start()
        write_concurrently(sink, batches, attempts=600, pause_s=0.1)
        restart.join()
        distinct = {(r.device_sn, r.timestamp) for r in records}
        check = create_engine(url)  # the sink's pooled connections may predate the restart
        try:
            assert stored(check) == (len(distinct), len(distinct))
        finally:
            check.dispose()
    finally:
        if engine is not None:
            engine.dispose()
        subprocess.run([*services, "down", "mariadb"], env=env, check=False, capture_output=True)
