from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from pymysql.converters import escape_item

import consumer.sinks.mysql_rows as mysql_rows
from consumer.sinks.mysql_rows import (
    DAILY_FIELDS,
    HEALTH_COLUMNS,
    daily_rows,
    health_row,
    render_health_tsv,
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


def test_fractions_of_a_second_are_cut_as_before() -> None:
    """The row keeps whole seconds (as strftime did): the column is DATETIME(0)."""
    record = make_record(timestamp=dt.datetime(2025, 1, 2, 3, 4, 5, 999_999))
    assert "'2025-01-02 03:04:05'" in render_health_values([record])
    assert "\t2025-01-02 03:04:05\t" in render_health_tsv([record])


def test_memoized_text_survives_the_memo_filling_up(monkeypatch: Any) -> None:
    monkeypatch.setattr(mysql_rows, "MEMO_LIMIT", 2)
    records = [make_record(f"SN{i}'", seconds=i, upload_method=f"m{i}") for i in range(5)]
    for _ in range(2):
        assert render_health_values(records) == ",".join(pymysql_literal(r) for r in records)
        assert parse_tsv(render_health_tsv(records)) == [tsv_reference(r) for r in records]


# --- LOAD DATA's tab-separated rows ---------------------------------------------------

_UNESCAPE = {"0": "\0", "b": "\b", "n": "\n", "r": "\r", "t": "\t", "Z": "\x1a"}


def _unescape_field(field: str) -> str | None:
    """A field as the server reads it (FIELDS ESCAPED BY '\\'): the reference parser."""
    if field == "\\N":
        return None
    out: list[str] = []
    i = 0
    while i < len(field):
        c = field[i]
        if c == "\\":
            i += 1
            nxt = field[i]
            assert nxt != "N", "\\N only stands alone"
            out.append(_UNESCAPE.get(nxt, nxt))
        else:
            assert c not in "\t\n", "raw terminators must not occur inside a field"
            out.append(c)
        i += 1
    return "".join(out)


def parse_tsv(text: str) -> list[list[str | None]]:
    if not text:
        return []
    assert text.endswith("\n")
    return [[_unescape_field(f) for f in line.split("\t")] for line in text[:-1].split("\n")]


def tsv_reference(record: HealthRecord) -> list[str | None]:
    """health_row's values as text, as the server would parse them from the INSERT."""
    row = health_row(record)
    out: list[str | None] = []
    for c in HEALTH_COLUMNS:
        value = row[c]
        if isinstance(value, dt.datetime):
            value = value.replace(microsecond=0).isoformat(" ")
        out.append(None if value is None else str(value))
    return out


def test_tsv_rows_carry_the_reference_values() -> None:
    records = [
        make_record(heart_rate=77),
        make_record("SN'quote\\back\ttab\nline\r\x00nul\x1a\\N", seconds=5, upload_method=None),
        make_record("X-1", seconds=9, customer_id=None, latitude=Decimal("-33.123456"),
                    distance=Decimal("0.00"), sleep=Decimal("7.25"), upload_method="4G\t"),
        make_record("NULL", seconds=11, upload_method="\\N", temperature=None),
    ]  # fmt: skip
    text = render_health_tsv(records)
    assert text.count("\n") == len(records)
    assert parse_tsv(text) == [tsv_reference(r) for r in records]
    assert render_health_tsv([]) == ""


@given(
    sn=st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=64),
    method=st.none() | st.text(st.characters(codec="utf-8", exclude_categories=["Cs"])),
    hr=st.none() | st.integers(0, 300),
    temp=st.none() | st.decimals(0, 50, places=2),
    lat=st.none() | st.decimals(-90, 90, places=6),
)
def test_tsv_rows_match_the_reference_for_any_values(
    sn: str, method: str | None, hr: int | None, temp: Decimal | None, lat: Decimal | None
) -> None:
    record = make_record(sn, heart_rate=hr, temperature=temp, latitude=lat, upload_method=method)
    assert parse_tsv(render_health_tsv([record])) == [tsv_reference(record)]


# --- daily/weekly rows: the readings without slow fields are skipped first --------------


def reference_merge(
    records: list[HealthRecord], fields: tuple[str, ...], weekly: bool
) -> list[tuple[Any, ...]]:
    """The merge as it was before readings without slow fields were skipped up front."""
    rows: dict[tuple[str, dt.date], list[Any]] = {}
    for r in sorted(records, key=lambda r: r.timestamp):
        values = {f: getattr(r, f) for f in fields}
        if all(v is None for v in values.values()):
            continue
        period = week_start(r.timestamp.date()) if weekly else r.timestamp.date()
        parties = {p: getattr(r, p) for p in mysql_rows.PARTY_FIELDS}
        row = rows.get((r.device_sn, period))
        if row is None:
            rows[(r.device_sn, period)] = [r.device_sn, period, parties, values, r.timestamp]
            continue
        row[3].update({f: v for f, v in values.items() if v is not None})
        row[2].update({p: v for p, v in parties.items() if v is not None})
        row[4] = r.timestamp
    return [tuple(row) for row in rows.values()]


SLOW_VALUE = st.none() | st.sampled_from(['{"a": 1}', '{"b": 2}', "[]"])


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["A", "B"]),
            st.integers(0, 20 * 86400),
            st.none() | st.integers(1, 3),
            SLOW_VALUE,
            SLOW_VALUE,
            SLOW_VALUE,
        ),
        max_size=30,
    )
)
def test_daily_and_weekly_rows_match_the_reference_merge(
    specs: list[tuple[str, int, int | None, str | None, str | None, str | None]],
) -> None:
    records = [
        make_record(sn, seconds=s, user_id=user, sleep_data=sleep, workout_data=workout,
                    exercise_week_data=week)
        for sn, s, user, sleep, workout, week in specs
    ]  # fmt: skip

    def as_tuples(rows: list[mysql_rows.SlowRow]) -> list[tuple[Any, ...]]:
        return [(r.device_sn, r.period, r.parties, r.fields, r.data_timestamp) for r in rows]

    assert as_tuples(daily_rows(records)) == reference_merge(records, DAILY_FIELDS, False)
    weekly = mysql_rows.WEEKLY_FIELDS
    assert as_tuples(weekly_rows(records)) == reference_merge(records, weekly, True)
