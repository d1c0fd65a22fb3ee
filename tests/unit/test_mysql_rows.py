import datetime as dt
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st
from pymysql.converters import escape_item

from consumer.sinks.mysql_rows import (
    DAILY_FIELDS,
    HEALTH_COLUMNS,
    daily_rows,
    health_row,
    render_health_values,
    week_start,
    weekly_rows,
)
from schemas.record import HealthRecord
from tests.records import make_record


def pymysql_literal(record: HealthRecord) -> str:
    """What PyMySQL's generic escaping makes of the row: the reference for the fast path."""
    row = health_row(record)
    values = (escape_item(row[c], "utf8mb4") for c in HEALTH_COLUMNS)
    return "(" + ",".join(values) + ")"


def test_rendered_values_match_pymysql_escaping() -> None:
    records = [
        make_record(heart_rate=77),
        make_record("SN'quote\\back", seconds=5, upload_method=None, temperature=None),
        make_record(
            "X-1",
            seconds=9,
            customer_id=None,
            latitude=Decimal("-33.123456"),
            distance=Decimal("0.00"),
            sleep=Decimal("7.25"),
            upload_method="esim",
        ),
    ]
    assert render_health_values(records) == ",".join(pymysql_literal(r) for r in records)


@given(
    sn=st.text(st.characters(codec="ascii", exclude_categories=["Cc"]), min_size=1, max_size=64),
    hr=st.none() | st.integers(0, 300),
    temp=st.none() | st.decimals(0, 50, places=2),
    lat=st.none() | st.decimals(-90, 90, places=6),
)
def test_rendered_values_match_pymysql_for_any_values(
    sn: str, hr: int | None, temp: Decimal | None, lat: Decimal | None
) -> None:
    record = make_record(sn, heart_rate=hr, temperature=temp, latitude=lat)
    assert render_health_values([record]) == pymysql_literal(record)


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
