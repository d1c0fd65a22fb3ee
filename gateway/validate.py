"""The optional strict check: refuse an upload the consumer would dead-letter any part of.

Off by default (GATEWAY_REJECT_INVALID_READINGS=false): then such readings go to Kafka and
the consumer dead-letters them with a reason, which keeps them for replay, and a watch with
one bad reading in its cache is not stuck retrying it forever. On, the gateway runs the
consumer's own decoder (schemas.decode) on the body and answers 400 naming the readings.
"""

from __future__ import annotations

import sys

from schemas.decode import MessageError, decode_message

MAX_PROBLEM = 500


def dead_letter_reasons(body: bytes) -> str | None:
    """Why the consumer would dead-letter (part of) this upload, or None if it would not."""
    try:
        decoded = decode_message(body, max_readings=sys.maxsize)
    except MessageError as exc:
        return f"{exc.reason}: {exc.detail}"
    problems = decoded.problems()  # a dropped slow field dead-letters the message too
    if not problems:
        return None
    text = "; ".join(f"reading[{p.index}] {p.reason}: {p.detail}" for p in problems)
    return text if len(text) <= MAX_PROBLEM else text[: MAX_PROBLEM - 3] + "..."
