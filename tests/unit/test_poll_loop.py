"""The poll loop, workers and flush together, on real threads, with no services.

A fake consumer plays the broker's part (rebalance callbacks inside consume(), async
commit acks on a later call) and fake sinks record or fail, so every guarantee about
commits is checked against what was durably "written", not against timing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import pytest

from consumer.dependencies import Dependencies
from consumer.pipeline.batching import BatchPolicy
from consumer.pipeline.flush import Flusher, RetryPolicy, Sinks
from consumer.pipeline.ledger import Ledger
from consumer.pipeline.poll_loop import PollLoop
from consumer.pipeline.worker import PartitionWorker
from consumer.settings import load_settings
from consumer.sinks.errors import Retryable
from consumer.sinks.mysql import RowRejected
from schemas.record import HealthRecord
from tests.unit.fakes import TOPIC, FakeBroker, FakeConsumer, FakeDLQ, FakeMySQL, FakeRedis, NoRules


def payload(sn: str, second: int, heart_rate: int = 70) -> bytes:
    reading = {"deviceSn": sn, "heart_rate": heart_rate,
               "timestamp": f"2025-06-01 10:{second // 60:02d}:{second % 60:02d}"}  # fmt: skip
    return orjson.dumps({"data": reading})


@dataclass
class Harness:
    broker: FakeBroker
    mysql: FakeMySQL
    dlq: FakeDLQ
    ledger: Ledger
    loop: PollLoop
    consumer: FakeConsumer
    thread: threading.Thread
    error: list[BaseException]
    loop_deps: Dependencies

    def wait(self, condition: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, "condition not reached"
            assert self.thread.is_alive() or condition(), f"loop ended: {self.error}"
            time.sleep(0.01)

    def stop(self) -> None:
        self.loop.request_stop()
        self.thread.join(10)
        assert not self.thread.is_alive()


@pytest.fixture
def harness() -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def make(mysql: FakeMySQL | None = None, max_records: int = 10, rules: Any = None) -> Harness:
        broker, mysql = FakeBroker(), mysql or FakeMySQL()
        dlq, ledger, deps = FakeDLQ(), Ledger(), Dependencies()
        settings = load_settings(
            kafka_topic=TOPIC, shutdown_timeout_s=2, revoke_flush_timeout_s=2,
            worker_queue_max_records=1000,
        )  # fmt: skip
        sinks: Any = Sinks(TOPIC, (mysql, dlq, FakeRedis()))
        box: list[FakeConsumer] = []

        def new_worker(p: int) -> PartitionWorker:
            flusher = Flusher(p, sinks, rules or NoRules(), deps, ledger,  # type: ignore[arg-type]
                              RetryPolicy(0.001, 0.01))  # fmt: skip
            return PartitionWorker(p, flusher, BatchPolicy(max_records, 0.02))

        def make_consumer(on_commit: Any, on_error: Any) -> FakeConsumer:
            box.append(FakeConsumer(broker, on_commit, on_error))
            return box[0]

        loop = PollLoop(settings, new_worker, ledger, deps, make_consumer)
        error: list[BaseException] = []

        def run() -> None:
            try:
                loop.run()
            except BaseException as exc:
                error.append(exc)

        thread = threading.Thread(target=run, daemon=True)
        h = Harness(broker, mysql, dlq, ledger, loop, box[0], thread, error, deps)
        thread.start()
        made.append(h)
        return h

    yield make
    for h in made:
        h.loop.request_stop()
        h.mysql.gate.set()
        h.thread.join(5)


def produce(broker: FakeBroker, partition: int, n: int, sn: str = "SN1") -> None:
    for i in range(n):
        broker.produce(partition, sn.encode(), payload(sn, i))


def test_commits_follow_flushes_and_never_pass_them(harness: Callable[..., Harness]) -> None:
    h = harness()
    produce(h.broker, 0, 25)
    h.consumer.rebalance("assign", [0])
    h.wait(lambda: h.broker.committed.get(0) == 25)
    assert len(h.mysql.rows) == 25
    assert all(o <= 25 for _, c in h.broker.commits for o in c.values())
    h.stop()
    assert h.consumer.closed and not h.error


def test_revoke_flushes_then_commits_synchronously(harness: Callable[..., Harness]) -> None:
    h = harness(max_records=1000)  # only the age limit (20 ms) or the revoke flushes
    produce(h.broker, 0, 7)
    h.consumer.rebalance("assign", [0])
    h.wait(lambda: h.loop.view().partitions.get(0) is not None)
    h.consumer.rebalance("revoke", [0])
    h.wait(lambda: 0 not in h.loop.view().partitions)
    assert len(h.mysql.rows) == 7
    # The revoke's own commit is synchronous: the fake stores an async one only when a
    # later consume() answers it, which no consume() after the revoke would.
    assert (True, {0: 7}) in h.broker.commits
    assert h.broker.committed[0] == 7
    h.stop()


def test_lost_partition_commits_nothing(harness: Callable[..., Harness]) -> None:
    mysql = FakeMySQL()
    mysql.gate.clear()  # the write hangs: nothing becomes durable
    h = harness(mysql=mysql)
    produce(h.broker, 3, 5)
    h.consumer.rebalance("assign", [3])
    h.wait(lambda: mysql.calls > 0)
    h.consumer.rebalance("lost", [3])
    h.wait(lambda: 3 not in h.loop.view().partitions)
    mysql.gate.set()
    time.sleep(0.2)
    h.stop()
    assert 3 not in h.broker.committed
    assert not any(3 in c for _, c in h.broker.commits)


def test_db_outage_is_retried_until_it_ends_and_loses_nothing(
    harness: Callable[..., Harness],
) -> None:
    down = threading.Event()
    down.set()
    mysql = FakeMySQL(lambda records: Retryable("gone") if down.is_set() else None)
    h = harness(mysql=mysql)
    produce(h.broker, 0, 12)
    h.consumer.rebalance("assign", [0])
    h.wait(lambda: mysql.calls >= 5)
    assert h.broker.committed.get(0) is None
    down.clear()
    h.wait(lambda: h.broker.committed.get(0) == 12)
    assert len(mysql.rows) == 12
    h.stop()


def test_abandoned_worker_stops_retrying_and_commits_nothing(
    harness: Callable[..., Harness],
) -> None:
    mysql = FakeMySQL(lambda records: Retryable("gone"))
    h = harness(mysql=mysql)
    produce(h.broker, 1, 4)
    h.consumer.rebalance("assign", [1])
    h.wait(lambda: mysql.calls >= 3)
    h.consumer.rebalance("lost", [1])  # abandons the worker mid-retry
    h.wait(lambda: 1 not in h.loop.view().partitions)
    calls = mysql.calls
    time.sleep(0.1)
    assert mysql.calls <= calls + 1  # at most the attempt already under way
    h.stop()
    assert 1 not in h.broker.committed


def bad_rows(kind: Callable[[str], Exception], bad: set[str]) -> FakeMySQL:
    def fail(records: list[HealthRecord]) -> Exception | None:
        hit = [r.device_sn for r in records if r.device_sn in bad]
        return kind(hit[0]) if hit else None

    return FakeMySQL(fail)


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        (lambda sn: RowRejected(f"1406: too long {sn}"), "db_rejected"),
        (lambda sn: ValueError(f"bug on {sn}"), "internal_error"),
    ],
)
def test_bisect_isolates_the_failing_rows(
    harness: Callable[..., Harness], kind: Callable[[str], Exception], reason: str
) -> None:
    h = harness(mysql=bad_rows(kind, {"BAD1", "BAD2"}), max_records=100)
    sns = ["OK1", "BAD1", "OK2", "OK3", "BAD2", "OK4"]
    for sn in sns:
        h.broker.produce(0, sn.encode(), payload(sn, 1))
    h.consumer.rebalance("assign", [0])
    h.wait(lambda: h.broker.committed.get(0) == len(sns))
    assert sorted(r.device_sn for r in h.mysql.rows) == ["OK1", "OK2", "OK3", "OK4"]
    assert sorted((r, o) for r, o, _ in h.dlq.letters) == [(reason, 1), (reason, 4)]
    if reason == "internal_error":
        assert all("ValueError" in d for _, _, d in h.dlq.letters)
    assert h.ledger.totals().dead_letters[reason] == 2
    h.stop()
    assert not h.error


def test_a_bug_on_every_row_dead_letters_each_row_alone(
    harness: Callable[..., Harness],
) -> None:
    """A row's fate does not depend on its neighbours (issue 17, B6): a bug that fails
    every row dead-letters each one as internal_error (replayable), as it would a lone
    row in a backlog; the partition moves on and the replica stays up."""
    mysql = FakeMySQL(lambda records: TypeError("the sink is broken"))
    h = harness(mysql=mysql)
    produce(h.broker, 0, 3)
    h.consumer.rebalance("assign", [0])
    h.wait(lambda: h.broker.committed.get(0) == 3)
    assert sorted((r, o) for r, o, _ in h.dlq.letters) == [
        ("internal_error", 0),
        ("internal_error", 1),
        ("internal_error", 2),
    ]
    assert all("TypeError" in d for _, _, d in h.dlq.letters)
    assert h.loop.view().failed is None
    h.stop()
    assert not h.error


def test_a_batch_of_dead_letters_alone_commits_during_a_db_outage(
    harness: Callable[..., Harness],
) -> None:
    mysql = FakeMySQL(lambda records: Retryable("gone"))
    h = harness(mysql=mysql)
    h.broker.produce(0, b"SN1", b"{not json")
    h.broker.produce(0, b"SN1", b"[1, 2")
    h.consumer.rebalance("assign", [0])
    h.wait(lambda: h.broker.committed.get(0) == 2)
    assert [(r, o) for r, o, _ in h.dlq.letters] == [("invalid_json", 0), ("invalid_json", 1)]
    assert mysql.calls == 0
    h.stop()


def test_dead_letters_are_committed_with_the_batch(harness: Callable[..., Harness]) -> None:
    h = harness()
    h.broker.produce(0, b"SN1", b"{not json")
    h.broker.produce(0, b"SN1", payload("SN1", 2))
    h.broker.produce(0, b"OTHER", payload("SN1", 3))  # key names another device
    h.consumer.rebalance("assign", [0])
    h.wait(lambda: h.broker.committed.get(0) == 3)
    assert [(r, o) for r, o, _ in h.dlq.letters] == [("invalid_json", 0), ("key_mismatch", 2)]
    assert len(h.mysql.rows) == 1
    h.stop()


def test_backpressure_pauses_and_resumes(harness: Callable[..., Harness]) -> None:
    mysql = FakeMySQL()
    mysql.gate.clear()
    h = harness(mysql=mysql)
    produce(h.broker, 0, 1500)  # above WORKER_QUEUE_MAX_RECORDS (1000)
    h.consumer.rebalance("assign", [0])
    h.wait(lambda: 0 in h.consumer.paused)
    assert h.loop.view().partitions[0].paused
    mysql.gate.set()
    h.wait(lambda: h.broker.committed.get(0) == 1500)
    assert 0 not in h.consumer.paused and len(mysql.rows) == 1500
    assert h.ledger.totals().pauses >= 1
    h.stop()


def test_rules_not_loadable_yet_hold_the_flush_instead_of_losing_alerts(
    harness: Callable[..., Harness],
) -> None:
    from decimal import Decimal

    from consumer.health_alerts.rules import HealthRule
    from tests.unit.fakes import FlakyRules

    rule = HealthRule(1, "hr_high", "heart_rate", None, Decimal(100), 1, "critical", None, 0)
    rules = FlakyRules([rule], failures=3)
    h = harness(rules=rules)
    h.broker.produce(0, b"SN1", payload("SN1", 1, heart_rate=150))
    h.consumer.rebalance("assign", [0])
    h.wait(lambda: h.broker.committed.get(0) == 1)
    assert rules.failures == 0
    assert [a.record.device_sn for a in h.mysql.alerts] == ["SN1"]
    h.stop()


def test_a_reading_without_timestamp_is_stored_at_the_message_time(
    harness: Callable[..., Harness],
) -> None:
    h = harness()
    h.broker.produce(0, b"SN1", orjson.dumps({"data": {"deviceSn": "SN1", "heart_rate": 64}}))
    h.consumer.rebalance("assign", [0])
    h.wait(lambda: h.broker.committed.get(0) == 1)
    # The fake broker stamps 1_900_000_000_000 ms; DEVICE_TIMEZONE defaults to UTC.
    assert [r.timestamp for r in h.mysql.rows] == [datetime(2030, 3, 17, 17, 46, 40)]
    assert h.ledger.totals().timestamps_from_kafka == 1
    assert h.dlq.letters == []
    h.stop()


def test_a_failed_async_commit_is_asked_again_and_lands(harness: Callable[..., Harness]) -> None:
    h = harness()
    h.consumer.fail_commits = 2  # the broker answers the first two commits with an error
    produce(h.broker, 0, 10)
    h.consumer.rebalance("assign", [0])
    h.wait(lambda: h.broker.committed.get(0) == 10)
    asked = [c for sync, c in h.broker.commits if not sync and c.get(0) == 10]
    assert len(asked) >= 3  # two failed answers, then the one that landed
    assert h.ledger.totals().commits_failed == 2
    h.stop()


def test_a_transport_error_marks_kafka_down_until_messages_flow(
    harness: Callable[..., Harness],
) -> None:
    from confluent_kafka import KafkaError

    h = harness()
    h.consumer.rebalance("assign", [0])
    h.consumer.report_error(KafkaError(KafkaError._ALL_BROKERS_DOWN))
    h.wait(lambda: not h.loop_deps.is_up("kafka"))
    produce(h.broker, 0, 1)
    h.wait(lambda: h.broker.committed.get(0) == 1)
    assert h.loop_deps.is_up("kafka")
    h.stop()
