"""Operational alerts about the consumer itself (not the health alerts about patients).

The caller samples an ``Observation`` every ALERT_CHECK_INTERVAL_S and hands it to
``AlertEngine.check``. Rule evaluation is pure; the engine only remembers which alerts are
firing so that each alert notifies exactly twice per episode (firing, then resolved) instead
of paging on every check. ``WebhookNotifier`` delivers those transitions off-thread so a slow
or dead webhook never delays the consumer.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from consumer.lag import LagStatus

log = logging.getLogger(__name__)

Severity = Literal["critical", "warning"]
RuleResult = tuple[bool, float | str, str]


@dataclass(frozen=True, slots=True)
class AlertThresholds:
    error_rate: float = 0.10
    queue_utilization: float = 0.80
    memory_percent: float = 80.0
    time_lag_s: float = 300.0


@dataclass(frozen=True, slots=True)
class Observation:
    error_rate: float
    max_queue_utilization: float
    memory_percent: float
    max_time_lag_s: float
    lag_statuses: Mapping[int, LagStatus]
    dependencies_down: Sequence[str]


@dataclass(frozen=True, slots=True)
class AlertRule:
    name: str
    severity: Severity
    check: Callable[[Observation, AlertThresholds], RuleResult]


def _high_error_rate(obs: Observation, t: AlertThresholds) -> RuleResult:
    v = obs.error_rate
    return v > t.error_rate, v, f"error rate {v:.1%} (threshold {t.error_rate:.1%})"


def _queue_overflow_risk(obs: Observation, t: AlertThresholds) -> RuleResult:
    v = obs.max_queue_utilization
    return (
        v > t.queue_utilization,
        v,
        f"max partition queue utilization {v:.0%} (threshold {t.queue_utilization:.0%})",
    )


def _high_memory_usage(obs: Observation, t: AlertThresholds) -> RuleResult:
    v = obs.memory_percent
    return v > t.memory_percent, v, f"memory {v:.1f}% (threshold {t.memory_percent:.1f}%)"


def _processing_lag(obs: Observation, t: AlertThresholds) -> RuleResult:
    v = obs.max_time_lag_s
    return v > t.time_lag_s, v, f"max time lag {v:.0f}s (threshold {t.time_lag_s:.0f}s)"


def _consumer_stalled(obs: Observation, t: AlertThresholds) -> RuleResult:
    stuck = sorted(p for p, s in obs.lag_statuses.items() if s in (LagStatus.STALL, LagStatus.STOP))
    if not stuck:
        return False, "", "no partition stalled or stopped"
    names = ", ".join(f"{p} ({obs.lag_statuses[p]})" for p in stuck)
    return True, ",".join(map(str, stuck)), f"partitions not committing: {names}"


def _dependency_down(obs: Observation, t: AlertThresholds) -> RuleResult:
    down = sorted(set(obs.dependencies_down))
    if not down:
        return False, "", "all dependencies up"
    return True, ",".join(down), f"dependencies down: {', '.join(down)}"


RULES: tuple[AlertRule, ...] = (
    AlertRule("high_error_rate", "critical", _high_error_rate),
    AlertRule("queue_overflow_risk", "warning", _queue_overflow_risk),
    AlertRule("high_memory_usage", "warning", _high_memory_usage),
    AlertRule("processing_lag", "critical", _processing_lag),
    AlertRule("consumer_stalled", "critical", _consumer_stalled),
    AlertRule("dependency_down", "critical", _dependency_down),
)


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
        rules: Sequence[AlertRule] = RULES,
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

    def is_firing(self, name: str) -> bool:
        with self._lock:
            return name in self._firing

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


def webhook_body(event: AlertEvent) -> dict[str, object]:
    return {
        "alert": event.name,
        "severity": event.severity,
        "state": event.state,
        "summary": event.summary,
        "value": _json_safe(event.value),
        "started_at": event.started_at,
        "resolved_at": event.resolved_at,
        "source": "healthstream",
    }


class _Retryable(Exception):
    pass


class WebhookNotifier:
    """POSTs each AlertEvent as JSON to ALERT_WEBHOOK_URL from a background thread.

    ``__call__`` only enqueues, so ``AlertEngine.check`` never waits on the network. The queue
    is bounded and drops the oldest event when full: during a long webhook outage the newest
    state is what an operator needs. Connection errors, timeouts and 5xx are retried with
    exponential backoff (``retries`` extra attempts); 4xx is a configuration error and is not.
    """

    def __init__(
        self,
        url: str,
        timeout_s: float = 5.0,
        retries: int = 3,
        backoff_s: float = 0.5,
        max_queue: int = 1000,
    ) -> None:
        if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            raise ValueError("alert webhook URL must be http(s)")
        if max_queue < 1:
            raise ValueError("max_queue must be >= 1")
        self._url = url
        self._timeout_s = timeout_s
        self._retries = max(0, retries)
        self._backoff_s = backoff_s
        self._queue: deque[AlertEvent] = deque()
        self._max_queue = max_queue
        self._cond = threading.Condition()
        self._closing = False
        self._abort = threading.Event()
        self._dropped = 0
        self._thread = threading.Thread(target=self._run, name="alert-webhook", daemon=True)
        self._thread.start()

    @property
    def dropped(self) -> int:
        """Events discarded because the queue was full (or still queued when close gave up)."""
        return self._dropped

    def __call__(self, event: AlertEvent) -> None:
        with self._cond:
            if self._closing:
                log.warning("alert webhook closed; event dropped", extra={"alert": event.name})
                self._dropped += 1
                return
            if len(self._queue) >= self._max_queue:
                old = self._queue.popleft()
                self._dropped += 1
                log.warning(
                    "alert webhook queue full; dropped oldest event",
                    extra={"alert": old.name, "state": old.state},
                )
            self._queue.append(event)
            self._cond.notify()

    def close(self, timeout_s: float = 5.0) -> None:
        """Deliver what is queued within ``timeout_s``, then abandon the rest."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            self._abort.set()
            with self._cond:
                left = len(self._queue)
                self._dropped += left
                self._queue.clear()
            log.warning("alert webhook closed with undelivered events", extra={"pending": left})

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    return
                event = self._queue.popleft()
            if self._abort.is_set():
                return
            self._deliver(event)

    def _deliver(self, event: AlertEvent) -> None:
        body = json.dumps(webhook_body(event)).encode()
        for attempt in range(self._retries + 1):
            try:
                self._post(body)
                return
            except _Retryable as exc:
                if attempt == self._retries:
                    log.error(
                        "alert webhook delivery failed",
                        extra={"alert": event.name, "attempts": attempt + 1, "error": str(exc)},
                    )
                    return
            except urllib.error.HTTPError as exc:
                log.error(
                    "alert webhook rejected event",
                    extra={"alert": event.name, "status": exc.code},
                )
                return
            if self._abort.wait(self._backoff_s * 2**attempt):
                return

    def _post(self, body: bytes) -> None:
        request = urllib.request.Request(
            self._url,
            data=body,
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self._timeout_s) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code >= 500:
                raise _Retryable(f"HTTP {exc.code}") from exc
            raise
        except (urllib.error.URLError, OSError) as exc:
            raise _Retryable(str(exc)) from exc
