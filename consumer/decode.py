"""Kafka message -> records, or the reason it belongs in the dead-letter topic.

The contract (envelopes, aliases, types) lives in `schemas`; this step adds what only the
transport knows: the key must name the device of every reading, because the key is what
put those readings on this partition and keeps them in order.
"""

from __future__ import annotations

from dataclasses import dataclass

from consumer.batching import DeadLetter, PendingMessage
from schemas.decode import MessageError, decode_message

MAX_DETAIL = 1000


@dataclass(frozen=True, slots=True)
class DecodeOutcome:
    message: PendingMessage
    unkeyed: bool = False


def decode(
    *, offset: int, timestamp_ms: int, key: bytes | None, value: bytes | None, max_readings: int
) -> DecodeOutcome:
    """Never raises: a bad message yields a PendingMessage carrying a DeadLetter."""

    def reject(reason: str, detail: str) -> DecodeOutcome:
        return DecodeOutcome(
            PendingMessage(offset, timestamp_ms, key, value, [], DeadLetter(reason, detail))
        )

    if value is None:
        return reject("null_value", "message has no value (tombstone)")
    try:
        decoded = decode_message(value, max_readings=max_readings)
    except MessageError as err:
        return reject(err.reason, err.detail)

    records = decoded.records
    sns = {r.device_sn for r in records}
    unkeyed = False
    if key is None or key == b"":
        if len(sns) > 1:
            return reject(
                "unkeyed_mixed_devices",
                f"message has no key and readings of {len(sns)} devices: "
                + ", ".join(sorted(sns)[:5]),
            )
        unkeyed = True
    else:
        key_sn = key.decode("utf-8", errors="replace")
        wrong = sorted(sn for sn in sns if sn != key_sn)
        if wrong:
            return reject(
                "key_mismatch", f"key {key_sn!r} does not match deviceSn {', '.join(wrong[:5])}"
            )

    dead_letter = None
    if decoded.errors:
        first = decoded.errors[0]
        detail = "; ".join(f"reading[{e.index}] {e.reason}: {e.detail}" for e in decoded.errors)
        if records:
            total = len(decoded.errors) + len(records)
            detail = f"{len(decoded.errors)} of {total} readings invalid: {detail}"
        dead_letter = DeadLetter(first.reason, detail[:MAX_DETAIL])
    return DecodeOutcome(
        PendingMessage(offset, timestamp_ms, key, value, records, dead_letter), unkeyed
    )
