"""Up/down state of each dependency as last observed, for health checks and metrics.

Kafka, MySQL and Redis are known from the start (they show as up until observed down);
a sink naming another dependency adds it the first time it is reported.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass

DEPENDENCIES = ("kafka", "mysql", "redis")


@dataclass(slots=True)
class DependencyState:
    up: bool = True
    last_error: str | None = None
    last_error_at: float | None = None
    changed_at: float = 0.0
    errors: int = 0


class Dependencies:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        now = time.time()
        self._states = {name: DependencyState(changed_at=now) for name in DEPENDENCIES}

    def report(self, name: str, up: bool, error: str | None = None) -> None:
        with self._lock:
            now = time.time()
            state = self._states.setdefault(name, DependencyState(changed_at=now))
            if state.up != up:
                state.changed_at = now
            state.up = up
            if error is not None:
                state.errors += 1
                state.last_error = _redact(error)
                state.last_error_at = now

    def snapshot(self) -> dict[str, DependencyState]:
        with self._lock:
            return {
                name: DependencyState(s.up, s.last_error, s.last_error_at, s.changed_at, s.errors)
                for name, s in self._states.items()
            }

    def is_up(self, name: str) -> bool:
        state = self._states.get(name)
        return state is None or state.up


def _redact(error: str) -> str:
    """Driver errors can echo connection URLs; never let a password through."""

    return re.sub(r"(://[^:/@\s]*:)[^@\s]*@", r"\1***@", error)[:500]
