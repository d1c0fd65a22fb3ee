import datetime as dt

from consumer.sinks.mysql_rows import (
    DAILY_FIELDS,
    HEALTH_COLUMNS,
    daily_rows,
    health_row,
    week_start,
    weekly_rows,
)
from tests.records import make_record


def test_health_row_follows_column_order() -> None:
    rec = make_record(heart_rate=77)
    row = health_row(rec)
    assert len(row) == len(HEALTH_COLUMNS)
    assert row[HEALTH_COLUMNS.index("heart_rate")] == 77
    assert row[HEALTH_COLUMNS.index("device_sn")] == rec.device_sn
    assert row[HEALTH_COLUMNS.index("timestamp")] == rec.timestamp


def test_week_start_is_monday() -> None:
    assert week_start(dt.date(2025, 6, 1)) == dt.date(2025, 5, 26)  # Sunday
    assert week_start(dt.date(2025, 5, 26)) == dt.date(2025, 5, 26)  # Monday


def test_records_without_slow_fields_make_no_rows() -> None:
    assert daily_rows([make_record()]) == []
    assert weekly_rows([make_record()]) == []


def test_daily_merge_newest_wins_older_fills_gaps() -> None:
    older = make_record(seconds=0, sleep_data='{"v":1}', workout_data='{"w":1}')
    newer = make_record(seconds=60, sleep_data='{"v":2}')
    # arrival order must not matter: merge is by reading time
    rows = daily_rows([newer, older])
    assert len(rows) == 1
    row = rows[0]
    assert row.fields["sleep_data"] == '{"v":2}'
    assert row.fields["workout_data"] == '{"w":1}'
    assert row.fields["exercise_daily_data"] is None
    assert row.data_timestamp == newer.timestamp
    tup = row.as_tuple(DAILY_FIELDS)
    assert tup[0] == newer.device_sn and tup[4] == newer.timestamp.date()


def test_weekly_rows_group_by_device_and_week() -> None:
    a = make_record("A", seconds=0, exercise_week_data='{"w":1}')
    b = make_record("A", seconds=86400 * 7, exercise_week_data='{"w":2}')
    c = make_record("B", seconds=0, exercise_week_data='{"w":3}')
    rows = weekly_rows([a, b, c])
    assert {(r.device_sn, r.period) for r in rows} == {
        ("A", week_start(a.timestamp.date())),
        ("A", week_start(b.timestamp.date())),
        ("B", week_start(c.timestamp.date())),
    }
