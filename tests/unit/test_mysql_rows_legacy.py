"""Rows as the legacy ljwx readers expect them: upload_method ENUM, alert columns, defaults."""

from __future__ import annotations

import dataclasses
import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pymysql.converters import escape_item

from consumer.db.tables import (
    ALERT_COLUMNS,
    HEALTH_COLUMNS,
    LEGACY_UPLOAD_METHOD_ENUM,
    alert_info,
    health_data,
    written_columns,
)
from consumer.health_alerts.rules import Alert, HealthRule
from consumer.sinks.mysql_rows import (
    alert_row,
    alert_unit,
    health_row,
    legacy_upload_method,
    render_health_values,
)
from schemas.record import HealthRecord
from tests.records import make_record


@pytest.mark.parametrize(
    ("raw", "stored"),
    [
        (None, "wifi"),  # legacy: a missing upload_method is wifi
        ("", "wifi"),
        ("   ", "wifi"),
        ("wifi", "wifi"),
        ("bluetooth", "bluetooth"),
        ("common_event", "common_event"),
        ("esim", "esim"),
        ("4g", "esim"),  # legacy: 4g is the old name of esim
        ("4G", "esim"),
        (" WiFi ", "wifi"),
        ("lte", "common_event"),  # unknown: never counted as wifi
        ("wifi%s", "common_event"),
        ("nul\x00byte", "common_event"),
    ],
)
def test_legacy_upload_method(raw: str | None, stored: str) -> None:
    assert legacy_upload_method(raw) == stored
    assert stored in LEGACY_UPLOAD_METHOD_ENUM


@given(st.none() | st.text(max_size=80))
def test_legacy_upload_method_is_total(raw: str | None) -> None:
    assert legacy_upload_method(raw) in LEGACY_UPLOAD_METHOD_ENUM


def pymysql_literal(record: HealthRecord) -> str:
    """What PyMySQL's generic escaping makes of the reference row."""
    row = health_row(record)
    return "(" + ",".join(escape_item(row[c], "utf8mb4") for c in HEALTH_COLUMNS) + ")"


def test_rendered_row_carries_mapped_and_raw_upload_method() -> None:
    records = [
        make_record(upload_method="4g"),
        make_record("B", upload_method=None, customer_id=None),
        make_record("C", upload_method="q'u\"o%" + "x" * 80),
    ]
    assert render_health_values(records) == ",".join(pymysql_literal(r) for r in records)
    rows = [health_row(r) for r in records]
    assert [(r["upload_method"], r["upload_method_raw"]) for r in rows[:2]] == [
        ("esim", "4g"),
        ("wifi", None),
    ]
    assert rows[1]["customer_id"] == 0  # NOT NULL DEFAULT 0: an unbound device is customer 0
    assert rows[2]["upload_method"] == "common_event"
    assert rows[2]["upload_method_raw"] == ("q'u\"o%" + "x" * 80)[:64]


@given(
    method=st.none() | st.text(st.characters(codec="utf-8", exclude_categories=["Cs"])),
    customer=st.none() | st.integers(0, 2**63 - 1),
)
def test_rendered_values_match_the_reference_row(method: str | None, customer: int | None) -> None:
    record = make_record(upload_method=method, customer_id=customer)
    assert render_health_values([record]) == pymysql_literal(record)


def test_written_columns_leave_only_defaulted_columns_to_the_server() -> None:
    for table in (health_data, alert_info):
        written = set(written_columns(table))
        for column in table.columns:
            if column.name in written or column.primary_key:
                continue
            # A column we never write must be nullable or have a server default.
            assert column.nullable or column.server_default is not None, column.name
    assert "upload_method_raw" in HEALTH_COLUMNS
    assert not {"is_deleted", "user_name", "create_time", "update_time"} & set(HEALTH_COLUMNS)
    assert "health_id" in ALERT_COLUMNS and "is_deleted" not in ALERT_COLUMNS


def make_rule(**overrides: Any) -> HealthRule:
    """A rule with or without the `level` attribute another change adds to HealthRule."""
    values: dict[str, Any] = {
        "id": 7,
        "rule_type": "heart_rate_high",
        "physical_sign": "heart_rate",
        "threshold_min": Decimal(40),
        "threshold_max": Decimal(120),
        "trend_duration": 1,
        "severity_level": "critical",
        "alert_message": "Heart rate high",
        "customer_id": 0,
        "level": "major",
        **overrides,
    }
    names = {f.name for f in dataclasses.fields(HealthRule)}
    return HealthRule(**{k: v for k, v in values.items() if k in names})


def test_alert_row_fills_the_production_columns() -> None:
    record = make_record(heart_rate=150, customer_id=5, org_id=6, user_id=8)
    alert = Alert(rule=make_rule(), record=record, value=150, field="heart_rate")
    row = dict(zip(ALERT_COLUMNS, alert_row(alert, health_id=42), strict=True))
    level = getattr(alert.rule, "level", "critical")
    assert row == {
        "rule_id": 7,
        "alert_type": "heart_rate_high",
        "device_sn": record.device_sn,
        "alert_timestamp": record.timestamp,
        "alert_desc": alert.description,
        "severity_level": "critical",
        "alert_status": "pending",
        "health_id": 42,
        "customer_id": 5,
        "org_id": 6,
        "user_id": 8,
        "source": "server",
        "metric": "heart_rate",
        "value": 150,
        "unit": "bpm",
        "level": level,
        "status": "NEW",
        "occur_at": record.timestamp,
    }


def test_alert_row_level_and_defaults_from_a_legacy_rule() -> None:
    with_level = dataclasses.replace(make_rule(), level="major")
    without = dataclasses.replace(make_rule(), level=None)
    no_severity = dataclasses.replace(without, severity_level=None)  # type: ignore[arg-type]
    record = make_record(customer_id=None, temperature=Decimal("39.10"))
    row_of: dict[str, Any] = {}
    for name, rule in (("with", with_level), ("without", without), ("none", no_severity)):
        alert = Alert(rule=rule, record=record, value=Decimal("39.10"), field="temperature")
        row_of[name] = dict(zip(ALERT_COLUMNS, alert_row(alert, None), strict=True))
    assert row_of["with"]["level"] == "major"
    assert row_of["without"]["level"] == "critical"  # no level: the severity stands in
    assert row_of["none"]["severity_level"] == row_of["none"]["level"] == "minor"
    assert row_of["with"]["customer_id"] == 0 and row_of["with"]["unit"] == "°C"
    assert row_of["with"]["health_id"] is None


def test_alert_desc_is_cut_to_the_column() -> None:
    rule = make_rule(alert_message="x" * 5000)
    alert = Alert(rule=rule, record=make_record(), value=150, field="heart_rate")
    row = dict(zip(ALERT_COLUMNS, alert_row(alert, 1), strict=True))
    assert len(row["alert_desc"]) == alert_info.c.alert_desc.type.length == 2000


@pytest.mark.parametrize(
    ("field", "unit"),
    [
        ("heart_rate", "bpm"),
        ("blood_oxygen", "%"),
        ("temperature", "°C"),
        ("pressure_high", "mmHg"),
        ("pressure_low", "mmHg"),
        ("stress", None),
    ],
)
def test_alert_unit(field: str, unit: str | None) -> None:
    assert alert_unit(field) == unit


def test_timestamps_render_to_the_second() -> None:
    record = make_record(timestamp=dt.datetime(2025, 1, 2, 3, 4, 5))
    assert "'2025-01-02 03:04:05'" in render_health_values([record])
