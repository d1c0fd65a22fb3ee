"""Upload body -> one Kafka message per device, keyed by its SN (pure; no I/O).

The consumer rejects a keyed message whose readings name another device (`key_mismatch`)
and an unkeyed one that mixes devices, because the key is what keeps a device's readings on
one partition, in order. So an upload that carries several devices (a relay forwarding
its watches' caches) is cut into one message per device, in the order each device first
appears, each keeping its readings' order and the upload's envelope (ids and all) around
them. An upload of one device - nearly all of them - is forwarded byte for byte.

Readings are not validated here beyond what routing needs: the device SN. A reading without
a usable SN cannot be keyed, so it rides along with the first device's message, where the
consumer dead-letters it (`missing_device_sn`) next to that device's valid readings.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import orjson
from pydantic_core import PydanticCustomError

from schemas.clean import normalize_device_sn
from schemas.envelope import EnvelopeError, is_relay, walk

__all__ = ["DeviceMessage", "Upload", "UploadRejected", "reading_sn", "split_upload"]


class UploadRejected(Exception):
    """The body cannot be routed at all: answered 400, nothing is produced."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason  # invalid_json | invalid_envelope | empty_envelope | no_device_sn
        self.message = message


class DeviceMessage(NamedTuple):
    """One Kafka record: the key is the device SN, the value a contract envelope.
    (NamedTuples, not frozen dataclasses: building one costs a quarter as much.)"""

    device_sn: str
    value: bytes
    readings: int

    @property
    def key(self) -> bytes:
        return self.device_sn.encode()


class Upload(NamedTuple):
    messages: list[DeviceMessage]
    readings: int  # every reading of the body, routable or not
    devices: int
    unroutable: int  # readings without a usable device SN (the consumer dead-letters them)


def reading_sn(raw: object) -> str | None:
    """The normalized SN a reading is keyed by, or None when it has no usable one.

    Mirrors the contract: `deviceSn` wins over its alias `id` when both are present.
    """
    if type(raw) is not dict:
        return None
    if "deviceSn" in raw:
        value = raw["deviceSn"]
    elif "id" in raw:
        value = raw["id"]
    else:
        return None
    try:
        return normalize_device_sn(value)
    except PydanticCustomError:
        return None


def _without_data(envelope: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in envelope.items() if k != "data"}


def split_upload(body: bytes, *, max_readings: int = 1000) -> Upload:
    """Route an upload body; raise UploadRejected when it holds no reading with an SN.

    A device with more than `max_readings` readings gets several messages of at most that
    many (in order, same key), since the consumer dead-letters larger envelopes whole.
    """
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise UploadRejected("invalid_json", f"body is not valid JSON: {exc}") from None
    if type(obj) is dict and type(data := obj.get("data")) is dict and not is_relay(data):
        sn = reading_sn(data)  # the common upload: one reading, forwarded as is
        if sn is not None:
            return Upload([DeviceMessage(sn, body, 1)], 1, 1, 0)
    try:
        readings, outer, relay, _path = walk(obj, "body")
    except EnvelopeError as exc:
        raise UploadRejected(exc.reason, exc.detail) from None

    groups: dict[str, list[Any]] = {}
    orphans: list[tuple[int, Any]] = []
    for index, raw in enumerate(readings):
        sn = reading_sn(raw)
        if sn is None:
            orphans.append((index, raw))
        else:
            groups.setdefault(sn, []).append(raw)
    if not groups:
        what = (
            "the reading has no"
            if len(readings) == 1
            else f"none of {len(readings)} readings has a"
        )
        raise UploadRejected("no_device_sn", f"{what} usable deviceSn/id")

    total = len(readings)
    if len(groups) == 1 and total <= max_readings:
        (sn,) = groups
        return Upload([DeviceMessage(sn, body, total)], total, 1, len(orphans))

    if orphans:  # ride along with the first device, in upload order
        first = next(iter(groups))
        routed = [(i, r) for i, r in enumerate(readings) if reading_sn(r) == first]
        groups[first] = [r for _, r in sorted([*routed, *orphans], key=lambda p: p[0])]

    messages: list[DeviceMessage] = []
    for sn, device_readings in groups.items():
        for start in range(0, len(device_readings), max_readings):
            chunk = device_readings[start : start + max_readings]
            messages.append(DeviceMessage(sn, _envelope(outer, relay, chunk), len(chunk)))
    return Upload(messages, total, len(groups), len(orphans))


def _envelope(
    outer: dict[str, Any] | None, relay: dict[str, Any] | None, chunk: list[Any]
) -> bytes:
    """The upload's own envelope (every level, every id) around one device's readings."""
    data: Any = chunk
    if relay is not None:
        data = {**_without_data(relay), "data": chunk}
    if outer is None:  # a bare reading never needs splitting; kept for completeness
        return orjson.dumps({"data": data})
    return orjson.dumps({**_without_data(outer), "data": data})
