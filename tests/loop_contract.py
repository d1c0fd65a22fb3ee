"""One set of poll-loop scenarios, run against the fake consumer and the real broker.

arroyo proves its local broker equal to Kafka by running one test suite against both;
this is that idea for the poll loop: `LoopContract` holds the scenarios, each backend
(tests/unit/test_loop_contract.py: FakeConsumer; tests/integration/test_loop_contract.py:
Kafka 4 on 127.0.0.1) runs all of them. A guarantee the fake shows must hold on Kafka,
and a fake that drifts from librdkafka (commits stored before they are acknowledged,
say) fails here instead of hiding a bug in the loop.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from consumer.dependencies import Dependencies
from consumer.pipeline.batching import BatchPolicy
from consumer.pipeline.flush import Flusher, RetryPolicy, Sinks
from consumer.pipeline.ledger import Ledger
from consumer.pipeline.poll_loop import PollLoop
from consumer.pipeline.worker import PartitionWorker
from consumer.settings import load_settings
from consumer.sinks.errors import Retryable
from tests.unit.fakes import FakeBroker, FakeConsumer, FakeDLQ, FakeMySQL, FakeRedis, NoRules


def payload(sn: str, second: int) -> bytes:
    ts = f"2025-06-01 10:{second // 60 % 60:02d}:{second % 60:02d}"
    return orjson.dumps({"data": {"deviceSn": sn, "heart_rate": 70, "timestamp": ts}})


class Backend(Protocol):
    topic: str

    def settings(self) -> dict[str, Any]: ...
    def consumer_factory(self) -> Callable[[Any, Any], Any] | None: ...
    def produce(self, partition: int, key: bytes, value: bytes) -> None: ...
    def assign(self, partitions: list[int]) -> None: ...
    def committed(self, partition: int) -> int | None: ...
    def close(self) -> None: ...


class FakeBackend:
    def __init__(self) -> None:
        self.topic = "health-data"
        self.broker = FakeBroker()
        self.consumer: FakeConsumer | None = None

    def settings(self) -> dict[str, Any]:
        return {"kafka_topic": self.topic}

    def consumer_factory(self) -> Callable[[Any, Any], Any]:
        def make(on_commit: Any, on_error: Any) -> FakeConsumer:
            self.consumer = FakeConsumer(self.broker, on_commit, on_error)
            return self.consumer

        return make

    def produce(self, partition: int, key: bytes, value: bytes) -> None:
        self.broker.produce(partition, key, value)

    def assign(self, partitions: list[int]) -> None:
        assert self.consumer is not None
        self.consumer.rebalance("assign", partitions)

    def committed(self, partition: int) -> int | None:
        return self.broker.committed.get(partition)

    def close(self) -> None:
        pass


class KafkaBackend:
    """A private topic of one partition on the real broker; the group assigns it."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        suffix = uuid.uuid4().hex[:10]
        self.topic, self.group = f"contract-{suffix}", f"contract-group-{suffix}"
        self.admin = AdminClient({"bootstrap.servers": bootstrap})
        futures = self.admin.create_topics([NewTopic(self.topic, 1, 1)])
        futures[self.topic].result(30)
        self.producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
        self.probe = Consumer({"bootstrap.servers": bootstrap, "group.id": self.group})

    def settings(self) -> dict[str, Any]:
        return {
            "kafka_bootstrap_servers": self.bootstrap,
            "kafka_topic": self.topic,
            "kafka_group_id": self.group,
            "dlq_topic": self.topic + ".dlq",
        }

    def consumer_factory(self) -> None:
        return None  # the loop's own confluent-kafka Consumer

    def produce(self, partition: int, key: bytes, value: bytes) -> None:
        self.producer.produce(self.topic, key=key, value=value, partition=partition)
        assert self.producer.flush(30) == 0

    def assign(self, partitions: list[int]) -> None:
        assert partitions == [0], "the real topic has one partition, assigned by the group"

    def committed(self, partition: int) -> int | None:
        tp = self.probe.committed([TopicPartition(self.topic, partition)], timeout=10)[0]
        return tp.offset if tp.offset >= 0 else None

    def close(self) -> None:
        self.probe.close()
        self.admin.delete_topics([self.topic])


class Loop:
    """The poll loop, workers and flush on real threads, writing to fake sinks."""

    def __init__(self, backend: Backend, mysql: FakeMySQL, max_records: int) -> None:
        self.backend, self.mysql, self.dlq, self.ledger = backend, mysql, FakeDLQ(), Ledger()
        settings = load_settings(
            shutdown_timeout_s=10, revoke_flush_timeout_s=5, worker_queue_max_records=1000,
            **backend.settings(),
        )  # fmt: skip
        sinks: Any = Sinks(backend.topic, (mysql, self.dlq, FakeRedis()))
        deps = Dependencies()

        def new_worker(p: int) -> PartitionWorker:
            flusher = Flusher(p, sinks, NoRules(), deps, self.ledger,  # type: ignore[arg-type]
                              RetryPolicy(0.001, 0.05))  # fmt: skip
            return PartitionWorker(p, flusher, BatchPolicy(max_records, 0.02))

        self.loop = PollLoop(settings, new_worker, self.ledger, deps, backend.consumer_factory())
        self.error: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.loop.run()
        except BaseException as exc:
            self.error.append(exc)

    def wait(self, condition: Callable[[], bool], timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, "condition not reached"
            assert self.thread.is_alive(), f"loop ended: {self.error}"
            time.sleep(0.05)

    def stop(self) -> None:
        self.loop.request_stop()
        self.thread.join(30)
        assert not self.thread.is_alive()


class LoopContract:
    """The scenarios. A subclass says which backend: `make_backend()`."""

    def make_backend(self) -> Backend:
        raise NotImplementedError

    def run(self, scenario: Callable[[Backend], None]) -> None:
        backend = self.make_backend()
        try:
            scenario(backend)
        finally:
            backend.close()

    @staticmethod
    def produce(backend: Backend, n: int, sn: str = "SN1", first: int = 0) -> None:
        for i in range(first, first + n):
            backend.produce(0, sn.encode(), payload(sn, i))

    def test_commits_follow_flushes_and_never_pass_them(self) -> None:
        def scenario(backend: Backend) -> None:
            self.produce(backend, 25)
            loop = Loop(backend, FakeMySQL(), max_records=10)
            backend.assign([0])
            loop.wait(lambda: backend.committed(0) == 25)
            assert len(loop.mysql.rows) == 25
            loop.stop()
            assert not loop.error

        self.run(scenario)

    def test_stopping_flushes_what_is_held_and_commits_it(self) -> None:
        def scenario(backend: Backend) -> None:
            mysql = FakeMySQL()
            loop = Loop(backend, mysql, max_records=1000)  # only the age or the stop flushes
            backend.assign([0])
            self.produce(backend, 7)
            loop.wait(lambda: len(mysql.rows) == 7)
            loop.stop()
            assert backend.committed(0) == 7
            assert not loop.error

        self.run(scenario)

    def test_an_outage_commits_nothing_until_it_ends(self) -> None:
        def scenario(backend: Backend) -> None:
            down = threading.Event()
            down.set()
            mysql = FakeMySQL(lambda records: Retryable("gone") if down.is_set() else None)
            loop = Loop(backend, mysql, max_records=10)
            backend.assign([0])
            self.produce(backend, 12)
            loop.wait(lambda: mysql.calls >= 5)
            time.sleep(0.5)  # commits would have been due several times meanwhile
            assert backend.committed(0) is None
            down.clear()
            loop.wait(lambda: backend.committed(0) == 12)
            assert len(mysql.rows) == 12
            loop.stop()

        self.run(scenario)

    def test_dead_letters_are_committed_with_their_batch(self) -> None:
        def scenario(backend: Backend) -> None:
            loop = Loop(backend, FakeMySQL(), max_records=10)
            backend.assign([0])
            backend.produce(0, b"SN1", b"{not json")
            backend.produce(0, b"SN1", payload("SN1", 2))
            loop.wait(lambda: backend.committed(0) == 2)
            assert [(r, o) for r, o, _ in loop.dlq.letters] == [("invalid_json", 0)]
            assert len(loop.mysql.rows) == 1
            loop.stop()

        self.run(scenario)
