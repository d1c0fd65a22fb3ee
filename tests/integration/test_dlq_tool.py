"""`health-consumer dlq stats | replay` against the real broker, DB and a real replica."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import NewTopic

from consumer.sinks.dlq import DeadLetterSink
from consumer.tools.dlq import GROUP_PREFIX
from tests.integration.stack import KAFKA, Stack, wait_for
from tests.integration.test_consumer import as_kafka, expected, sim_messages, wait_committed

pytestmark = pytest.mark.integration

CLI = str(Path(sys.executable).with_name("health-consumer"))


def dlq_cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    """The real command line, configured like an operator would: env only."""
    env = {**os.environ, **stack.env(LOG_LEVEL="WARNING")}
    return subprocess.run([CLI, "dlq", *args], env=env, capture_output=True, text=True, timeout=300)


def dlq_json(stack: Stack, *args: str, expect_rc: int = 0) -> dict[str, Any]:
    result = dlq_cli(stack, *args, "--format", "json")
    assert result.returncode == expect_rc, result.stderr
    data = json.loads(result.stdout)
    assert isinstance(data, dict)
    return data


def create_topic(stack: Stack, name: str, partitions: int, **config: str) -> None:
    futures = stack.admin.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1, config=config)]
    )
    futures[name].result(30)


def send_dead_letters(sink: DeadLetterSink, letters: list[dict[str, Any]]) -> None:
    deliveries = [sink.send(**letter) for letter in letters]
    for d in deliveries:
        assert d.done.wait(30) and d.error is None, d.error


def tool_groups(stack: Stack) -> list[str]:
    groups = stack.admin.list_consumer_groups().result(30).valid
    return [g.group_id for g in groups if g.group_id.startswith(GROUP_PREFIX)]


def test_stats_counts_reasons_oldest_newest_and_samples(stack: Stack) -> None:
    create_topic(stack, stack.dlq_topic, 3)
    sink = DeadLetterSink(KAFKA, stack.dlq_topic, {})
    plan = Counter({"invalid_json": 5, "schema_violation": 3, "db_rejected": 2})

    def letter(reason: str, i: int) -> dict[str, Any]:
        sn = f"CRFTQDLQSTAT{i:04d}"
        return {
            "key": sn.encode(),
            "value": b'{"data": "x"}',
            "reason": reason,
            "detail": f"{reason} detail {i}",
            "source_topic": stack.topic,
            "source_partition": i % 12,
            "source_offset": 1000 + i,
        }

    # First and last are sent alone, a few ms apart, so they are the oldest and newest.
    first, last = letter("invalid_json", 0), letter("db_rejected", 99)
    middle = ["invalid_json"] * 4 + ["schema_violation"] * 3 + ["db_rejected"]
    bulk = [letter(r, i) for i, r in enumerate(middle, start=1)]
    send_dead_letters(sink, [first])
    time.sleep(0.05)
    send_dead_letters(sink, bulk)
    time.sleep(0.05)
    send_dead_letters(sink, [last])
    sink.close()
    sent = [first, *bulk, last]
    assert Counter(s["reason"] for s in sent) == plan

    stats = dlq_json(stack, "stats", "--samples", "2")
    assert stats["topic"] == stack.dlq_topic and stats["partitions"] == 3
    assert stats["scanned"] == stats["total"] == len(sent)
    assert stats["counts"] == dict(plan)
    assert stats["oldest"]["detail"] == first["detail"]
    assert stats["oldest"]["source"] == f"{stack.topic}:0:1000"
    assert stats["newest"]["detail"] == last["detail"]
    assert stats["newest"]["key"] == "CRFTQDLQSTAT0099"
    details = {r: {s["detail"] for s in sent if s["reason"] == r} for r in plan}
    for reason, count in plan.items():
        samples = stats["samples"][reason]
        assert len(samples) == min(2, count)
        assert {s["detail"] for s in samples} <= details[reason]
        assert all(s["reason"] == reason for s in samples)
        info = stats["reasons"][reason]
        assert info["count"] == count and info["oldest"] <= info["newest"]

    table = dlq_cli(stack, "stats")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    for reason, count in plan.items():
        assert any(line.split()[:2] == [reason, str(count)] for line in lines), table.stdout
    # Piped (not a terminal): no progress bar on stderr.
    assert "[#" not in table.stderr and "--]" not in table.stderr
    # Read with assign() and a throwaway group that never commits: no group was created.
    assert tool_groups(stack) == []


def test_time_window_selects_by_dead_letter_timestamp(stack: Stack) -> None:
    create_topic(stack, stack.dlq_topic, 1)
    producer = Producer({"bootstrap.servers": KAFKA})
    days = [dt.datetime(2025, 1, d, tzinfo=dt.UTC) for d in (1, 2, 3, 4)]
    for i, day in enumerate(days):
        producer.produce(
            stack.dlq_topic,
            key=f"CRFTQWINDOW{i:05d}".encode(),
            value=b"{",
            timestamp=int(day.timestamp() * 1000),
            headers=[
                ("error.reason", b"invalid_json"),
                ("error.detail", f"day {day.day}".encode()),
                ("source.topic", stack.topic.encode()),
                ("source.partition", b"0"),
                ("source.offset", str(i).encode()),
            ],
        )
    assert producer.flush(30) == 0

    stats = dlq_json(stack, "stats", "--since", "2025-01-02", "--until", "2025-01-04T00:00:00Z")
    # --since seeks past day 1 (offsets_for_times); --until filters day 4 out.
    assert stats["scanned"] == 3 and stats["total"] == 2
    assert stats["oldest"]["detail"] == "day 2" and stats["newest"]["detail"] == "day 3"
    assert stats["window"] == "[2025-01-02T00:00:00.000Z, 2025-01-04T00:00:00.000Z)"

    before = stack.end_offsets()
    dry = dlq_json(
        stack, "replay", "--reason", "invalid_json", "--since", "2025-01-03", "--dry-run"
    )
    assert dry["matched"] == 2 and dry["sent"] == 0 and dry["by_target"] == {stack.topic: 2}
    assert stack.end_offsets() == before  # a dry run sends nothing

    bad = dlq_cli(stack, "stats", "--since", "yesterday-ish")
    assert bad.returncode == 2 and "not a time" in bad.stderr


def test_replay_writes_rows_and_replaying_twice_duplicates_nothing(stack: Stack) -> None:
    msgs = sim_messages(400, seed=505, array_ratio=0.1)
    n = len(expected(msgs)["readings"])
    # Readings the contract accepts but a DBA constraint rejects: dead-lettered as
    # db_rejected. Plus unparseable ones, which must never be replayed.
    rejected = [
        (
            f"CRFTQREPLAY{i:05d}".encode(),
            orjson.dumps(
                {
                    "data": {
                        "deviceSn": f"CRFTQREPLAY{i:05d}",
                        "timestamp": f"2025-06-03 10:{i:02d}:00",
                        "heart_rate": 260,
                    }
                }
            ),
            [],
        )
        for i in range(12)
    ]
    garbage = [(f"CRFTQGARBAGE{i:04d}".encode(), b"{not json", []) for i in range(3)]
    with stack.engine.begin() as conn:
        conn.exec_driver_sql(
            "ALTER TABLE t_user_health_data ADD CONSTRAINT chk_hr CHECK (heart_rate < 250)"
        )
    stack.produce(as_kafka(msgs) + rejected + garbage)
    proc = stack.consumer().start()
    wait_for(lambda: stack.health_rows() >= n, 120, what=f"{n} rows")
    wait_committed(stack)

    def all_dead_lettered() -> dict[str, Any] | None:
        stats = dlq_json(stack, "stats")
        return stats if stats["total"] >= 15 else None

    stats = wait_for(all_dead_lettered, 60, what="15 dead letters")
    assert stats["counts"] == {"db_rejected": 12, "invalid_json": 3}
    assert stack.health_rows() == n

    # The fix: the constraint goes. Replay only the db_rejected entries.
    with stack.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE t_user_health_data DROP CONSTRAINT chk_hr")
    end_before = stack.end_offsets()
    first = dlq_json(stack, "replay", "--reason", "db_rejected")
    assert first["matched"] == first["sent"] == first["delivered"] == 12
    assert first["failed"] == 0 and first["by_target"] == {stack.topic: 12}
    wait_for(lambda: stack.health_rows() >= n + 12, 120, what=f"{n + 12} rows")
    wait_committed(stack)
    replayed_rows = stack.rows(
        "SELECT device_sn, heart_rate FROM t_user_health_data WHERE device_sn LIKE 'CRFTQREPLAY%'"
    )
    assert sorted(replayed_rows) == [(f"CRFTQREPLAY{i:05d}", 260) for i in range(12)]

    # Each replayed copy says where it came from, and landed on its device's partition.
    in_topic = stack.read_topic(stack.topic, len(msgs) + len(rejected) + len(garbage) + 12)
    added = [m for m in in_topic if m.offset() >= end_before[m.partition()]]
    assert len(added) == 12
    for m in added:
        headers = {k: v.decode() for k, v in m.headers()}
        dlq_topic, _, _ = headers["replay.origin"].split(":")
        src_topic, src_partition, _ = headers["replay.source"].split(":")
        assert dlq_topic == stack.dlq_topic and headers["replay.reason"] == "db_rejected"
        assert src_topic == stack.topic and int(src_partition) == m.partition()

    snapshot = table_snapshot(stack)
    duplicates = proc.metric("health_consumer_records_duplicate_total")
    second = dlq_json(stack, "replay", "--reason", "db_rejected")
    assert second["delivered"] == 12 and second["failed"] == 0
    # The consumer did process the second copies: as duplicates, changing nothing.
    wait_for(
        lambda: proc.metric("health_consumer_records_duplicate_total") >= duplicates + 12,
        120,
        what="12 more duplicates",
    )
    wait_committed(stack)
    assert table_snapshot(stack) == snapshot
    assert stack.health_rows() == n + 12
    # Nothing was dead-lettered again, and the invalid_json entries stayed put.
    assert dlq_json(stack, "stats")["counts"] == {"db_rejected": 12, "invalid_json": 3}
    assert tool_groups(stack) == []
    assert proc.terminate() == 0


def table_snapshot(stack: Stack) -> dict[str, list[Any]]:
    return {
        table: sorted(map(tuple, stack.rows(f"SELECT * FROM {table}")), key=repr)
        for table in (
            "t_user_health_data",
            "t_user_health_data_daily",
            "t_user_health_data_weekly",
            "t_alert_info",
        )
    }


def test_replay_exits_nonzero_when_a_delivery_fails(stack: Stack) -> None:
    create_topic(stack, stack.dlq_topic, 1)
    target = stack.topic + "-small"
    create_topic(stack, target, 1, **{"max.message.bytes": "2000"})
    try:
        sink = DeadLetterSink(KAFKA, stack.dlq_topic, {})
        common = {"source_topic": stack.topic, "source_partition": 0, "source_offset": 1}
        send_dead_letters(
            sink,
            [
                {"key": b"a", "value": b"small", "reason": "x", "detail": "", **common},
                {"key": b"b", "value": os.urandom(20_000), "reason": "x", "detail": "", **common},
            ],
        )
        sink.close()
        result = dlq_json(stack, "replay", "--reason", "x", "--to-topic", target, expect_rc=1)
        # Both may share one rejected batch; either way nothing is lost silently.
        assert result["matched"] == 2 and result["failed"] >= 1
        assert result["delivered"] + result["failed"] == 2
        assert result["errors"] and "large" in result["errors"][0].lower()
    finally:
        stack.admin.delete_topics([target])


def test_replay_refuses_entries_without_a_source_topic(stack: Stack) -> None:
    create_topic(stack, stack.dlq_topic, 1)
    producer = Producer({"bootstrap.servers": KAFKA})
    producer.produce(stack.dlq_topic, key=b"k", value=b"v", headers=[("error.reason", b"odd")])
    assert producer.flush(30) == 0
    before = stack.end_offsets()
    result = dlq_json(stack, "replay", "--reason", "odd", expect_rc=1)
    assert result["matched"] == 1 and result["unroutable"] == 1 and result["sent"] == 0
    assert stack.end_offsets() == before
