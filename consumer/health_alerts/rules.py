"""Health-alert rule evaluation (pure: no I/O, so it is unit-tested without services).

A rule fires when a device has produced `trend_duration` consecutive violating readings;
it fires once per run. A reading that did not measure the sign (0 or absent) neither
violates nor breaks the run. The legacy system's heart-rate, SpO2 and trend rules never
fired; `fire_alerts` is the single place that decides, so tests pin it down.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from schemas.record import HealthRecord

# physical_sign -> record attributes it reads ("bloodPressure" means either pressure).
SIGN_FIELDS: dict[str, tuple[str, ...]] = {
    "heart_rate": ("heart_rate",),
    "heartRate": ("heart_rate",),
    "blood_oxygen": ("blood_oxygen",),
    "bloodOxygen": ("blood_oxygen",),
    "temperature": ("temperature",),
    "body_temperature": ("temperature",),
    "pressure_high": ("pressure_high",),
    "pressure_low": ("pressure_low",),
    "bloodPressure": ("pressure_high", "pressure_low"),
    "blood_pressure": ("pressure_high", "pressure_low"),
    "stress": ("stress",),
    "step": ("step",),
    "calorie": ("calorie",),
    "distance": ("distance",),
    "sleep": ("sleep",),
}


@dataclass(frozen=True, slots=True)
class HealthRule:
    id: int
    rule_type: str
    physical_sign: str
    threshold_min: Decimal | None
    threshold_max: Decimal | None
    trend_duration: int
    severity_level: str
    alert_message: str | None
    customer_id: int
    level: str | None = None  # t_alert_rules.level (production); severity_level stands in

    @property
    def alert_level(self) -> str:
        return self.level or self.severity_level

    def applies_to(self, record: HealthRecord) -> bool:
        """Rules are scoped by customer, as the legacy applies them: a reading gets exactly
        its customer's rules, and an unbound reading (customer 0) the customer-0 rules."""
        return self.customer_id == (record.customer_id or 0)


@dataclass(frozen=True, slots=True)
class Alert:
    """One firing, keyed (device_sn, rule_id, timestamp) so a replay maps to the same row."""

    rule: HealthRule
    record: HealthRecord
    value: Decimal | int
    field: str

    @property
    def description(self) -> str:
        bounds = f"[{_fmt(self.rule.threshold_min)}, {_fmt(self.rule.threshold_max)}]"
        runs = self.rule.trend_duration
        base = self.rule.alert_message or f"{self.rule.physical_sign} out of range"
        return (
            f"{base}: {self.field}={self.value} outside {bounds} "
            f"for {runs} consecutive reading{'s' if runs != 1 else ''}"
        )


def _fmt(bound: Decimal | None) -> str:
    return "-inf" if bound is None else str(bound)


def measured_values(rule: HealthRule, record: HealthRecord) -> list[tuple[str, Decimal | int]]:
    """The values of the rule's sign that this reading actually measured."""
    out: list[tuple[str, Decimal | int]] = []
    for name in SIGN_FIELDS.get(rule.physical_sign, ()):
        value = getattr(record, name)
        if value is not None and value != 0:
            out.append((name, value))
    return out


def first_violation(
    rule: HealthRule, values: list[tuple[str, Decimal | int]]
) -> tuple[str, Decimal | int] | None:
    """The first measured value outside the rule's bounds (a missing bound is open)."""
    for name, value in values:
        if rule.threshold_min is not None and value < rule.threshold_min:
            return name, value
        if rule.threshold_max is not None and value > rule.threshold_max:
            return name, value
    return None


# (device_sn, rule_id) -> length of the current run of consecutive violations.
TrendState = dict[tuple[str, int], int]


def fire_alerts(
    rules: list[HealthRule], records: list[HealthRecord], state: TrendState
) -> tuple[list[Alert], TrendState]:
    """Alerts fired by `records` (in arrival order) and the state after them.

    `state` is not modified, so a flush that fails can be retried from the same state.
    """
    new_state = dict(state)
    alerts: list[Alert] = []
    if not rules:
        return alerts, new_state
    by_customer: dict[int, list[HealthRule]] = {}
    for rule in rules:
        by_customer.setdefault(rule.customer_id, []).append(rule)
    for record in records:
        for rule in by_customer.get(record.customer_id or 0, ()):
            values = measured_values(rule, record)
            if not values:
                continue
            key = (record.device_sn, rule.id)
            bad = first_violation(rule, values)
            if bad is None:
                new_state.pop(key, None)
                continue
            run = new_state.get(key, 0) + 1
            new_state[key] = run
            if run == max(1, rule.trend_duration):
                alerts.append(Alert(rule=rule, record=record, field=bad[0], value=bad[1]))
    return alerts, new_state


def trend_lookback(rules: list[HealthRule]) -> int:
    """How many stored readings per device rebuild its runs: the longest run a rule needs
    before its last reading, twice over (a reading that did not measure a rule's sign
    neither continues nor breaks its run). 0 when no rule needs more than one reading."""
    longest = max((rule.trend_duration for rule in rules), default=1)
    return 0 if longest <= 1 else 2 * (longest - 1)


def rebuild_runs(
    rules: list[HealthRule], history: list[HealthRecord], state: TrendState
) -> TrendState:
    """The state after `history` (stored readings, oldest first): the runs a partition's
    previous owner had built, so a run that spans a rebalance or a restart fires at the
    same reading, with the same alert key, as it would have without it (issue 17, B11).
    Alerts of the history itself were fired when it was written: none are returned."""
    return fire_alerts(rules, history, state)[1]
