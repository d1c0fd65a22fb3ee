"""Health verdicts (pure): healthy / degraded / unhealthy from observed numbers.

The thresholds come from settings; this module only compares, so every rule is unit-
tested without services. A dependency the data path cannot do without (Kafka, MySQL) is
unhealthy when down; Redis is a cache, so its outage only degrades.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from consumer.observe.lag import LagStatus


class Status(StrEnum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"


_RANK = {Status.HEALTHY: 0, Status.DEGRADED: 1, Status.UNHEALTHY: 2}
# Down means unhealthy: the source and the DB the rules are read from. Every dependency
# of a required sink joins them (`Monitor`, from the sink list); the rest only degrade.
REQUIRED_DEPENDENCIES = frozenset({"kafka", "mysql"})


@dataclass(frozen=True, slots=True)
class Band:
    """Below `degraded` is healthy, below `unhealthy` degraded, else unhealthy."""

    degraded: float
    unhealthy: float

    def classify(self, value: float) -> Status:
        if value < self.degraded:
            return Status.HEALTHY
        return Status.DEGRADED if value < self.unhealthy else Status.UNHEALTHY


@dataclass(frozen=True, slots=True)
class HealthThresholds:
    error_rate: Band = Band(0.05, 0.10)
    resources_percent: Band = Band(80.0, 90.0)
    queue_utilization: Band = Band(0.70, 0.90)


def worst(*statuses: Status) -> Status:
    return max(statuses, key=_RANK.__getitem__, default=Status.HEALTHY)


def dependency_status(
    up: Mapping[str, bool], required: frozenset[str] = REQUIRED_DEPENDENCIES
) -> Status:
    down = [name for name, ok in up.items() if not ok]
    if any(name in required for name in down):
        return Status.UNHEALTHY
    return Status.DEGRADED if down else Status.HEALTHY


def lag_status(statuses: Mapping[int, LagStatus]) -> Status:
    """A stalled, stopped or rewound partition needs a look; WARN alone is not yet a problem."""
    bad = {LagStatus.STALL, LagStatus.STOP, LagStatus.REWIND}
    return Status.DEGRADED if any(s in bad for s in statuses.values()) else Status.HEALTHY


@dataclass(frozen=True, slots=True)
class HealthInputs:
    error_rate: float
    process_cpu_percent: float  # of the machine (normalised by core count)
    memory_percent: float  # system memory in use
    queue_utilization: float  # worst partition, 0..1
    dependencies: Mapping[str, bool]
    lag_statuses: Mapping[int, LagStatus]
    poll_loop_alive: bool
    required_dependencies: frozenset[str] = REQUIRED_DEPENDENCIES


@dataclass(frozen=True, slots=True)
class HealthVerdict:
    status: Status
    batch_processor: Status
    system_resources: Status
    queue_health: Status
    dependencies: Status
    lag: Status


def judge(inputs: HealthInputs, thresholds: HealthThresholds) -> HealthVerdict:
    batch = thresholds.error_rate.classify(inputs.error_rate)
    if not inputs.poll_loop_alive:
        batch = Status.UNHEALTHY
    resources = worst(
        thresholds.resources_percent.classify(inputs.process_cpu_percent),
        thresholds.resources_percent.classify(inputs.memory_percent),
    )
    queue = thresholds.queue_utilization.classify(inputs.queue_utilization)
    deps = dependency_status(inputs.dependencies, inputs.required_dependencies)
    lag = lag_status(inputs.lag_statuses)
    return HealthVerdict(
        worst(batch, resources, queue, deps, lag), batch, resources, queue, deps, lag
    )
