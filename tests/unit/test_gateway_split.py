"""gateway.split: every payload shape the contract accepts is routed to per-device
messages that the consumer decodes to the same records, each passing its key check."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.pipeline.intake import read_message as consumer_decode
from gateway.split import Upload, UploadRejected, reading_sn, split_upload
from schemas.decode import decode_message
from schemas.record import HealthRecord
from tests.unit.payloads import SAMPLE_SN, SAMPLE_UPLOAD, watch_reading


def reading(sn: Any, second: int = 0, **extra: Any) -> dict[str, Any]:
    return watch_reading(deviceSn=sn, timestamp=f"2025-05-31 21:18:{second:02d}", **extra)


def consumer_view(upload: Upload) -> tuple[list[HealthRecord], list[str]]:
    """What the consumer makes of the gateway's records: records written, DLQ reasons."""
    records: list[HealthRecord] = []
    reasons: list[str] = []
    for offset, message in enumerate(upload.messages):
        pending = consumer_decode(offset, 0, message.key, message.value, 1000)
        records.extend(pending.records)
        if pending.dead_letter is not None:
            reasons.append(pending.dead_letter.reason)
    return records, reasons


def per_device(records: list[HealthRecord]) -> dict[str, list[HealthRecord]]:
    out: dict[str, list[HealthRecord]] = {}
    for r in records:
        out.setdefault(r.device_sn, []).append(r)
    return out


def assert_same_records(body: bytes, upload: Upload) -> None:
    """Split or not, the consumer stores the readings of the original upload, each device's
    in the upload's order, and rejects no message for its key."""
    original = decode_message(body).records
    records, reasons = consumer_view(upload)
    assert per_device(records) == per_device(original)
    assert "key_mismatch" not in reasons and "unkeyed_mixed_devices" not in reasons


# --- shapes -------------------------------------------------------------------------------


def test_real_watch_upload_is_forwarded_byte_for_byte() -> None:
    upload = split_upload(SAMPLE_UPLOAD)
    assert [(m.device_sn, m.key, m.value, m.readings) for m in upload.messages] == [
        (SAMPLE_SN, SAMPLE_SN.encode(), SAMPLE_UPLOAD, 1)
    ]
    assert (upload.readings, upload.devices, upload.unroutable) == (1, 1, 0)


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param({"data": reading("SN-A")}, id="data-object"),
        pytest.param({"data": [reading("SN-A", 1), reading("SN-A", 2)]}, id="data-array"),
        pytest.param({"data": {"data": reading("SN-A")}}, id="relay-object"),
        pytest.param({"data": {"data": [reading("SN-A", 1), reading("SN-A", 2)]}}, id="relay"),
        pytest.param(reading("SN-A"), id="bare-reading"),
        pytest.param({"data": reading("SN-A"), "customerId": 7, "orgId": "8"}, id="envelope-ids"),
        pytest.param(
            {"data": {"data": reading("SN-A"), "userId": 9}, "customer_id": 7}, id="relay-ids"
        ),
        pytest.param(
            {"data": {"id": "SN-A", "cjsj": "2025-05-31 21:18:24", "xlv": 66, "xy": 98}},
            id="aliases",
        ),
        pytest.param({"data": reading(12345)}, id="numeric-sn"),
        pytest.param({"data": reading("  SN-A  ")}, id="sn-with-spaces"),
    ],
)
def test_single_device_shapes_go_out_unchanged_keyed_by_the_normalized_sn(
    payload: dict[str, Any],
) -> None:
    body = orjson.dumps(payload)
    upload = split_upload(body)
    assert len(upload.messages) == 1
    (message,) = upload.messages
    assert message.value == body
    expected_sn = decode_message(body).records[0].device_sn
    assert message.key == expected_sn.encode()
    assert_same_records(body, upload)


def test_multi_device_upload_is_split_one_message_per_device_in_order() -> None:
    readings = [
        reading("SN-A", 1),
        reading("SN-B", 2),
        reading("SN-A", 3),
        reading("SN-C", 4),
        reading("SN-B", 5),
    ]
    body = orjson.dumps({"data": readings, "customerId": 11, "orgId": 12, "userId": 13})
    upload = split_upload(body)
    assert [m.device_sn for m in upload.messages] == ["SN-A", "SN-B", "SN-C"]
    assert [m.readings for m in upload.messages] == [2, 2, 1]
    assert (upload.readings, upload.devices) == (5, 3)
    for message in upload.messages:
        value = orjson.loads(message.value)
        # envelope-level ids are kept on every device's message
        assert (value["customerId"], value["orgId"], value["userId"]) == (11, 12, 13)
        assert {r["deviceSn"] for r in value["data"]} == {message.device_sn}
    a = orjson.loads(upload.messages[0].value)["data"]
    assert [r["timestamp"] for r in a] == ["2025-05-31 21:18:01", "2025-05-31 21:18:03"]
    assert_same_records(body, upload)
    records, _ = consumer_view(upload)
    assert {(r.customer_id, r.org_id, r.user_id) for r in records} == {(11, 12, 13)}


def test_relay_with_several_watches_keeps_both_envelope_levels() -> None:
    body = orjson.dumps(
        {
            "customerId": 1,
            "orgId": 2,
            "data": {"userId": 3, "orgId": 4, "data": [reading("SN-A", 1), reading("SN-B", 2)]},
        }
    )
    upload = split_upload(body)
    assert [m.device_sn for m in upload.messages] == ["SN-A", "SN-B"]
    for message in upload.messages:
        value = orjson.loads(message.value)
        assert value["customerId"] == 1 and value["orgId"] == 2
        assert value["data"]["userId"] == 3 and value["data"]["orgId"] == 4
    assert_same_records(body, upload)
    records, _ = consumer_view(upload)
    assert {(r.customer_id, r.org_id, r.user_id) for r in records} == {(1, 4, 3)}


def test_aliases_and_numeric_sns_group_with_their_device() -> None:
    readings = [
        {"id": "SN-A", "cjsj": "2025-05-31 21:18:01", "xlv": 70},
        reading(777, 2),
        reading("SN-A", 3),
        {"id": 777, "cjsj": "2025-05-31 21:18:04"},
    ]
    body = orjson.dumps({"data": readings})
    upload = split_upload(body)
    assert [(m.device_sn, m.readings) for m in upload.messages] == [("SN-A", 2), ("777", 2)]
    assert_same_records(body, upload)


def test_a_device_with_more_readings_than_the_consumer_takes_gets_several_messages() -> None:
    readings = [reading("SN-A", i % 60, step=i) for i in range(7)]
    for i, r in enumerate(readings):
        r["timestamp"] = f"2025-05-31 21:{i:02d}:00"
    body = orjson.dumps({"data": readings, "customerId": 5})
    upload = split_upload(body, max_readings=3)
    assert [m.readings for m in upload.messages] == [3, 3, 1]
    assert {m.key for m in upload.messages} == {b"SN-A"}
    steps = [r["step"] for m in upload.messages for r in orjson.loads(m.value)["data"]]
    assert steps == list(range(7))
    assert all(orjson.loads(m.value)["customerId"] == 5 for m in upload.messages)


def test_readings_without_a_usable_sn_reach_the_dead_letter_path() -> None:
    """They cannot be keyed; they ride with the first device and the consumer DLQs them."""
    bad_sn = reading("has space", 2)
    no_sn = reading("x", 3)
    del no_sn["deviceSn"]
    body = orjson.dumps({"data": [reading("SN-A", 1), bad_sn, reading("SN-B", 4), no_sn]})
    upload = split_upload(body)
    assert upload.unroutable == 2
    assert [(m.device_sn, m.readings) for m in upload.messages] == [("SN-A", 3), ("SN-B", 1)]
    first = orjson.loads(upload.messages[0].value)["data"]
    assert [r.get("timestamp") for r in first] == [
        "2025-05-31 21:18:01",
        "2025-05-31 21:18:02",
        "2025-05-31 21:18:03",
    ]
    records, reasons = consumer_view(upload)
    assert sorted(r.device_sn for r in records) == ["SN-A", "SN-B"]
    # one dead letter, reason of its first invalid reading ("has space": bad characters)
    assert reasons == ["schema_violation"]


def test_invalid_readings_of_a_keyed_device_are_forwarded_for_the_dlq() -> None:
    body = orjson.dumps({"data": [reading("SN-A", 1), reading("SN-A", 2, heart_rate="fast")]})
    upload = split_upload(body)
    assert upload.messages[0].value == body
    records, reasons = consumer_view(upload)
    assert len(records) == 1 and reasons == ["schema_violation"]


# --- refusals ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "invalid_json"),
        (b"not json", "invalid_json"),
        (b'{"data": [', "invalid_json"),
        (b"[]", "invalid_envelope"),
        (b'"text"', "invalid_envelope"),
        (b'{"foo": 1}', "invalid_envelope"),
        (b'{"data": "x"}', "invalid_envelope"),
        (b'{"data": []}', "empty_envelope"),
        (b'{"data": {"data": []}}', "empty_envelope"),
        (b'{"data": {"data": {"data": {"deviceSn": "A"}}}}', "invalid_envelope"),
        (b'{"data": {"heart_rate": 70}}', "no_device_sn"),
        (b'{"data": [{"deviceSn": null}, {"deviceSn": ""}, {"id": "a b"}, 5]}', "no_device_sn"),
        (b'{"data": {"deviceSn": "A\\"B", "id": "OK"}}', "no_device_sn"),
    ],
)
def test_bodies_without_a_routable_reading_are_refused(body: bytes, reason: str) -> None:
    with pytest.raises(UploadRejected) as err:
        split_upload(body)
    assert err.value.reason == reason
    assert err.value.message


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"data": {"heart_rate": 70}}', "the reading has no usable deviceSn/id"),
        (b'{"heart_rate": 70, "deviceSn": " "}', "the reading has no usable deviceSn/id"),
        (
            b'{"data": [{"deviceSn": null}, {"id": "a b"}]}',
            "none of 2 readings has a usable deviceSn/id",
        ),
    ],
)
def test_the_400_for_no_usable_sn_says_what_is_missing(body: bytes, message: str) -> None:
    """It once said "the reading has a usable deviceSn/id": the opposite of the truth."""
    with pytest.raises(UploadRejected) as err:
        split_upload(body)
    assert err.value.message == message


def test_reading_sn_follows_the_contract_alias_order() -> None:
    assert reading_sn({"deviceSn": " A1 ", "id": "B"}) == "A1"
    assert reading_sn({"id": 42}) == "42"
    assert reading_sn({"deviceSn": None, "id": "B"}) is None
    assert reading_sn({"deviceSn": True}) is None
    assert reading_sn({"deviceSn": "x" * 65}) is None
    assert reading_sn([1]) is None


# --- property: any mix of devices, shapes and bad readings ---------------------------------------

SNS = st.sampled_from(["SN-A", "SN-B", "SN-C", 4242, " SN-A", "bad sn", None])


@st.composite
def uploads(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(1, 12))
    readings: list[Any] = []
    for i in range(n):
        sn = draw(SNS)
        r = reading(sn, i)
        if sn is None:
            del r["deviceSn"]
        if draw(st.booleans()):
            r["id"] = r.pop("deviceSn", "ALIAS-ID")
        if draw(st.integers(0, 9)) == 0:
            r["timestamp"] = "2025-13-01 00:00:00"
        readings.append(r)
    if not any(reading_sn(r) for r in readings):
        readings.append(reading("SN-Z", 59))
    payload: dict[str, Any] = {"data": readings}
    if draw(st.booleans()):
        payload = {"data": payload, "userId": draw(st.integers(1, 9))}
    if draw(st.booleans()):
        payload["customerId"] = draw(st.sampled_from([1, "2", " ", None]))
    return payload


@settings(max_examples=200, deadline=None)
@given(uploads(), st.integers(1, 5))
def test_any_upload_splits_into_what_the_consumer_would_store(
    payload: dict[str, Any], max_readings: int
) -> None:
    body = orjson.dumps(payload)
    upload = split_upload(body, max_readings=max_readings)
    assert all(0 < m.readings <= max_readings for m in upload.messages)
    assert sum(m.readings for m in upload.messages) == upload.readings
    assert_same_records(body, upload)
