"""RuleCache: the "never loaded" guard survives invalidation (issue 17, B8)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import create_engine

import consumer.health_alerts.repository as repository
from consumer.health_alerts.repository import RuleCache
from consumer.health_alerts.rules import HealthRule
from consumer.sinks.errors import Retryable

RULE = HealthRule(1, "hr_high", "heart_rate", None, None, 1, "critical", None, 0)


class Loads:
    """Stands in for load_rules: fails while `down`, else answers `rules`."""

    def __init__(self) -> None:
        self.down = True
        self.calls = 0

    def __call__(self, _engine: Any) -> list[HealthRule]:
        self.calls += 1
        if self.down:
            raise repository.exc.OperationalError("SELECT", {}, Exception("2003: no server"))
        return [RULE]


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> Loads:
    fake = Loads()
    monkeypatch.setattr(repository, "load_rules", fake)
    return fake


def cache() -> RuleCache:
    return RuleCache(create_engine("sqlite://"), refresh_s=60, clock=lambda: 1000.0)


def test_invalidation_before_the_first_load_keeps_holding_the_flush(loads: Loads) -> None:
    rules = cache()
    rules.invalidate()  # an alert_rules_channel message before any load
    with pytest.raises(Retryable, match="not loaded yet"):
        rules.rules()
    rules.invalidate()  # a Redis re-subscribe
    with pytest.raises(Retryable):
        rules.rules()
    loads.down = False
    assert rules.rules() == [RULE]


def test_after_a_load_a_failed_reload_keeps_the_last_good_rules(loads: Loads) -> None:
    loads.down = False
    rules = cache()
    assert rules.rules() == [RULE]
    loads.down = True
    rules.invalidate()
    assert rules.rules() == [RULE]
    assert loads.calls == 2
    assert rules.rules() == [RULE] and loads.calls == 2  # fresh again until the interval


def test_the_cache_serves_only_rules_an_evaluator_can_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    event = HealthRule(2, "event", None, None, None, 1, "minor", None, 0)
    monkeypatch.setattr(repository, "load_rules", lambda _engine: [RULE, event])
    tally = repository.UnusableRules()
    rules = RuleCache(create_engine("sqlite://"), 60, clock=lambda: 1000.0, unusable=tally)
    assert rules.rules() == [RULE]
    assert tally.counts()["unknown_rule_type"] == 1
