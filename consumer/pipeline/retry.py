"""Exponential backoff with full jitter, so replicas retrying one outage do not stampede."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(slots=True)
class Backoff:
    initial_s: float
    max_s: float
    rand: Callable[[], float] = field(default=random.random)
    attempt: int = 0

    def next_delay(self) -> float:
        """Delay before the next attempt: uniform in [cap/2, cap], cap doubling per attempt."""
        cap = min(self.max_s, self.initial_s * 2.0 ** min(self.attempt, 30))
        self.attempt += 1
        return cap / 2 + self.rand() * cap / 2

    def reset(self) -> None:
        self.attempt = 0
