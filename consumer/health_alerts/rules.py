"""Health-alert rule evaluation (pure: no I/O, so it is unit-tested without services).

What a rule means is its type's evaluator: `EVALUATORS` maps `t_alert_rules.rule_type`
to a pure function of (rule, reading, run so far). `fire_alerts` only keeps each device's
runs and collects what the evaluators fire, so a new rule type is one function plus one
line in `EVALUATORS` (docs/architecture.md, "Adding a rule type").

The one type today, `metric` (`threshold_run`): a rule fires when a device has produced
`trend_duration` consecutive readings outside its bounds, once per run; a reading that did
not measure the sign (0 or absent) neither violates nor breaks the run. The legacy
system's heart-rate, SpO2 and trend rules never fired; this module pins them down.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import NamedTuple

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
    rule_type: str  # picks the evaluator (`evaluator_of`); also the alert's label
    physical_sign: str | None  # NULL for rules that watch no vital sign (events, DSL)
    threshold_min: Decimal | None
    threshold_max: Decimal | None
    trend_duration: int
    severity_level: str
    alert_message: str | None
    customer_id: int
    level: str | None = None  # t_alert_rules.level (production); severity_level stands in

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
    for name in SIGN_FIELDS.get(rule.physical_sign or "", ()):
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


# ---------------------------------------------------------------------------------------
# Evaluators by rule type
# ---------------------------------------------------------------------------------------


class Verdict(NamedTuple):
    """What one reading does to one rule's run on its device."""

    run: int  # the run after this reading; 0 ends it
    fired: tuple[str, Decimal | int] | None = None  # (field, value) the alert names


RuleEvaluator = Callable[[HealthRule, HealthRecord, int], Verdict | None]
"""(rule, reading, run so far) -> Verdict, or None when the reading does not concern the
rule (its run neither grows nor ends). Pure: the same arguments give the same verdict, so
a replay or a rebalance rebuilds the same runs (`rebuild_runs`)."""


def threshold_run(rule: HealthRule, record: HealthRecord, run: int) -> Verdict | None:
    """`metric`: fires at the `trend_duration`-th consecutive out-of-bounds reading."""
    values = measured_values(rule, record)
    if not values:
        return None
    bad = first_violation(rule, values)
    if bad is None:
        return Verdict(0)
    run += 1
    return Verdict(run, bad if run == max(1, rule.trend_duration) else None)


# rule_type -> its evaluator. A new type: one function above, one line here, one test.
EVALUATORS: dict[str, RuleEvaluator] = {
    "metric": threshold_run,
}
# The legacy admin side writes free labels into rule_type ("heart_rate", "hr_high") for
# threshold rules; a row with a physical_sign and an unregistered type is one of those.
LEGACY_LABEL_TYPE = "metric"

UNKNOWN_RULE_TYPE = "unknown_rule_type"
UNKNOWN_PHYSICAL_SIGN = "unknown_physical_sign"
UNUSABLE_REASONS = (UNKNOWN_RULE_TYPE, UNKNOWN_PHYSICAL_SIGN)


def rule_kind(rule: HealthRule) -> str:
    """The key of the rule's evaluator in `EVALUATORS` (maybe not registered)."""
    if rule.rule_type in EVALUATORS or rule.physical_sign is None:
        return rule.rule_type
    return LEGACY_LABEL_TYPE


def evaluator_of(rule: HealthRule) -> RuleEvaluator | None:
    return EVALUATORS.get(rule_kind(rule))


def unusable_reason(rule: HealthRule) -> str | None:
    """Why this rule cannot be evaluated (one of UNUSABLE_REASONS), or None."""
    kind = rule_kind(rule)
    if kind not in EVALUATORS:
        return UNKNOWN_RULE_TYPE
    if kind == "metric" and rule.physical_sign not in SIGN_FIELDS:
        return UNKNOWN_PHYSICAL_SIGN
    return None


# (device_sn, rule_id) -> length of the current run (what the rule's evaluator counts).
TrendState = dict[tuple[str, int], int]


def fire_alerts(
    rules: list[HealthRule], records: list[HealthRecord], state: TrendState
) -> tuple[list[Alert], TrendState]:
    """Alerts fired by `records` (in arrival order) and the state after them.

    `state` is not modified, so a flush that fails can be retried from the same state.
    A rule of an unknown type is skipped here; the rule cache counted and logged it.
    """
    new_state = dict(state)
    alerts: list[Alert] = []
    if not rules:
        return alerts, new_state
    by_customer: dict[int, list[tuple[HealthRule, RuleEvaluator]]] = {}
    for rule in rules:
        evaluate = evaluator_of(rule)
        if evaluate is not None:
            by_customer.setdefault(rule.customer_id, []).append((rule, evaluate))
    for record in records:
        for rule, evaluate in by_customer.get(record.customer_id or 0, ()):
            key = (record.device_sn, rule.id)
            verdict = evaluate(rule, record, new_state.get(key, 0))
            if verdict is None:
                continue
            if verdict.run:
                new_state[key] = verdict.run
            else:
                new_state.pop(key, None)
            if verdict.fired is not None:
                field, value = verdict.fired
                alerts.append(Alert(rule=rule, record=record, field=field, value=value))
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
