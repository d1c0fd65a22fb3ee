"""Operational alert rules about the consumer itself (pure; not the health alerts about patients).

Each rule reads one `Observation` (sampled by the monitor) and the thresholds from settings,
and says whether it fires, with a value and a one-line summary.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from consumer.observe.lag import LagStatus
from consumer.settings import Settings

Severity = Literal["critical", "warning"]
RuleResult = tuple[bool, float | str, str]


_DEFAULT = {name: field.default for name, field in Settings.model_fields.items()}


@dataclass(frozen=True, slots=True)
class AlertThresholds:
    """ALERT_* settings; the defaults are the settings' own (deploy/prometheus/alerts.yml
    uses the same numbers, tests/unit/test_prometheus_rules.py holds them together)."""

    error_rate: float = _DEFAULT["alert_error_rate"]
    queue_utilization: float = _DEFAULT["alert_queue_utilization"]
    memory_percent: float = _DEFAULT["alert_memory_percent"]
    time_lag_s: float = _DEFAULT["alert_time_lag_s"]


@dataclass(frozen=True, slots=True)
class Observation:
    error_rate: float
    max_queue_utilization: float
    memory_percent: float
    max_time_lag_s: float
    lag_statuses: Mapping[int, LagStatus]
    dependencies_down: Sequence[str]


@dataclass(frozen=True, slots=True)
class OpsRule:
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


RULES: tuple[OpsRule, ...] = (
    OpsRule("high_error_rate", "critical", _high_error_rate),
    OpsRule("queue_overflow_risk", "warning", _queue_overflow_risk),
    OpsRule("high_memory_usage", "warning", _high_memory_usage),
    OpsRule("processing_lag", "critical", _processing_lag),
    OpsRule("consumer_stalled", "critical", _consumer_stalled),
    OpsRule("dependency_down", "critical", _dependency_down),
)
