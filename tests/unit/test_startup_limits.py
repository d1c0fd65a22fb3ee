"""Required item 1: the size limits on the path are checked against each other at start-up."""

from __future__ import annotations

import pytest

from consumer.settings import load_settings
from consumer.startup import (
    POOL_RESERVE,
    Limits,
    StartupRefused,
    check_limits,
    dlq_bytes_needed,
    letter_overhead,
)

BROKER = 1_048_588


def limits(dlq_topic: int = BROKER, partitions: int = 12, source: int = BROKER) -> Limits:
    return Limits(partitions, BROKER, dlq_topic, source)


@pytest.mark.parametrize("delta", [-1, 0, 1])
def test_dlq_producer_limit_against_the_dlq_topic(delta: int) -> None:
    s = load_settings()
    needed = dlq_bytes_needed(1_000_000)  # the producer's default message.max.bytes
    topic_limit = needed + delta
    if delta < 0:
        with pytest.raises(StartupRefused) as err:
            check_limits(s, limits(dlq_topic=topic_limit), 100)
        text = str(err.value)
        assert "KAFKA_CLIENT_MESSAGE_MAX_BYTES" in text and "message.max.bytes=1000000" in text
        assert f"max.message.bytes={topic_limit}" in text
    else:
        check_limits(s, limits(dlq_topic=topic_limit), 100)


def test_a_raised_producer_limit_needs_the_dlq_topic_raised_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KAFKA_CLIENT_MESSAGE_MAX_BYTES", "2000000")
    with pytest.raises(StartupRefused, match=r"broker's default message.max.bytes is 1048588"):
        check_limits(load_settings(), limits(), 100)
    # The topic's own limit is what the broker enforces for it, above the broker default.
    check_limits(load_settings(), limits(dlq_topic=dlq_bytes_needed(2_000_000)), 100)


@pytest.mark.parametrize("delta", [-1, 0, 1])
def test_max_message_bytes_against_what_a_dead_letter_holds(
    delta: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    boundary = 1_000_000 - letter_overhead(load_settings())
    monkeypatch.setenv("MAX_MESSAGE_BYTES", str(boundary + delta))
    warnings = check_limits(load_settings(), limits(source=boundary + delta), 100)
    truncating = [w for w in warnings if "are truncated" in w]
    assert bool(truncating) == (delta > 0)
    if truncating:
        assert f"MAX_MESSAGE_BYTES={boundary + 1}" in truncating[0]
        assert "message.max.bytes=1000000" in truncating[0]


@pytest.mark.parametrize("delta", [-1, 0, 1])
def test_pool_against_the_partitions_one_replica_can_own(delta: int) -> None:
    s = load_settings()
    capacity = 12 + POOL_RESERVE + delta
    warnings = [w for w in check_limits(s, limits(partitions=12), capacity) if "DB_POOL" in w]
    assert bool(warnings) == (delta < 0)
    if warnings:
        assert "DB_POOL_SIZE=16" in warnings[0] and "12 partitions" in warnings[0]


def test_defaults_only_warn_that_the_largest_messages_would_be_truncated() -> None:
    warnings = check_limits(load_settings(), limits(), 20)
    assert len(warnings) == 1 and "MAX_MESSAGE_BYTES=1048576" in warnings[0]


@pytest.mark.parametrize("delta", [-1, 0, 1])
def test_readings_per_message_against_the_batch_cap(
    delta: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BATCH_MAX_RECORDS", "100")
    monkeypatch.setenv("MAX_READINGS_PER_MESSAGE", str(100 + delta))
    warnings = [w for w in check_limits(load_settings(), limits(), 100) if "BATCH_MAX" in w]
    assert bool(warnings) == (delta > 0)
    if warnings:
        assert "MAX_READINGS_PER_MESSAGE=101" in warnings[0] and "up to 200 records" in warnings[0]
