"""Time partitions of t_user_health_data: created ahead of the readings, dropped when old.

Why (issue 20, docs/capacity.md): every index that leads with the device (the unique
`(device_sn, timestamp)`, `(customer_id, user_id, timestamp)`) takes inserts all over
itself, so InnoDB must keep the whole index in its buffer pool or read a page per insert.
Partitioned by reading time, only the current partition's indexes take inserts: the hot
set is one partition's indexes, not the table's, and it stays in the pool however large
the table grows. Old readings then go with an O(1) `DROP PARTITION`.

Layout (migration 0005): `PARTITION BY RANGE COLUMNS(timestamp)`, partitions named
`p<yyyymmddhhmm>` holding the readings before that time, and `p_future` (MAXVALUE) for
everything after the last one, so a reading is never refused for its time. `ensure_ahead`
splits `p_future` into partitions up to a horizon (every replica's partition keeper does
it every few minutes, `health-consumer retention` on every run): while it runs ahead of
the clocks, `p_future` is empty and the split copies nothing. An adopted legacy table is
not partitioned; these functions then do nothing.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from sqlalchemy import Connection

TABLE = "t_user_health_data"
FUTURE = "p_future"
NAME_FORMAT = "p%Y%m%d%H%M"


@dataclass(frozen=True, slots=True)
class Partition:
    name: str
    bound: dt.datetime | None  # rows with timestamp < bound; None: MAXVALUE
    rows: int  # the server's estimate (information_schema)


def local_now(zone: str) -> dt.datetime:
    """Now on the clock of the stored (naive) reading times: DEVICE_TIMEZONE's wall clock."""
    return dt.datetime.now(ZoneInfo(zone)).replace(tzinfo=None, microsecond=0)


def partitions(conn: Connection) -> list[Partition]:
    """The health table's partitions in order; [] when it is not partitioned."""
    rows = conn.exec_driver_sql(
        "SELECT PARTITION_NAME, PARTITION_DESCRIPTION, TABLE_ROWS "
        "FROM information_schema.PARTITIONS WHERE TABLE_SCHEMA = DATABASE() "
        "AND TABLE_NAME = %s AND PARTITION_NAME IS NOT NULL ORDER BY PARTITION_ORDINAL_POSITION",
        (TABLE,),
    ).all()
    out = []
    for name, description, table_rows in rows:
        bound = None
        if description != "MAXVALUE":
            bound = dt.datetime.fromisoformat(str(description).strip("'"))
        out.append(Partition(str(name), bound, int(table_rows or 0)))
    return out


def split_future_sql(
    existing: list[Partition], start: dt.datetime, until: dt.datetime, minutes: int
) -> str | None:
    """The REORGANIZE that adds partitions of `minutes` up to `until`, or None when they
    exist already. The first partition of a table that has none ends at the first
    multiple of `minutes` (from midnight) after `start` and so holds all older rows."""
    if not existing or existing[-1].name != FUTURE:
        return None
    step = dt.timedelta(minutes=minutes)
    bounds = [p.bound for p in existing if p.bound is not None]
    if bounds:
        bound = bounds[-1] + step
    else:
        midnight = dt.datetime.combine(start.date(), dt.time())
        bound = midnight + ((start - midnight) // step + 1) * step
    new: list[dt.datetime] = []
    while bound <= until:
        new.append(bound)
        bound += step
    if not new:
        return None
    parts = [
        f"PARTITION {b.strftime(NAME_FORMAT)} VALUES LESS THAN ('{b:%Y-%m-%d %H:%M:%S}')"
        for b in new
    ]
    parts.append(f"PARTITION {FUTURE} VALUES LESS THAN (MAXVALUE)")
    return f"ALTER TABLE {TABLE} REORGANIZE PARTITION {FUTURE} INTO ({', '.join(parts)})"


def ensure_ahead(
    conn: Connection, start: dt.datetime, until: dt.datetime, minutes: int
) -> str | None:
    """Split `p_future` so partitions exist up to `until`; return the statement run."""
    sql = split_future_sql(partitions(conn), start, until, minutes)
    if sql is not None:
        conn.exec_driver_sql(sql)
    return sql


def expired(existing: list[Partition], cutoff: dt.datetime) -> list[Partition]:
    """Partitions whose every row is older than `cutoff` (bound <= cutoff)."""
    return [p for p in existing if p.bound is not None and p.bound <= cutoff]
