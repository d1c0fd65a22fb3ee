"""Backpressure decisions: pause a partition whose worker is full, resume at half (pure).

The hysteresis (pause at max, resume below half) stops a partition flapping between
paused and resumed on every poll.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FlowControl:
    max_records: int

    def should_pause(self, queued_records: int) -> bool:
        return queued_records >= self.max_records

    def should_resume(self, queued_records: int) -> bool:
        return queued_records < self.max_records // 2

    def utilization(self, queued_records: int) -> float:
        return queued_records / self.max_records
