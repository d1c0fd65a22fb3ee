"""The normalized output record: compact, every field it may carry in its schema."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import jsonschema
import orjson

from consumer.settings import load_settings
from consumer.sinks.normalized import FIELDS, build_sink, json_schema, record_value
from schemas.record import HealthRecord


def test_a_record_carries_what_was_sent_and_validates() -> None:
    record = HealthRecord(
        device_sn="SN-1",
        timestamp=dt.datetime(2025, 6, 1, 8, 0, 5),
        customer_id=7,
        heart_rate=0,
        temperature=Decimal("36.70"),
        latitude=Decimal("31.230416"),
        upload_method="wifi",
        sleep_data='{"big": "payload"}',
    )
    value = orjson.loads(record_value(record))
    assert value == {
        "sn": "SN-1",
        "ts": "2025-06-01 08:00:05",
        "customer_id": 7,
        "heart_rate": 0,
        "temperature": 36.7,
        "latitude": 31.230416,
        "upload_method": "wifi",
    }
    jsonschema.validate(value, json_schema())


def test_every_field_of_the_schema_is_a_reading_field() -> None:
    names = set(HealthRecord.__dataclass_fields__)
    assert set(FIELDS) <= names
    assert set(json_schema()["properties"]) == {"sn", "ts", *FIELDS}


def test_off_unless_a_topic_is_set() -> None:
    context = type("C", (), {"settings": load_settings()})()
    assert build_sink(context) is None  # type: ignore[arg-type]
