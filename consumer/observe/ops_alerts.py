"""Operational alert engine: remembers which ops rules fire, notifies on each transition.

The caller samples an ``Observation`` every ALERT_CHECK_INTERVAL_S and hands it to
``AlertEngine.check``. Rule evaluation is pure (`ops_rules`); the engine only remembers which
alerts are firing so that each alert notifies exactly twice per episode (firing, then
resolved) instead of paging on every check. Delivery is `webhook.WebhookNotifier`'s job.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from consumer.observe.ops_rules import RULES, AlertThresholds, Observation, OpsRule

log = logging.getLogger(__name__)


@dataclass(slots=True)
class AlertEvent:
    name: str
    severity: str
    state: str  # "firing" | "resolved"
    summary: str
    value: float | str
    started_at: float
    resolved_at: float | None

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "severity": self.severity,
            "state": self.state,
            "summary": self.summary,
            "value": _json_safe(self.value),
            "started_at": self.started_at,
            "resolved_at": self.resolved_at,
        }


def _json_safe(value: float | str) -> float | str:
    """NaN/inf are not valid JSON; a sensor glitch must not make the alert undeliverable."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class AlertEngine:
    """Tracks firing alerts across checks; thread-safe for one writer and many readers.

    ``check`` is serialised by its own lock (so notifications keep their order) while the
    state lock is held only briefly, so HTTP readers never wait on a slow ``notify``.
    """

    def __init__(
        self,
        thresholds: AlertThresholds,
        notify: Callable[[AlertEvent], None] | None = None,
        clock: Callable[[], float] = time.time,
        history_s: float = 3600.0,
        rules: Sequence[OpsRule] = RULES,
    ) -> None:
        self._thresholds = thresholds
        self._notify = notify
        self._clock = clock
        self._history_s = history_s
        self._rules = tuple(rules)
        self._check_lock = threading.Lock()
        self._lock = threading.Lock()
        self._firing: dict[str, AlertEvent] = {}
        self._history: deque[tuple[float, AlertEvent]] = deque()

    def check(self, obs: Observation) -> list[AlertEvent]:
        """Evaluate every rule; return (and notify) only the alerts that changed state."""
        with self._check_lock:
            now = self._clock()
            transitions: list[AlertEvent] = []
            with self._lock:
                for rule in self._rules:
                    firing, value, summary = rule.check(obs, self._thresholds)
                    current = self._firing.get(rule.name)
                    if firing and current is None:
                        event = AlertEvent(
                            rule.name, rule.severity, "firing", summary, value, now, None
                        )
                        self._firing[rule.name] = replace(event)
                    elif firing and current is not None:
                        current.value, current.summary = value, summary
                        continue
                    elif current is not None:
                        event = AlertEvent(
                            rule.name,
                            rule.severity,
                            "resolved",
                            summary,
                            value,
                            current.started_at,
                            now,
                        )
                        del self._firing[rule.name]
                    else:
                        continue
                    self._history.append((now, replace(event)))
                    transitions.append(event)
                self._prune(now)
            for event in transitions:
                self._log(event)
                if self._notify is not None:
                    try:
                        self._notify(event)
                    except Exception:
                        log.exception("alert notifier failed", extra={"alert": event.name})
            return transitions

    def firing(self) -> list[AlertEvent]:
        with self._lock:
            return [replace(e) for e in self._firing.values()]

    def history(self) -> list[AlertEvent]:
        """Oldest first; copies, so readers cannot mutate engine state."""
        now = self._clock()
        with self._lock:
            self._prune(now)
            return [replace(e) for _, e in self._history]

    def _prune(self, now: float) -> None:
        horizon = now - self._history_s
        while self._history and self._history[0][0] < horizon:
            self._history.popleft()

    @staticmethod
    def _log(event: AlertEvent) -> None:
        extra: dict[str, object] = {
            "alert": event.name,
            "severity": event.severity,
            "state": event.state,
            "value": _json_safe(event.value),
            "started_at": event.started_at,
        }
        if event.state == "firing":
            level = logging.CRITICAL if event.severity == "critical" else logging.WARNING
            log.log(level, "ops alert firing: %s", event.summary, extra=extra)
        else:
            extra["resolved_at"] = event.resolved_at
            log.info("ops alert resolved: %s", event.summary, extra=extra)
