"""The published JSON Schema and the decoder agree on every example of the contract.

A gateway author validates against schemas/health-data.v1.schema.json; the consumer runs
schemas.decode. For each payload of the contract's example sets (tests/unit/payloads.py
and the parametrizations of tests/unit/test_contract.py, valid and invalid alike), the
schema accepts it exactly when the decoder stores every reading: no MessageError and no
ReadingError. A dropped slow field does not count as a rejection: the reading is stored
(its JSON-in-a-string content is a check the schema cannot express).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator

import tests.unit.test_contract as contract
from schemas.decode import MessageError, decode_message, decode_message_reference
from schemas.export import SCHEMA_PATH
from tests.unit.payloads import (
    ABSENT,
    SAMPLE_SN,
    SAMPLE_UPLOAD,
    cache_flush,
    camel_reading,
    envelope,
    legacy_reading,
    relay,
    watch_reading,
)

VALIDATOR = Draft202012Validator(json.loads(SCHEMA_PATH.read_text(encoding="utf-8")))


def _with(**overrides: Any) -> Any:
    return envelope(watch_reading(**overrides))


def _renamed(name: str) -> Any:
    """What test_every_name_of_a_field_is_read sends for one wire name."""
    primary = contract.ALIASES[name]
    sent = contract.FIELD_CASES[primary][0]
    reading: dict[str, Any] = {"deviceSn": SAMPLE_SN, "timestamp": "2025-05-31 21:18:24"}
    reading.pop(primary, None)
    reading[name] = sent
    return envelope(reading)


# test_contract function -> how it turns one parameter set into the message it decodes.
BUILDERS: dict[str, Callable[..., Any]] = {
    "test_out_of_range_and_malformed_values": lambda overrides, detail: _with(**overrides),
    "test_missing_device_sn": lambda overrides, detail: _with(**overrides),
    "test_malformed_device_sn": lambda sent, detail: _with(deviceSn=sent),
    "test_invalid_timestamp": lambda sent, detail: _with(timestamp=sent),
    "test_integer_fields_take_numbers_and_numeric_strings": lambda sent: _with(heart_rate=sent),
    "test_text_decimals_also_take_numbers": lambda sent: _with(body_temperature=sent),
    "test_device_sn_numbers_become_text_and_whitespace_is_stripped": (
        lambda sent, expected: _with(deviceSn=sent)
    ),
    "test_ids_are_normalized_to_int": lambda sent, expected: _with(userId=sent),
    "test_upload_method": lambda sent, expected: _with(upload_method=sent),
    "test_null_slow_fields_are_none": lambda sent: _with(
        sleepData=sent, exerciseDailyData=sent, workoutData=sent
    ),
    "test_unusable_messages": lambda value, reason, detail: value,
    "test_every_name_of_a_field_is_read": _renamed,
    "test_every_envelope_shape_gives_the_same_record": lambda shape: contract.ENVELOPES[shape],
}


def _parametrized(function: Any) -> Iterator[tuple[Any, ...]]:
    for mark in getattr(function, "pytestmark", []):
        if mark.name != "parametrize" or mark.args[0] == "decode":
            continue
        names = mark.args[0]
        single = isinstance(names, str) and "," not in names
        for values in mark.args[1]:
            yield (values,) if single else tuple(values)


def contract_examples() -> list[Any]:
    examples: list[Any] = [
        SAMPLE_UPLOAD,
        envelope(cache_flush(3), customerId=1001, orgId="2001"),
        envelope(legacy_reading()),
        envelope(camel_reading()),
        relay(camel_reading(), customerId=5),
        watch_reading(customerId=1001, org_id="2001", userId=3001.0),
        _with(heart_rate=70, heartRate=80, xlv=90),
        _with(battery=87, firmware="2.3.1", extra={"a": [1]}),
        _with(distance="1.005", latitude="22.5430965", calorie="-0.0"),
        _with(heart_rate="", body_temperature=" "),
        _with(timestamp="2000-01-01 00:00:00"),
        _with(timestamp="2100-12-31 23:59:59"),
        _with(timestamp="2024-02-29 12:00:00"),  # a leap day
        _with(timestamp="2100-02-29 12:00:00"),  # 2100 is not a leap year
        # Issue 8: what the legacy upload path accepted.
        _with(heart_rate="78", step="3512", blood_oxygen=" 98 ", stress="35.0"),
        _with(heart_rate="301"),
        _with(heart_rate="6_6"),  # int() would take it; the grammar does not
        _with(altitude="0", distance=0, calorie="0.0", latitude=0, longitude="0"),
        _with(sleepData="{not json", workoutData="[[["),  # kept, field dropped
        _with(timestamp=ABSENT),  # a gateway has no message time: rejected
        _with(body_temperature="3.65e1"),
        _with(body_temperature="\u0661\u0662"),  # Arabic-Indic digits
        _with(latitude="-90.0000001"),
        _with(customerId="9223372036854775808"),
        _with(customerId="-9223372036854775808"),
        {"data": "x", "deviceSn": SAMPLE_SN, "timestamp": "2025-05-31 21:18:24"},
        {"id": SAMPLE_SN, "timestamp": "2025-05-31 21:18:24"},
    ]
    for name, build in BUILDERS.items():
        cases = list(_parametrized(getattr(contract, name)))
        assert cases, f"{name} has no examples any more"
        examples.extend(build(*case) for case in cases)
    return examples


def _json(example: Any) -> tuple[bytes, Any] | None:
    if isinstance(example, bytes):
        try:
            return example, orjson.loads(example)
        except orjson.JSONDecodeError:
            return None  # not JSON: nothing for a JSON Schema to judge
    return orjson.dumps(example), example


EXAMPLES = [pair for e in contract_examples() if (pair := _json(e)) is not None]


def decoder_accepts(value: bytes, decode: Callable[..., Any]) -> bool:
    try:
        decoded = decode(value)
    except MessageError:
        return False
    return not decoded.errors


@pytest.mark.parametrize(("value", "document"), EXAMPLES, ids=range(len(EXAMPLES)))
def test_schema_and_decoder_agree(value: bytes, document: Any) -> None:
    schema_says = VALIDATOR.is_valid(document)
    errors = [e.message[:120] for e in VALIDATOR.iter_errors(document)][:3]
    assert decoder_accepts(value, decode_message) == schema_says, (value[:300], errors)
    assert decoder_accepts(value, decode_message_reference) == schema_says


def test_the_examples_cover_both_answers() -> None:
    answers = [VALIDATOR.is_valid(document) for _, document in EXAMPLES]
    assert answers.count(True) >= 40 and answers.count(False) >= 40
