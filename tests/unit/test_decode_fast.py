"""The fast path's parts against the model, one at a time.

test_contract.py and test_decode_hostile.py compare whole messages through both paths;
these pin the pieces that make the fast path fast, where a drift would otherwise only show
up on a rare value: the decimal caches and their cheap conversion on a miss, and the typed
parse of watch uploads, which must either give the model's records or step aside.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any, get_args

import msgspec
import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

import schemas.decode
import schemas.fast
from schemas.clean import CENT, MICRO, UPLOAD_METHODS
from schemas.decode import (
    DecodedMessage,
    MessageError,
    decode_message,
    decode_message_reference,
)
from schemas.fast import _Decimals, _Unsure, _WatchReading
from schemas.reading import ALIASES, Reading
from tests.unit.payloads import (
    ABSENT,
    SAMPLE_UPLOAD,
    cache_flush,
    encode,
    envelope,
    relay,
    watch_reading,
)

# wire name (also the model's attribute) -> the decoder's cache for it
DECIMAL_FIELDS: dict[str, _Decimals] = {
    "body_temperature": schemas.fast._TEMPERATURE,
    "distance": schemas.fast._DISTANCE,
    "calorie": schemas.fast._CALORIE,
    "latitude": schemas.fast._LATITUDE,
    "longitude": schemas.fast._LONGITUDE,
    "altitude": schemas.fast._ALTITUDE,
}
REJECTED = "rejected"


def model_value(name: str, value: Any) -> Decimal | str | None:
    """What the contract makes of `value` in field `name` (REJECTED if it refuses it)."""
    raw = {"deviceSn": "SN1", "timestamp": "2025-05-31 21:18:24", name: value}
    try:
        reading = Reading.model_validate(raw)
    except ValidationError:
        return REJECTED
    result: Decimal | None = getattr(reading, name)
    return result


def fast_value(cache: _Decimals, value: Any) -> Decimal | str | None:
    try:
        return cache[value]
    except _Unsure:
        return REJECTED


NUMERAL_TEXT = st.one_of(
    st.text("0123456789.-", max_size=36),
    st.from_regex(r"-?[0-9]{1,13}(\.[0-9]{0,8})?", fullmatch=True),
    st.decimals(-200, 200, places=6).map(str),
    st.decimals(-(10**10), 10**10, places=2).map(str),
)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(sorted(DECIMAL_FIELDS)), NUMERAL_TEXT)
@example("latitude", "-0.000000")
@example("latitude", "-0.0000004")
@example("latitude", "90.000000")
@example("latitude", "90.0000005")
@example("body_temperature", "-0.0")
@example("body_temperature", "-0.004")
@example("body_temperature", "50.00")
@example("body_temperature", "50.001")
@example("body_temperature", "36.")
@example("body_temperature", "-.5")
@example("body_temperature", ".50")
@example("body_temperature", "0000036.5")
@example("distance", "1000000000.004")
@example("distance", "0" * 31 + "1")
@example("distance", "0" * 32 + "1")
@example("altitude", "-10000000.00")
def test_a_converted_text_is_what_the_model_makes_of_it(name: str, text: str) -> None:
    cache = DECIMAL_FIELDS[name]
    fast = fast_value(cache, text)
    if fast == REJECTED:
        return  # deferred: the model decides, whatever it says
    assert repr(fast) == repr(model_value(name, text))
    assert repr(fast_value(cache, text)) == repr(fast)  # and so does the cache, next time
    assert (text in cache) == (text[cache.point] != "."), "only what needed rounding is kept"


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(sorted(DECIMAL_FIELDS)),
    st.one_of(st.integers(-(2**70), 2**70), st.sampled_from([True, False, 1.0, 0.5, -0.0])),
)
def test_numbers_are_converted_as_the_model_does_and_never_cached(name: str, value: Any) -> None:
    cache = DECIMAL_FIELDS[name]
    fast = fast_value(cache, value)
    if fast != REJECTED:
        assert type(value) is int
        assert repr(fast) == repr(model_value(name, value))
    assert value not in cache or type(value) is not int  # 1 would answer for True and 1.0


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("body_temperature", "36.5"),
        ("distance", "0.0"),
        ("calorie", "123456.7"),
        ("latitude", "22.543096"),
        ("longitude", "-114.057865"),
        ("longitude", "0"),
        ("altitude", "12.0"),
        ("altitude", "-3.25"),
    ],
)
def test_what_watches_send_is_never_deferred(name: str, text: str) -> None:
    assert fast_value(DECIMAL_FIELDS[name], text) == model_value(name, text) != REJECTED


def test_absent_is_none_without_a_conversion() -> None:
    for cache in DECIMAL_FIELDS.values():
        assert cache[None] is None


def test_unhashable_values_are_not_ours() -> None:
    with pytest.raises(TypeError):
        DECIMAL_FIELDS["distance"][[1]]  # type: ignore[index]


def test_the_scale_is_the_fields_even_when_the_text_has_it() -> None:
    micro = _Decimals(Decimal(-90), Decimal(90), MICRO)
    cent = _Decimals(Decimal(0), Decimal(50), CENT)
    assert repr(micro["22.543096"]) == "Decimal('22.543096')"
    assert repr(micro["22.5"]) == "Decimal('22.500000')"
    assert repr(micro["-0.000000"]) == "Decimal('0.000000')"
    assert repr(cent["36.50"]) == "Decimal('36.50')"
    assert repr(cent["36.5"]) == "Decimal('36.50')"
    assert repr(cent["36.555"]) == "Decimal('36.56')"  # half up, as MySQL
    with pytest.raises(_Unsure):
        cent["-0.004"]  # below 0 as sent, though it rounds to 0.00: the model refuses it
    assert repr(_Decimals(Decimal(-1), Decimal(1), CENT)["-0.004"]) == "Decimal('0.00')"


def test_a_full_cache_starts_over(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(schemas.fast, "_CACHE_LIMIT", 4)
    cache = _Decimals(Decimal(0), Decimal(1000), CENT)
    for i in range(10):
        assert cache[f"{i}.5"] == Decimal(f"{i}.50")
        assert len(cache) <= 4
        assert cache[None] is None
    assert "9.5" in cache and "1.5" not in cache


def test_a_fix_at_the_fields_scale_is_not_kept() -> None:
    cache = _Decimals(Decimal(-90), Decimal(90), MICRO)
    assert repr(cache["22.543096"]) == "Decimal('22.543096')"
    assert repr(cache["0"]) == "Decimal('0.000000')"
    assert set(cache) == {None, "0"}


# --------------------------------------------------------------------------------------
# Watch uploads: one typed parse, or the general path from scratch
# --------------------------------------------------------------------------------------


def outcome(decode: Callable[..., DecodedMessage], value: bytes) -> tuple[str, ...]:
    """A comparable summary of a decode: repr() pins Decimal scales and types."""
    try:
        decoded = decode(value, max_readings=5)
    except MessageError as exc:
        return ("error", exc.reason, exc.detail)
    return ("ok", repr(decoded.records), repr(decoded.errors), repr(decoded.dropped))


def test_the_watch_struct_is_the_common_shape() -> None:
    ids = {"customerId", "orgId", "userId"}
    assert _WatchReading.__struct_fields__ == schemas.fast.WATCH_FIELDS
    assert set(_WatchReading.__struct_fields__) == schemas.fast._COMMON_NAMES | ids
    assert set(schemas.fast.WATCH_FIELDS) <= set(ALIASES.values())  # primary names only
    info = {f.name: f for f in msgspec.structs.fields(_WatchReading)}
    assert {f.name for f in info.values() if f.required} == {"deviceSn", "timestamp"}
    methods = get_args(get_args(info["upload_method"].type)[0])  # Literal[...] | None
    assert methods == UPLOAD_METHODS  # the one list, kept as sent as _fast_record does
    assert {m: m for m in UPLOAD_METHODS} == schemas.fast._KNOWN_METHODS


WATCH_UPLOADS = {
    "sample": SAMPLE_UPLOAD,
    "flush": encode(envelope(cache_flush(5))),
    "single": encode(envelope(watch_reading())),
    "nulls": encode(envelope([watch_reading(heart_rate=None, latitude=None, upload_method=None)])),
    "sparse": encode(envelope([watch_reading(step=ABSENT, calorie=ABSENT, altitude=ABSENT)])),
    "minimal": b'{"data":[{"deviceSn":"SN1","timestamp":"2100-12-31 23:59:59"}]}',
    "bounds": encode(
        envelope(
            [
                watch_reading(heart_rate=300, blood_oxygen=100, step=2**31 - 1, stress=0),
                watch_reading(latitude="-90", longitude="180.000000", altitude="-10000000"),
                watch_reading(body_temperature="50", distance="1000000000.00", calorie="-0"),
            ]
        )
    ),
    "duplicate_key": b'{"data":[{"deviceSn":"SN1","timestamp":"2025-05-31 21:18:24",'
    b'"heart_rate":70,"heart_rate":60}]}',  # the last one counts, in both parsers
    "whitespace": b' \n{ "data" : [ {"deviceSn" : "SN1",\t'
    b'"timestamp":"2025-05-31 21:18:24"} ] }\r\n',
    "reading_ids": encode(envelope([watch_reading(userId=7)])),
    "all_ids": encode(envelope([watch_reading(customerId=1001, orgId=0, userId=2**63 - 1)])),
    "null_ids": encode(envelope([watch_reading(customerId=None, orgId=None, userId=-3)])),
}


@pytest.mark.parametrize("value", WATCH_UPLOADS.values(), ids=WATCH_UPLOADS.keys())
def test_watch_uploads_take_one_typed_parse(monkeypatch: pytest.MonkeyPatch, value: bytes) -> None:
    expected = outcome(decode_message_reference, value)

    def refuse(*args: Any) -> Any:
        raise AssertionError("the watch upload went the general way")

    monkeypatch.setattr(schemas.decode, "_split", refuse)
    assert outcome(decode_message, value) == expected
    assert expected[0] == "ok"


GENERAL = {
    "relay": encode(relay([watch_reading()])),
    "envelope_ids": encode(envelope([watch_reading()], customerId=7)),
    "text_id": encode(envelope([watch_reading(userId="7")])),
    "blank_id": encode(envelope([watch_reading(customerId="")])),
    "bool_id": encode(envelope([watch_reading(orgId=True)])),
    "float_id": encode(envelope([watch_reading(orgId=7.0)])),
    "huge_id": encode(envelope([watch_reading(customerId=2**63)])),
    "alias_id": encode(envelope([watch_reading(customer_id=7)])),
    "bare": encode(watch_reading()),
    "alias": encode(envelope([watch_reading(heart_rate=ABSENT, heartRate=66)])),
    "slow_field": encode(envelope([watch_reading(sleepData="null")])),
    "unknown_key": encode(envelope([watch_reading(battery=80)])),
    "unknown_top_key": encode({"data": [watch_reading()], "v": 1}),
    "float_vital": encode(envelope([watch_reading(heart_rate=66.0)])),
    "text_vital": encode(envelope([watch_reading(heart_rate="66")])),
    "bool_vital": encode(envelope([watch_reading(step=True)])),
    "vital_out_of_range": encode(envelope([watch_reading(heart_rate=301)])),
    "negative_vital": encode(envelope([watch_reading(stress=-1)])),
    "huge_vital": b'{"data":[{"deviceSn":"SN1","timestamp":"2025-05-31 21:18:24",'
    b'"step":' + b"9" * 30 + b"}]}",
    "number_decimal": encode(envelope([watch_reading(latitude=22.5)])),
    "int_decimal": encode(envelope([watch_reading(distance=3)])),
    "exponent_decimal": encode(envelope([watch_reading(calorie="1e3")])),
    "blank_decimal": encode(envelope([watch_reading(altitude=" ")])),
    "decimal_out_of_range": encode(envelope([watch_reading(body_temperature="50.01")])),
    "method_case": encode(envelope([watch_reading(upload_method="WiFi")])),
    "method_new": encode(envelope([watch_reading(upload_method="5g")])),
    "sn_number": encode(envelope([watch_reading(deviceSn=12345)])),
    "sn_blank": encode(envelope([watch_reading(deviceSn=" SN1")])),
    "sn_quote": encode(envelope([watch_reading(deviceSn="S'N")])),
    "sn_long": encode(envelope([watch_reading(deviceSn="S" * 65)])),
    "no_timestamp": encode(envelope([watch_reading(timestamp=ABSENT)])),
    "null_timestamp": encode(envelope([watch_reading(timestamp=None)])),
    "iso_t": encode(envelope([watch_reading(timestamp="2025-05-31T21:18:24")])),
    "no_such_day": encode(envelope([watch_reading(timestamp="2025-02-29 21:18:24")])),
    "year_1999": encode(envelope([watch_reading(timestamp="1999-12-31 23:59:59")])),
    "year_2101": encode(envelope([watch_reading(timestamp="2101-01-01 00:00:00")])),
    "duplicate_key_first_invalid": b'{"data":[{"deviceSn":"SN1",'
    b'"timestamp":"2025-05-31 21:18:24","heart_rate":500,"heart_rate":60}]}',
    "one_bad_of_three": encode(
        envelope([watch_reading(), watch_reading(heart_rate=999), watch_reading()])
    ),
    "empty": b'{"data":[]}',
    "too_many": encode(envelope(cache_flush(6))),
    "not_json": SAMPLE_UPLOAD[:-1],
    "trailing": SAMPLE_UPLOAD + b"x",
    "trailing_comma": SAMPLE_UPLOAD[:-2] + b",]}",
    "bom": b"\xef\xbb\xbf" + SAMPLE_UPLOAD,
    "nan": SAMPLE_UPLOAD.replace(b'"heart_rate":66', b'"heart_rate":NaN'),
    "lone_surrogate": SAMPLE_UPLOAD.replace(b'"0.0"', b'"\\ud800"', 1),
    "invalid_utf8": SAMPLE_UPLOAD.replace(b'"wifi"', b'"wi\xfffi"'),
    "encoded_surrogate": SAMPLE_UPLOAD.replace(b'"wifi"', b'"\xed\xa0\x80"'),
    "control_char": SAMPLE_UPLOAD.replace(b'"wifi"', b'"wi\tfi"'),
    "escaped_nul": SAMPLE_UPLOAD.replace(b'"wifi"', b'"wi\\u0000fi"'),
    "deep": SAMPLE_UPLOAD.replace(b'"wifi"', b"[" * 2000 + b"]" * 2000),
}


@pytest.mark.parametrize("value", GENERAL.values(), ids=GENERAL.keys())
def test_anything_else_goes_the_general_way(value: bytes) -> None:
    assert schemas.fast.watch_records(value, 5) is None
    assert outcome(decode_message, value) == outcome(decode_message_reference, value)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.fixed_dictionaries(
            {},
            optional={
                "heart_rate": st.one_of(st.none(), st.integers(-2, 302)),
                "step": st.one_of(st.none(), st.integers(-1, 2**31)),
                "body_temperature": st.one_of(st.none(), NUMERAL_TEXT),
                "latitude": st.one_of(st.none(), NUMERAL_TEXT),
                "calorie": st.one_of(st.none(), NUMERAL_TEXT),
                "upload_method": st.one_of(st.none(), st.sampled_from([*UPLOAD_METHODS, "Wifi"])),
                "timestamp": st.datetimes().map(lambda d: f"{d:%Y-%m-%d %H:%M:%S}"),
                "customerId": st.one_of(
                    st.none(), st.integers(-(2**63), 2**64 - 1), st.sampled_from(["", "12"])
                ),
                "userId": st.one_of(st.none(), st.integers(-5, 10**6)),
            },
        ),
        min_size=1,
        max_size=6,
    ),
    st.booleans(),
)
def test_watch_uploads_agree_with_the_model(changes: list[dict[str, Any]], single: bool) -> None:
    readings = [watch_reading(**c) for c in changes]
    value = encode(envelope(readings[0] if single else readings))
    assert outcome(decode_message, value) == outcome(decode_message_reference, value)


def test_the_watch_struct_expects_the_keys_in_the_order_watches_send_them() -> None:
    sent = list(orjson.loads(SAMPLE_UPLOAD)["data"][0])
    assert list(_WatchReading.__struct_fields__)[: len(sent)] == sent
