"""Intake: a Kafka message -> records, or the reason it belongs in the dead-letter topic.

The contract (envelopes, aliases, types) lives in `schemas`; this step adds what only the
transport knows: the key must name the device of every reading, because the key is what
put those readings on this partition and keeps them in order.
"""

from __future__ import annotations

from consumer.pipeline.batching import DeadLetter, PendingMessage
from consumer.sinks.dlq import MAX_DETAIL_CHARS
from schemas.decode import MAX_MESSAGE_BYTES, MessageError, decode_message
from schemas.record import HealthRecord

UNDECODABLE = "undecodable"


def read_message(
    offset: int,
    timestamp_ms: int,
    key: bytes | None,
    value: bytes | None,
    max_readings: int,
    max_message_bytes: int = MAX_MESSAGE_BYTES,
) -> PendingMessage:
    """Total: whatever the bytes, a PendingMessage, carrying a DeadLetter when bad."""
    if value is None:
        return _reject(offset, timestamp_ms, key, value, "null_value", "no value (tombstone)")
    try:
        decoded = decode_message(
            value, max_readings=max_readings, max_message_bytes=max_message_bytes
        )
    except MessageError as err:
        return _reject(offset, timestamp_ms, key, value, err.reason, err.detail)
    except Exception as err:  # a decoder bug must cost one message, never the partition
        detail = f"{type(err).__name__}: {err}"
        return _reject(offset, timestamp_ms, key, value, UNDECODABLE, detail)

    records = decoded.records
    unkeyed = not key
    if unkeyed:
        sns = {r.device_sn for r in records}
        if len(sns) > 1:
            detail = f"no key and readings of {len(sns)} devices: " + ", ".join(sorted(sns)[:5])
            return _reject(offset, timestamp_ms, key, value, "unkeyed_mixed_devices", detail)
    else:
        mismatch = _key_mismatch(key, records)  # type: ignore[arg-type]
        if mismatch is not None:
            return _reject(offset, timestamp_ms, key, value, "key_mismatch", mismatch)

    dead_letter = None
    if decoded.errors:
        errors = decoded.errors
        detail = "; ".join(f"reading[{e.index}] {e.reason}: {e.detail}" for e in errors)
        if records:
            total = len(errors) + len(records)
            detail = f"{len(errors)} of {total} readings invalid: {detail}"
        dead_letter = DeadLetter(errors[0].reason, detail[:MAX_DETAIL_CHARS])
    return PendingMessage(offset, timestamp_ms, key, value, records, dead_letter, unkeyed)


def _key_mismatch(key: bytes, records: list[HealthRecord]) -> str | None:
    key_sn = key.decode("utf-8", errors="replace")
    for record in records:
        if record.device_sn != key_sn:
            wrong = sorted({r.device_sn for r in records} - {key_sn})
            return f"key {key_sn!r} does not match deviceSn {', '.join(wrong[:5])}"
    return None


def _reject(
    offset: int,
    timestamp_ms: int,
    key: bytes | None,
    value: bytes | None,
    reason: str,
    detail: str,
) -> PendingMessage:
    return PendingMessage(offset, timestamp_ms, key, value, [], DeadLetter(reason, detail))
