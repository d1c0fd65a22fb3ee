"""The one thread that owns the Kafka consumer: poll, decode, dispatch, pause, commit.

Commit policy: a partition's offset is committed only up to its worker's `flushed_offset`,
which a worker advances after the DB transaction committed and every dead letter was
acknowledged. Auto-commit and the offset store are off, so no other path can commit.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import (
    OFFSET_INVALID,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from consumer import __version__
from consumer.batching import Batch, BatchPolicy, PendingMessage
from consumer.decode import decode
from consumer.flow_control import FlowControl
from consumer.flush import FlushReport, Sinks
from consumer.settings import Settings
from consumer.worker import PartitionWorker

log = logging.getLogger(__name__)

COMMIT_INTERVAL_S = 0.2
POLL_TIMEOUT_S = 0.02


def consumer_config(settings: Settings) -> dict[str, object]:
    return {
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "group.id": settings.kafka_group_id,
        "client.id": f"healthstream-{__version__}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": "cooperative-sticky",
        "session.timeout.ms": 10_000,
        "heartbeat.interval.ms": 2_000,
        "max.poll.interval.ms": 300_000,
        "fetch.wait.max.ms": 50,
        **settings.kafka_client,
    }


@dataclass(slots=True)
class PartitionState:
    """The poll thread's bookkeeping for one assigned partition."""

    worker: PartitionWorker
    paused: bool = False
    committed: int | None = None  # last offset the broker acknowledged
    requested: int | None = None  # async commit in flight


@dataclass(slots=True)
class LoopStats:
    last_poll_at: float = 0.0
    last_commit_at: float = 0.0
    joined: bool = False


class PollLoop:
    def __init__(
        self,
        settings: Settings,
        sinks: Sinks,
        on_flushed: Callable[[FlushReport, Batch], None] | None = None,
        consumer: Consumer | None = None,
    ) -> None:
        self.settings = settings
        self._on_flushed = on_flushed
        self.sinks = sinks
        self.metrics = sinks.metrics
        self.topic = settings.kafka_topic
        self.policy = BatchPolicy(settings.batch_max_records, settings.batch_max_wait_ms / 1000.0)
        self.flow = FlowControl(settings.worker_queue_max_records)
        self.partitions: dict[int, PartitionState] = {}
        self.stats = LoopStats()
        self._stop = threading.Event()
        self._fresh: list[int] = []
        self._last_commit = 0.0
        self._consumer = consumer or Consumer(
            {**consumer_config(settings), "on_commit": self._on_commit, "error_cb": self._on_error}
        )

    # --- lifecycle ------------------------------------------------------------------------

    def request_stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        self._consumer.subscribe(
            [self.topic],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        log.info(
            "consumer started", extra={"topic": self.topic, "group": self.settings.kafka_group_id}
        )
        try:
            while not self._stop.is_set():
                # consume() waits for a full batch or the timeout: keep the timeout short so a
                # trickle of messages is not held back (it adds straight to e2e latency).
                messages = self._consumer.consume(
                    self.settings.poll_batch_size, timeout=POLL_TIMEOUT_S
                )
                self.stats.last_poll_at = time.monotonic()
                if self._fresh:
                    self._resume_fresh()
                if messages:
                    if not self.sinks.dependencies.is_up("kafka"):
                        self.sinks.dependencies.report("kafka", True)
                    self._dispatch(messages)
                self._check_workers()
                self._flow_control()
                self._commit_flushed()
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        """Stop fetching, let every worker flush, commit what was flushed, leave the group."""
        deadline = time.monotonic() + self.settings.shutdown_timeout_s
        tps = [TopicPartition(self.topic, p) for p in self.partitions]
        if tps:
            try:
                self._consumer.pause(tps)
            except KafkaException as exc:
                log.warning("pause on shutdown failed: %s", exc)
        for state in self.partitions.values():
            state.worker.stop()
        while time.monotonic() < deadline and any(s.worker.alive for s in self.partitions.values()):
            # Keep serving callbacks (commits, rebalances) while workers flush.
            self._consumer.consume(1, timeout=0.1)
            self._commit_flushed()
        for p, state in self.partitions.items():
            if state.worker.alive:
                log.error(
                    "worker did not flush before the shutdown timeout; its batch is "
                    "left uncommitted and will be re-read",
                    extra={"partition": p},
                )
                state.worker.abandon()
        self._commit_sync(list(self.partitions))
        self._consumer.close()  # leaves the group; on_revoke finds nothing left to flush
        log.info("consumer closed")

    # --- polling --------------------------------------------------------------------------

    def _dispatch(self, messages: list[Message]) -> None:
        by_partition: dict[int, list[PendingMessage]] = defaultdict(list)
        max_readings = self.settings.max_readings_per_message
        records = unkeyed = 0
        for msg in messages:
            err = msg.error()
            if err is not None:
                self._on_error(err)
                continue
            partition, offset = msg.partition(), msg.offset()
            if partition is None or offset is None:  # only error events lack them
                continue
            pending = decode(offset, msg.timestamp()[1], msg.key(), msg.value(), max_readings)
            by_partition[partition].append(pending)
            records += len(pending.records)
            unkeyed += pending.unkeyed
        self.metrics.messages_consumed.inc(len(messages))
        self.metrics.records_consumed.inc(records)
        if unkeyed:
            self.metrics.unkeyed_messages.inc(unkeyed)
        for partition, batch in by_partition.items():
            state = self.partitions.get(partition)
            if state is None:  # fetched just before a revoke: the next owner re-reads it
                continue
            state.worker.enqueue(batch)

    def _check_workers(self) -> None:
        for p, state in self.partitions.items():
            if not state.worker.alive:
                raise RuntimeError(f"worker for partition {p} died; see the log above")

    def _flow_control(self) -> None:
        for p, state in self.partitions.items():
            queued = state.worker.queued_records
            if not state.paused and self.flow.should_pause(queued):
                self._consumer.pause([TopicPartition(self.topic, p)])
                state.paused = True
                self.metrics.pauses.inc()
                log.info("partition paused", extra={"partition": p, "queued_records": queued})
            elif state.paused and self.flow.should_resume(queued):
                self._consumer.resume([TopicPartition(self.topic, p)])
                state.paused = False
                log.info("partition resumed", extra={"partition": p, "queued_records": queued})

    def _resume_fresh(self) -> None:
        """A newly assigned partition must fetch even if librdkafka kept an old pause flag."""
        fresh = [TopicPartition(self.topic, p) for p in self._fresh if p in self.partitions]
        self._fresh = []
        if fresh:
            self._consumer.resume(fresh)

    # --- commits --------------------------------------------------------------------------

    def _due_offsets(self, partitions: list[int] | None = None) -> list[TopicPartition]:
        due = []
        for p in partitions if partitions is not None else list(self.partitions):
            state = self.partitions.get(p)
            if state is None:
                continue
            flushed = state.worker.flushed_offset
            if flushed is None or flushed == state.committed or flushed == state.requested:
                continue
            due.append(TopicPartition(self.topic, p, flushed))
        return due

    def _commit_flushed(self) -> None:
        now = time.monotonic()
        if now - self._last_commit < COMMIT_INTERVAL_S:
            return
        self._last_commit = now
        due = self._due_offsets()
        if not due:
            return
        for tp in due:
            self.partitions[tp.partition].requested = tp.offset
        try:
            self._consumer.commit(offsets=due, asynchronous=True)
        except KafkaException as exc:
            self._commit_failed(due, exc)

    def _commit_sync(self, partitions: list[int]) -> None:
        due = self._due_offsets(partitions)
        if not due:
            return
        try:
            result = self._consumer.commit(offsets=due, asynchronous=False)
        except KafkaException as exc:
            self._commit_failed(due, exc)
            return
        self._on_commit(None, result or due)

    def _commit_failed(self, tps: list[TopicPartition], exc: object) -> None:
        self.metrics.commits.labels("failed").inc()
        log.warning("offset commit failed: %s", exc)
        for tp in tps:
            state = self.partitions.get(tp.partition)
            if state is not None:
                state.requested = None

    def _on_commit(self, err: KafkaError | None, tps: list[TopicPartition]) -> None:
        if err is not None and err.code() == KafkaError._NO_OFFSET:
            return
        if err is not None:
            self._commit_failed(tps, err)
            return
        self.metrics.commits.labels("ok").inc()
        self.stats.last_commit_at = time.time()
        for tp in tps:
            state = self.partitions.get(tp.partition)
            if state is None or tp.offset == OFFSET_INVALID:
                continue
            if tp.error is not None:
                self._commit_failed([tp], tp.error)
                continue
            if state.committed is None or tp.offset > state.committed:
                state.committed = tp.offset
            if state.requested is not None and state.requested <= tp.offset:
                state.requested = None

    # --- rebalance callbacks (run inside consume(), on this thread) ------------------------

    def _on_assign(self, _consumer: Consumer, tps: list[TopicPartition]) -> None:
        self.metrics.rebalances.labels("assign").inc()
        self.stats.joined = True
        for tp in tps:
            if tp.topic != self.topic or tp.partition in self.partitions:
                continue
            worker = PartitionWorker(tp.partition, self.sinks, self.policy, self._on_flushed)
            worker.start()
            self.partitions[tp.partition] = PartitionState(worker)
            self._fresh.append(tp.partition)
        log.info(
            "partitions assigned",
            extra={"partitions": [tp.partition for tp in tps], "owned": sorted(self.partitions)},
        )

    def _on_revoke(self, _consumer: Consumer, tps: list[TopicPartition]) -> None:
        """Flush what the workers hold (bounded), commit it synchronously, stop them."""
        self.metrics.rebalances.labels("revoke").inc()
        revoked = [tp.partition for tp in tps if tp.partition in self.partitions]
        for p in revoked:
            self.partitions[p].worker.stop()
        deadline = time.monotonic() + self.settings.revoke_flush_timeout_s
        for p in revoked:
            worker = self.partitions[p].worker
            if not worker.join(max(0.0, deadline - time.monotonic())):
                log.warning(
                    "revoke flush timed out; uncommitted records will be re-read by the next owner",
                    extra={"partition": p},
                )
                worker.abandon()
        self._commit_sync(revoked)
        self._forget(revoked)
        log.info(
            "partitions revoked", extra={"partitions": revoked, "owned": sorted(self.partitions)}
        )

    def _on_lost(self, _consumer: Consumer, tps: list[TopicPartition]) -> None:
        """Someone else owns these now: drop buffers, commit nothing."""
        self.metrics.rebalances.labels("lost").inc()
        lost = [tp.partition for tp in tps if tp.partition in self.partitions]
        for p in lost:
            self.partitions[p].worker.abandon()
        self._forget(lost)
        log.warning("partitions lost", extra={"partitions": lost})

    def _forget(self, partitions: list[int]) -> None:
        for p in partitions:
            self.partitions.pop(p, None)

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            log.critical("fatal kafka error: %s", err)
            self.sinks.dependencies.report("kafka", False, str(err))
            self._stop.set()
            return
        if err.code() in (KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError._RESOLVE):
            self.sinks.dependencies.report("kafka", False, str(err))
        log.warning("kafka error: %s", err)
