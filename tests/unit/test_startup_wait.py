"""Start-up waits out a group coordinator that cannot answer yet instead of exiting.

A CI run saw a replica exit 1 at start: the probe of the group's committed offsets (the
zone check of issue 18) raised while the broker's coordinator was still loading, and
nothing caught it. The probe is now part of the Kafka check (`_check_kafka`): reported,
retried.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import create_engine

from consumer import startup
from consumer.dependencies import Dependencies
from consumer.pipeline.poll_loop import ZONE_METADATA_PREFIX
from consumer.pipeline.retry import Backoff
from consumer.settings import load_settings
from consumer.startup import Limits, StartupRefused, wait_for_dependencies

BROKER = 1_048_588
ENGINE = create_engine("mysql+pymysql://nobody@127.0.0.1:1/never")  # the checks are stubbed


def _stub_checks(monkeypatch: pytest.MonkeyPatch, committed: list[Any]) -> list[int]:
    calls: list[int] = []

    def probe(_settings: Any, partitions: int) -> list[str]:
        calls.append(partitions)
        outcome = committed.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return list(outcome)

    monkeypatch.setattr(startup, "_check_mysql", lambda _e, _u: None)
    monkeypatch.setattr(startup, "_kafka_limits", lambda _s: Limits(3, BROKER, BROKER, BROKER))
    monkeypatch.setattr(startup, "pool_capacity", lambda _e: 100)
    monkeypatch.setattr(startup, "committed_metadata", probe)
    return calls


def test_a_failing_committed_offsets_probe_is_reported_and_retried(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = _stub_checks(
        monkeypatch, [RuntimeError("KafkaError{code=COORDINATOR_LOAD_IN_PROGRESS}"), ["", ""]]
    )
    deps = Dependencies()
    ok = wait_for_dependencies(
        load_settings(), ENGINE, deps, threading.Event(), backoff=Backoff(0.001, 0.001)
    )
    assert ok is True
    assert calls == [3, 3]
    state = deps.snapshot()["kafka"]
    assert state.up is True and state.errors == 1
    assert state.last_error is not None and "COORDINATOR_LOAD_IN_PROGRESS" in state.last_error


def test_a_group_committed_in_another_zone_is_still_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = load_settings()
    other = "Asia/Tokyo" if settings.device_timezone != "Asia/Tokyo" else "UTC"
    _stub_checks(monkeypatch, [[ZONE_METADATA_PREFIX + other]])
    with pytest.raises(StartupRefused, match=other):
        wait_for_dependencies(
            settings, ENGINE, Dependencies(), threading.Event(), backoff=Backoff(0.001, 0.001)
        )
