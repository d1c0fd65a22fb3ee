"""`health-consumer migrate --tune-indexes`: drop an adopted legacy table's redundant
per-device indexes, online (issue 20).

Every index that leads with the device or the user takes each insert on a page of its
own device, so its whole size is the buffer pool's hot set (docs/capacity.md). An adopted
ljwx table has five such indexes (our unique `(device_sn, timestamp)` and the legacy
`idx_device_sn`, `idx_health_customer_device_time`, `idx_health_customer_user_time`,
`idx_health_cover_basic`), and collapses at ~8M rows on a 1 GB pool. Three of them
answer nothing another one does not:

- `idx_device_sn (device_sn)` is a prefix of `uk_health_device_ts (device_sn, timestamp)`;
- `idx_health_customer_user_time (customer_id, user_id, timestamp)` is a prefix of
  `idx_health_cover_basic (customer_id, user_id, timestamp, heart_rate, ...)`;
- `idx_health_customer_device_time (customer_id, device_sn, timestamp)`: a device belongs
  to one customer, so `customer_id = ? AND device_sn = ? AND timestamp BETWEEN ...` reads
  the same entries through `uk_health_device_ts` (the customer is checked on the row).

What the bigscreen loses: a query by customer and device that read only the index now
reads each matching row too (one clustered-index lookup per reading returned), and a
customer-wide scan ordered by device (`WHERE customer_id = ? ORDER BY device_sn`) has no
index order to follow. Every filter it uses keeps an index.

An index is dropped only while the index that replaces it exists with the expected
columns. `DROP INDEX` with ALGORITHM=INPLACE, LOCK=NONE only changes metadata: the
legacy writer and the consumer keep writing. `dry_run` prints the statement only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Connection, create_engine

TABLE = "t_user_health_data"
# index to drop -> (its columns, the index that serves its queries, that one's column prefix)
REDUNDANT: dict[str, tuple[tuple[str, ...], str, tuple[str, ...]]] = {
    "idx_device_sn": (("device_sn",), "uk_health_device_ts", ("device_sn", "timestamp")),
    "idx_health_customer_user_time": (
        ("customer_id", "user_id", "timestamp"),
        "idx_health_cover_basic",
        ("customer_id", "user_id", "timestamp"),
    ),
    "idx_health_customer_device_time": (
        ("customer_id", "device_sn", "timestamp"),
        "uk_health_device_ts",
        ("device_sn", "timestamp"),
    ),
}


@dataclass(slots=True)
class TuneResult:
    dropped: list[str] = field(default_factory=list)
    kept: dict[str, str] = field(default_factory=dict)  # index -> why it stays
    sql: str = ""


def indexes(conn: Connection) -> dict[str, tuple[str, ...]]:
    rows = conn.exec_driver_sql(
        "SELECT INDEX_NAME, COLUMN_NAME FROM information_schema.STATISTICS "
        "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s ORDER BY INDEX_NAME, SEQ_IN_INDEX",
        (TABLE,),
    ).all()
    out: dict[str, tuple[str, ...]] = {}
    for name, column in rows:
        out[str(name)] = (*out.get(str(name), ()), str(column))
    return out


def plan(have: dict[str, tuple[str, ...]]) -> TuneResult:
    """Which redundant indexes can go: present as expected, their replacement too."""
    result = TuneResult()
    for name, (columns, replacement, prefix) in REDUNDANT.items():
        if name not in have:
            continue
        if have[name] != columns:
            result.kept[name] = f"columns {have[name]}, not {columns}: not the legacy index"
        elif have.get(replacement, ())[: len(prefix)] != prefix:
            result.kept[name] = f"no {replacement} {prefix} here to serve its queries: it is needed"
        else:
            result.dropped.append(name)
    if result.dropped:
        drops = ", ".join(f"DROP INDEX `{n}`" for n in result.dropped)
        result.sql = f"ALTER TABLE {TABLE} {drops}, ALGORITHM=INPLACE, LOCK=NONE"
    return result


def tune_indexes(database_url: str, *, dry_run: bool = False) -> TuneResult:
    engine = create_engine(database_url)
    try:
        with engine.begin() as conn:
            result = plan(indexes(conn))
            if result.sql and not dry_run:
                conn.exec_driver_sql(result.sql)
        return result
    finally:
        engine.dispose()
