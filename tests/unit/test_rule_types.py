"""Rule evaluators by type: the registry, the legacy labels, and rules nothing can run."""

from __future__ import annotations

import dataclasses
import logging
from decimal import Decimal

import pytest

from consumer.health_alerts import rules as rules_module
from consumer.health_alerts.repository import UnusableRules
from consumer.health_alerts.rules import (
    EVALUATORS,
    UNKNOWN_PHYSICAL_SIGN,
    UNKNOWN_RULE_TYPE,
    HealthRule,
    Verdict,
    evaluator_of,
    fire_alerts,
    threshold_run,
)
from schemas.record import HealthRecord
from tests.records import make_record

METRIC = HealthRule(1, "metric", "heart_rate", None, Decimal(120), 1, "critical", None, 1001)


def test_the_threshold_run_is_the_metric_entry_and_legacy_labels_use_it() -> None:
    assert EVALUATORS["metric"] is threshold_run
    assert evaluator_of(METRIC) is threshold_run
    # The legacy admin side labels threshold rules freely ("heart_rate", "hr_high").
    labelled = dataclasses.replace(METRIC, rule_type="heart_rate")
    assert evaluator_of(labelled) is threshold_run
    alerts, _ = fire_alerts([labelled], [make_record(heart_rate=150)], {})
    assert [(a.rule.rule_type, a.field, a.value) for a in alerts] == [
        ("heart_rate", "heart_rate", 150)
    ]


def test_rows_without_a_sign_need_an_evaluator_of_their_own() -> None:
    event = dataclasses.replace(METRIC, id=2, rule_type="event", physical_sign=None)
    assert evaluator_of(event) is None
    alerts, state = fire_alerts([event, METRIC], [make_record(heart_rate=150)], {})
    assert [a.rule.id for a in alerts] == [1]  # the other rules still run
    assert state == {("CRFTQ23409001890", 1): 1}


def test_a_new_rule_type_is_one_function_and_one_registry_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A toy type: fires on the second reading in a row that reports no steps at all."""

    def no_steps_twice(rule: HealthRule, record: HealthRecord, run: int) -> Verdict | None:
        if record.step is None:
            return None  # not reported: the run neither grows nor ends
        if record.step:
            return Verdict(0)
        return Verdict(run + 1, ("step", 0) if run + 1 == 2 else None)

    monkeypatch.setitem(EVALUATORS, "no_steps", no_steps_twice)
    rule = HealthRule(7, "no_steps", None, None, None, 1, "minor", "idle", 1001)
    steps = [0, None, 0, 0, 5, 0]
    records = [make_record(seconds=i, step=s) for i, s in enumerate(steps)]
    alerts, state = fire_alerts([rule], records, {})
    assert [a.record.timestamp.second - records[0].timestamp.second for a in alerts] == [2]
    assert alerts[0].description.startswith("idle: step=0")
    assert state == {(records[0].device_sn, 7): 1}
    assert UnusableRules().usable([rule]) == [rule]


def test_unusable_rules_are_counted_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    event = HealthRule(2, "event", None, None, None, 1, "minor", None, 0)
    dsl = HealthRule(3, "dsl", None, None, None, 1, "minor", None, 0)
    glucose = HealthRule(4, "metric", "glucose", None, Decimal(9), 1, "minor", None, 0)
    tally = UnusableRules()
    with caplog.at_level(logging.WARNING, logger="consumer.health_alerts.repository"):
        for _refresh in range(3):
            assert tally.usable([event, METRIC, dsl, glucose]) == [METRIC]
    assert tally.counts() == {UNKNOWN_RULE_TYPE: 2, UNKNOWN_PHYSICAL_SIGN: 1}
    warned = sorted((r.rule_id, r.reason) for r in caplog.records)  # type: ignore[attr-defined]
    assert warned == [(2, UNKNOWN_RULE_TYPE), (3, UNKNOWN_RULE_TYPE), (4, UNKNOWN_PHYSICAL_SIGN)]


def test_every_reason_is_exported_from_the_start() -> None:
    assert UnusableRules().counts() == dict.fromkeys(rules_module.UNUSABLE_REASONS, 0)
