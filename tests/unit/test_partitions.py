"""consumer.db.partitions: which partitions retention adds ahead and which it drops."""

from __future__ import annotations

import datetime as dt

from consumer.db.partitions import FUTURE, Partition, expired, split_future_sql

T = dt.datetime


def test_a_table_with_only_p_future_gets_aligned_partitions_up_to_the_horizon() -> None:
    sql = split_future_sql(
        [Partition(FUTURE, None, 0)], T(2025, 6, 1, 10, 7), T(2025, 6, 1, 11), 15
    )
    assert sql is not None
    # The first ends at the first quarter hour after the start and holds all older rows.
    assert "PARTITION p202506011015 VALUES LESS THAN ('2025-06-01 10:15:00')" in sql
    assert "PARTITION p202506011100 VALUES LESS THAN ('2025-06-01 11:00:00')" in sql
    assert sql.count("PARTITION p2025") == 4
    assert sql.endswith(f"PARTITION {FUTURE} VALUES LESS THAN (MAXVALUE))")
    assert sql.startswith(f"ALTER TABLE t_user_health_data REORGANIZE PARTITION {FUTURE} INTO")


def test_partitions_continue_after_the_last_bound_and_nothing_is_added_twice() -> None:
    have = [Partition("p202506011100", T(2025, 6, 1, 11), 5), Partition(FUTURE, None, 0)]
    sql = split_future_sql(have, T(2025, 6, 1, 10), T(2025, 6, 1, 12), 30)
    assert sql is not None and "p202506011130" in sql and "p202506011200" in sql
    assert "p202506011100" not in sql
    assert split_future_sql(have, T(2025, 6, 1, 10), T(2025, 6, 1, 11), 30) is None


def test_an_unpartitioned_table_gets_nothing() -> None:
    assert split_future_sql([], T(2025, 6, 1), T(2025, 6, 2), 60) is None


def test_only_partitions_wholly_older_than_the_cutoff_expire() -> None:
    have = [
        Partition("p202506010100", T(2025, 6, 1, 1), 1),
        Partition("p202506010200", T(2025, 6, 1, 2), 1),
        Partition(FUTURE, None, 0),
    ]
    assert [p.name for p in expired(have, T(2025, 6, 1, 1, 30))] == ["p202506010100"]
    assert [p.name for p in expired(have, T(2025, 6, 1, 2))] == ["p202506010100", "p202506010200"]
