"""`health-consumer retention --keep-days N`: raw readings do not grow forever (issue 20).

Online, while the consumer writes:
1. our partitioned table (migration 0005) gets its time partitions split off `p_future`
   up to `--ahead-hours` ahead (readings land in small partitions: the point of 0005,
   see consumer.db.partitions), and loses every partition whose readings are all older
   than the cutoff with one `DROP PARTITION`: O(1), no row-by-row delete, no purge;
2. in a table that is not partitioned (an adopted legacy one), the readings older than
   the cutoff are deleted by id ranges of `--chunk-rows` ids, one short transaction each
   (`--pause-ms` between them), so no statement locks many rows or holds a long undo
   chain. A partitioned table keeps the older readings of the partition that straddles
   the cutoff (at most one partition length more than asked) unless `exact`: deleting
   them row by row costs the writers as much as inserting them did (bench/growth.py:
   -46% rows/s while 1.6M rows went, docs/capacity.md), dropping them a partition later
   costs nothing.

Only `t_user_health_data` loses rows. The daily and weekly rows are the long-term
history and stay; so do the alerts: an alert keeps its `health_id` (there is no foreign
key, nothing cascades); after retention it names a reading that is gone, so a join from
the alert to its reading finds nothing while the alert itself (value, time, device) stays.

The cutoff is `now - keep_days`, `now` on the clock of the stored (naive) times: the CLI
passes the time in DEVICE_TIMEZONE; without one, the server's NOW().

Splitting ahead is also what every consumer replica does on its own
(consumer.db.partition_keeper); dropping is only ever done here.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field

from sqlalchemy import Connection, Engine, create_engine

from consumer.db import partitions
from consumer.db.partitions import TABLE


@dataclass(slots=True)
class RetentionResult:
    cutoff: dt.datetime
    dry_run: bool
    statements: list[str] = field(default_factory=list)  # DDL run (or that would run)
    dropped_partitions: list[str] = field(default_factory=list)
    dropped_rows_estimate: int = 0  # the server's row estimate of the dropped partitions
    dropped_before: dt.datetime | None = None  # the dropped partitions held all rows before
    deleted_rows: int = 0  # rows deleted in chunks (dry run: rows that would be)
    chunks: int = 0


def retention(
    database_url: str,
    keep_days: float,
    *,
    dry_run: bool = False,
    now: dt.datetime | None = None,
    chunk_rows: int = 5000,
    pause_ms: float = 0.0,
    partition_minutes: int = 60,
    ahead_hours: float = 24.0,
    exact: bool = False,
) -> RetentionResult:
    """Remove readings older than `keep_days`; see the module docstring."""
    if keep_days <= 0:
        raise ValueError("--keep-days must be positive")
    engine = create_engine(database_url, isolation_level="READ COMMITTED")
    try:
        with engine.connect() as conn:
            if now is None:
                now = conn.exec_driver_sql("SELECT NOW()").scalar_one()
            assert now is not None
            result = RetentionResult(cutoff=now - dt.timedelta(days=keep_days), dry_run=dry_run)
            partitioned = _partitions(conn, result, now, partition_minutes, ahead_hours)
        if exact or not partitioned:
            _delete_in_chunks(engine, result, chunk_rows, pause_ms)
        return result
    finally:
        engine.dispose()


def _partitions(
    conn: Connection, result: RetentionResult, now: dt.datetime, minutes: int, ahead_hours: float
) -> bool:
    """Split ahead and drop the expired partitions; False when the table has none."""
    existing = partitions.partitions(conn)
    if not existing:
        return False
    until = now + dt.timedelta(hours=ahead_hours)
    split = partitions.split_future_sql(existing, now, until, minutes)
    if split is not None:
        result.statements.append(split)
        if not result.dry_run:
            conn.exec_driver_sql(split)
    old = partitions.expired(existing, result.cutoff)
    if old:
        drop = f"ALTER TABLE {TABLE} DROP PARTITION {', '.join(p.name for p in old)}"
        result.statements.append(drop)
        result.dropped_partitions = [p.name for p in old]
        result.dropped_rows_estimate = sum(p.rows for p in old)
        result.dropped_before = old[-1].bound
        if not result.dry_run:
            conn.exec_driver_sql(drop)
    return True


def _delete_in_chunks(
    engine: Engine, result: RetentionResult, chunk_rows: int, pause_ms: float
) -> None:
    """Delete the rest by id ranges: each statement reads at most `chunk_rows` ids of the
    primary key (partitions newer than the cutoff are pruned by the time condition)."""
    cutoff = result.cutoff
    # A dry run did not drop the partitions: count only what the chunks would delete.
    since = result.dropped_before or dt.datetime(1000, 1, 1)
    where = "`timestamp` >= %s AND `timestamp` < %s"
    with engine.connect() as conn:
        lo, hi = conn.exec_driver_sql(
            f"SELECT MIN(id), MAX(id) FROM {TABLE} WHERE {where}", (since, cutoff)
        ).one()
        if lo is None:
            return
        if result.dry_run:
            result.deleted_rows = int(
                conn.exec_driver_sql(
                    f"SELECT COUNT(*) FROM {TABLE} WHERE {where}", (since, cutoff)
                ).scalar_one()
            )
            return
    start = int(lo) - 1
    while start < int(hi):
        end = start + chunk_rows
        with engine.begin() as conn:
            done = conn.exec_driver_sql(
                f"DELETE FROM {TABLE} WHERE id > %s AND id <= %s AND `timestamp` < %s",
                (start, end, cutoff),
            )
            result.deleted_rows += done.rowcount
        result.chunks += 1
        start = end
        if pause_ms:
            time.sleep(pause_ms / 1000)
