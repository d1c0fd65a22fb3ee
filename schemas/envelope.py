"""The envelope walk: where a message's readings are and which envelope levels hold them.

One walk for the consumer's decoder and the gateway's router, so both read the same
shapes - `{"data": reading}`, `{"data": [readings]}`, a relay's `{"data": {"data": ...}}`
and a bare reading - and refuse the same ones with the same reasons (pure; no I/O).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from schemas.clean import json_kind

__all__ = ["EnvelopeError", "Walk", "is_relay", "walk"]


class EnvelopeError(Exception):
    """The shape is not an envelope; `reason` is invalid_envelope or empty_envelope."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class Walk(NamedTuple):
    readings: list[Any]  # at least one; not checked beyond being there
    outer: dict[str, Any] | None  # the top-level envelope; None for a bare reading
    relay: dict[str, Any] | None  # the relay level inside it, if any
    path: str  # where the readings are: "data" or "data.data" ("" for a bare reading)


def is_relay(data: dict[str, Any]) -> bool:
    """A "data" inside "data" that is not itself a reading (no deviceSn/id)."""
    return "data" in data and "deviceSn" not in data and "id" not in data


def walk(obj: object, subject: str = "message") -> Walk:
    """The readings of a parsed message (`subject` names it in the details)."""
    if not isinstance(obj, dict):
        raise EnvelopeError(
            "invalid_envelope", f"{subject} is a JSON {json_kind(obj)}, not an object"
        )
    if "data" not in obj:
        if "deviceSn" in obj or "id" in obj:
            return Walk([obj], None, None, "")
        raise EnvelopeError(
            "invalid_envelope", f"{subject} has neither 'data' nor a top-level 'deviceSn'/'id'"
        )
    data = obj["data"]
    relay = None
    path = "data"
    if isinstance(data, dict) and is_relay(data):
        relay = data
        data = data["data"]
        path = "data.data"
        if isinstance(data, dict) and is_relay(data):
            raise EnvelopeError(
                "invalid_envelope", "data.data.data: envelopes nest at most one relay deep"
            )
    if isinstance(data, dict):
        return Walk([data], obj, relay, path)
    if isinstance(data, list):
        if not data:
            raise EnvelopeError("empty_envelope", f"{path} is an empty array")
        return Walk(data, obj, relay, path)
    raise EnvelopeError(
        "invalid_envelope", f"{path} must be an object or an array (got {json_kind(data)})"
    )
