"""Partition t_user_health_data by reading time (issue 20): inserts stay in memory as it grows.

The unique `(device_sn, timestamp)` and `(customer_id, user_id, timestamp)` lead with the
device, so each insert lands on a page of its own device: with 200k devices the whole of
both indexes is the hot set, and once they outgrow the buffer pool every insert reads a
page and evicts a dirty one (bench/growth.py on a 1 GB pool: 62k rows/s at 7M rows, 7k at
16M, 1.0 page read per row). Partitioned by `timestamp`, only the current partition's
indexes take inserts: with 15-minute partitions the same run holds 55-70k rows/s with no
reads (consumer.db.partitions; docs/capacity.md has the curves and the sizing law).

Without a unique key on `id` alone, concurrent LOAD DATA ... IGNORE statements stored
rows sharing an id; the sink therefore writes a partitioned table with INSERT (see
`MySQLSink._partitioned`).

MySQL requires every unique key of a partitioned table to contain the partitioning
column: the unique `(device_sn, timestamp)` does, so dedup stays exact (a reading's key
lives in the one partition of its time); the primary key becomes `(id, timestamp)`.
`id` stays AUTO_INCREMENT and first in the primary key, so readers and the alerts'
`health_id` keep finding a reading by id (a lookup by id alone probes every partition).

The table starts with one partition, `p_future` (MAXVALUE); the consumer's replicas split
it into time partitions ahead of the clocks (consumer.db.partition_keeper) and
`health-consumer retention`, on a schedule, drops the old ones. On a populated table this
revision rebuilds the table (ALGORITHM=COPY: writes wait; plan a window), and the first
`retention` after it copies the existing rows once more, from `p_future` into the first
time partition: run it in the same window, before the consumer starts again (the
replicas' keeper refuses that copy).

An adopted legacy database (`healthstream_adoption` exists) is left unchanged, as 0003
and 0004 do: the legacy writer and bigscreen keep their table (their remedy is the opt-in
`health-consumer migrate --tune-indexes`).

Revision ID: 0005_health_time_partitions
Revises: 0004_device_sn_binary
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import context, op

revision = "0005_health_time_partitions"
down_revision = "0004_device_sn_binary"
branch_labels = None
depends_on = None

ADOPTED_UNCHANGED = True  # see 0003

TABLE = "t_user_health_data"
ADOPTION_TABLE = "healthstream_adoption"  # frozen copy of consumer.db.adopt's name


def upgrade() -> None:
    if _adopted():
        return
    op.execute(
        f"ALTER TABLE {TABLE} DROP PRIMARY KEY, ADD PRIMARY KEY (id, `timestamp`) "
        "PARTITION BY RANGE COLUMNS(`timestamp`) (PARTITION p_future VALUES LESS THAN (MAXVALUE))"
    )


def downgrade() -> None:
    if _adopted():
        return
    op.execute(f"ALTER TABLE {TABLE} REMOVE PARTITIONING")
    op.execute(f"ALTER TABLE {TABLE} DROP PRIMARY KEY, ADD PRIMARY KEY (id)")


def _adopted() -> bool:
    if context.is_offline_mode():
        adopted = bool(context.config.attributes.get("adopted"))
        if adopted:
            op.execute(f"-- {revision}: an adopted database is left unchanged")
        return adopted
    return op.get_bind().exec_driver_sql(f"SHOW TABLES LIKE '{ADOPTION_TABLE}'").first() is not None
