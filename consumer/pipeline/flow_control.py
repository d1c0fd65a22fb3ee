"""Backpressure decisions: pause a partition whose worker is full, resume at half (pure).

The hysteresis (pause at max, resume below half) stops a partition flapping between
paused and resumed on every poll.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FlowControl:
    """A worker holds at most `max_records` readings and `max_bytes` of messages (its inbox
    and the batch in flight): memory is bounded by bytes as well as records."""

    max_records: int
    max_bytes: int = 1 << 62

    def should_pause(self, queued_records: int, queued_bytes: int = 0) -> bool:
        return queued_records >= self.max_records or queued_bytes >= self.max_bytes

    def should_resume(self, queued_records: int, queued_bytes: int = 0) -> bool:
        return queued_records < self.max_records // 2 and queued_bytes < self.max_bytes // 2
