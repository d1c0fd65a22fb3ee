"""The fast path's parts against the model, one at a time.

test_contract.py and test_decode_hostile.py compare whole messages through both paths;
these pin the pieces that make the fast path fast, where a drift would otherwise only show
up on a rare value: the decimal caches and their cheap conversion on a miss.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

import schemas.decode
from schemas.decode import _Decimals, _Unsure
from schemas.reading import CENT, MICRO, Reading

# wire name (also the model's attribute) -> the decoder's cache for it
DECIMAL_FIELDS: dict[str, _Decimals] = {
    "body_temperature": schemas.decode._TEMPERATURE,
    "distance": schemas.decode._DISTANCE,
    "calorie": schemas.decode._CALORIE,
    "latitude": schemas.decode._LATITUDE,
    "longitude": schemas.decode._LONGITUDE,
    "altitude": schemas.decode._ALTITUDE,
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
    monkeypatch.setattr(schemas.decode, "_CACHE_LIMIT", 4)
    cache = _Decimals(Decimal(0), Decimal(1000), CENT)
    for i in range(10):
        assert cache[f"{i}.5"] == Decimal(f"{i}.50")
        assert len(cache) <= 4
        assert cache[None] is None
    assert "9.5" in cache and "1.5" not in cache
