"""The one thread that owns the Kafka consumer: poll, intake, dispatch, pause, commit.

Commit policy: a partition's offset is committed only up to its worker's `flushed_offset`,
which a worker advances after the DB transaction committed and every dead letter was
acknowledged (`offsets.CommitBook` keeps the bookkeeping). Auto-commit and the offset
store are off, so no other path can commit.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

from confluent_kafka import OFFSET_INVALID, KafkaError, KafkaException, Message, TopicPartition

from consumer import __version__
from consumer.dependencies import Dependencies
from consumer.pipeline.batching import PendingMessage
from consumer.pipeline.flow_control import FlowControl
from consumer.pipeline.intake import DeviceClock, read_message
from consumer.pipeline.ledger import Ledger
from consumer.pipeline.offsets import CommitBook
from consumer.pipeline.reasons import DeadLetterReason
from consumer.pipeline.view import LoopView, PartitionView
from consumer.pipeline.worker import PartitionWorker
from consumer.settings import Settings

log = logging.getLogger(__name__)

COMMIT_INTERVAL_S = 0.2
POLL_TIMEOUT_S = 0.02

WorkerFactory = Callable[[int], PartitionWorker]
CommitCallback = Callable[[KafkaError | None, list[TopicPartition]], None]
ErrorCallback = Callable[[KafkaError], None]
# Builds the consumer with the loop's callbacks; tests pass one returning an in-memory fake.
ConsumerFactory = Callable[[CommitCallback, ErrorCallback], Any]


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
        # A fetch waits for 64 KB or 10 ms: at a steady few thousand readings/s that is
        # ~100 fetches/s instead of one per produced batch (less broker CPU per reading,
        # docs/performance.md), for at most 10 ms of added latency.
        "fetch.wait.max.ms": 10,
        "fetch.min.bytes": 65_536,
        # librdkafka's prefetch buffer (64 MB by default) is most of a replica's memory
        # during a drain; 16 MB still holds several seconds of readings at full speed.
        "queued.max.messages.kbytes": 16_384,
        **settings.kafka_client,
    }


class WorkerFailed(Exception):
    """A worker stopped on a fault it could not pin on any row: the replica must restart."""


class KafkaFatal(Exception):
    """librdkafka reported a fatal error (e.g. a fenced static member): the consumer is
    unusable, so the replica exits non-zero and the orchestrator restarts it."""


@dataclass(slots=True)
class _Owned:
    """The poll thread's state of one assigned partition."""

    worker: PartitionWorker
    paused: bool = False


class PollLoop:
    def __init__(
        self,
        settings: Settings,
        new_worker: WorkerFactory,
        ledger: Ledger,
        dependencies: Dependencies,
        make_consumer: ConsumerFactory | None = None,
    ) -> None:
        self.settings = settings
        self.topic = settings.kafka_topic
        self._new_worker = new_worker
        self._ledger = ledger
        self._deps = dependencies
        self._flow = FlowControl(settings.worker_queue_max_records, settings.worker_queue_max_bytes)
        self._clock = DeviceClock(ZoneInfo(settings.device_timezone))
        # Every commit says which zone the group's readings without a time were stored in:
        # a replica with another zone refuses to start (startup.check_group_zone).
        self._commit_metadata = zone_metadata(settings.device_timezone)
        self._future_horizon = timedelta(seconds=settings.future_timestamp_horizon_s)
        self._book = CommitBook(COMMIT_INTERVAL_S)
        self._owned: dict[int, _Owned] = {}
        self._stop = threading.Event()
        self._fresh: list[int] = []
        self._joined = False
        self._last_poll_at = time.monotonic()
        self._last_commit_at = 0.0
        self._failed: str | None = None
        self._fatal: str | None = None
        self._stop_deadline: float | None = None  # monotonic; set by request_stop
        self._phase = "starting"
        make = make_consumer or (
            lambda on_commit, on_error: _kafka_consumer(settings, on_commit, on_error)
        )
        self._consumer = make(self._on_commit, self._on_error)

    # --- lifecycle ------------------------------------------------------------------------

    def request_stop(self, deadline: float | None = None) -> None:
        """Stop consuming; the workers' drain ends by `deadline` (monotonic) at the latest,
        else SHUTDOWN_TIMEOUT_S after the loop notices."""
        if deadline is not None:
            self._stop_deadline = deadline
        self._stop.set()

    def run(self) -> None:
        """Consume until asked to stop; raise WorkerFailed if a worker died on a bug."""
        self._consumer.subscribe(
            [self.topic],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        log.info(
            "consumer started", extra={"topic": self.topic, "group": self.settings.kafka_group_id}
        )
        self._last_poll_at = time.monotonic()
        self._phase = "running"
        try:
            while not self._stop.is_set():
                # consume() waits for a full batch or the timeout: keep the timeout short so a
                # trickle of messages is not held back (it adds straight to e2e latency).
                messages = self._consumer.consume(
                    self.settings.poll_batch_size, timeout=POLL_TIMEOUT_S
                )
                self._last_poll_at = time.monotonic()
                if self._fresh:
                    self._resume_fresh()
                if messages:
                    if not self._deps.is_up("kafka"):
                        self._deps.report("kafka", True)
                    self._dispatch(messages)
                self._check_workers()
                self._flow_control()
                self._commit_flushed()
        finally:
            self._shutdown()
        if self._failed is not None:
            raise WorkerFailed(self._failed)
        if self._fatal is not None:
            raise KafkaFatal(self._fatal)

    def _shutdown(self) -> None:
        """Stop fetching, let every worker flush, commit what was flushed, leave the group."""
        self._phase = "stopping"
        deadline = self._stop_deadline or time.monotonic() + self.settings.shutdown_timeout_s
        tps = [TopicPartition(self.topic, p) for p in self._owned]
        if tps:
            try:
                self._consumer.pause(tps)
            except KafkaException as exc:
                log.warning("pause on shutdown failed: %s", exc)
        for owned in self._owned.values():
            owned.worker.stop()
        while time.monotonic() < deadline and any(o.worker.alive for o in self._owned.values()):
            # Keep serving callbacks (commits, rebalances) while workers flush.
            self._consumer.consume(1, timeout=0.1)
            self._commit_flushed()
        for p, owned in self._owned.items():
            if owned.worker.alive:
                log.error(
                    "worker did not flush before the shutdown timeout; its batch is "
                    "left uncommitted and will be re-read",
                    extra={"partition": p},
                )
                owned.worker.abandon()
        self._commit_sync(list(self._owned))
        # Forget them now: close() runs on_revoke, which must not wait on them a second time.
        self._forget(list(self._owned))
        self._consumer.close()  # leaves the group; on_revoke finds nothing left to flush
        log.info("consumer closed")

    # --- the published view -----------------------------------------------------------------

    def view(self) -> LoopView:
        """A copy of what observers may know; safe to call from any thread."""
        partitions = {}
        for p, owned in list(self._owned.items()):
            w = owned.worker
            partitions[p] = PartitionView(
                partition=p,
                queued_records=w.queued_records,
                paused=owned.paused,
                flushed_offset=w.flushed_offset,
                committed_offset=self._book.committed(p),
                oldest_pending_timestamp_ms=w.oldest_pending_timestamp_ms(),
                counters=self._ledger.partition(p),
            )
        return LoopView(
            phase=self._phase,
            joined=self._joined,
            last_poll_at=self._last_poll_at,
            last_commit_at=self._last_commit_at,
            failed=self._failed,
            partitions=partitions,
        )

    # --- polling --------------------------------------------------------------------------

    def _dispatch(self, messages: list[Message]) -> None:
        by_partition: dict[int, list[PendingMessage]] = defaultdict(list)
        max_readings = self.settings.max_readings_per_message
        max_bytes = self.settings.max_message_bytes
        records = unkeyed = from_kafka = 0
        for msg in messages:
            err = msg.error()
            if err is not None:
                self._on_error(err)
                continue
            partition, offset = msg.partition(), msg.offset()
            if partition is None or offset is None:  # only error events lack them
                continue
            pending = read_message(
                offset,
                msg.timestamp()[1],
                msg.key(),
                msg.value(),
                max_readings,
                max_bytes,
                self._clock,
                self._future_horizon,
            )
            headers: Any = msg.headers()  # None for a gateway's message: cheap to ask
            if headers:
                pending.carried = tuple(
                    (str(k), bytes(v))
                    for k, v in headers
                    if str(k).startswith("replay.") and isinstance(v, bytes)
                )
            by_partition[partition].append(pending)
            records += len(pending.records)
            unkeyed += pending.unkeyed
            from_kafka += pending.timestamps_from_kafka
            if (
                pending.dead_letter is not None
                and pending.dead_letter.reason is DeadLetterReason.UNDECODABLE
            ):
                log.error(
                    "decoder failed unexpectedly; message dead-lettered",
                    extra={
                        "partition": partition,
                        "offset": offset,
                        "error": pending.dead_letter.detail[:300],
                    },
                )
        self._ledger.consumed(len(messages), records, unkeyed, from_kafka)
        for partition, batch in by_partition.items():
            owned = self._owned.get(partition)
            if owned is None:  # fetched just before a revoke: the next owner re-reads it
                continue
            owned.worker.enqueue(batch)

    def _check_workers(self) -> None:
        for p, owned in self._owned.items():
            if owned.worker.alive:
                continue
            failure = owned.worker.failure or "worker thread ended unexpectedly"
            self._failed = f"partition {p}: {failure}"
            log.critical(
                "worker failed on a fault no row explains; stopping the replica so the "
                "orchestrator restarts it (its uncommitted batch will be re-read)",
                extra={"partition": p, "failure": failure},
            )
            self._stop.set()
            return

    def _flow_control(self) -> None:
        for p, owned in self._owned.items():
            queued, nbytes = owned.worker.queued_records, owned.worker.queued_bytes
            if not owned.paused and self._flow.should_pause(queued, nbytes):
                self._consumer.pause([TopicPartition(self.topic, p)])
                owned.paused = True
                self._ledger.paused()
                log.info("partition paused", extra={"partition": p, "queued_records": queued})
            elif owned.paused and self._flow.should_resume(queued, nbytes):
                self._consumer.resume([TopicPartition(self.topic, p)])
                owned.paused = False
                log.info("partition resumed", extra={"partition": p, "queued_records": queued})

    def _resume_fresh(self) -> None:
        """A newly assigned partition must fetch even if librdkafka kept an old pause flag."""
        fresh = [TopicPartition(self.topic, p) for p in self._fresh if p in self._owned]
        self._fresh = []
        if fresh:
            self._consumer.resume(fresh)

    # --- commits --------------------------------------------------------------------------

    def _flushed(self) -> dict[int, int | None]:
        return {p: o.worker.flushed_offset for p, o in self._owned.items()}

    def _commit_flushed(self) -> None:
        if not self._book.is_time(time.monotonic()):
            return
        due = self._book.due(self._flushed())
        if not due:
            return
        self._book.requested(due)
        tps = self._offsets(due)
        try:
            self._consumer.commit(offsets=tps, asynchronous=True)
        except KafkaException as exc:
            self._commit_failed(tps, exc)

    def _commit_sync(self, partitions: list[int]) -> None:
        due = self._book.due(self._flushed(), only=partitions)
        if not due:
            return
        tps = self._offsets(due)
        try:
            result = self._consumer.commit(offsets=tps, asynchronous=False)
        except KafkaException as exc:
            self._commit_failed(tps, exc)
            return
        self._on_commit(None, result or tps)

    def _offsets(self, due: dict[int, int]) -> list[TopicPartition]:
        """The offsets to commit, each carrying the group's zone (see zone_metadata)."""
        meta = self._commit_metadata
        return [TopicPartition(self.topic, p, o, metadata=meta) for p, o in due.items()]

    def _commit_failed(self, tps: list[TopicPartition], exc: object) -> None:
        self._ledger.committed(False)
        log.warning("offset commit failed: %s", exc)
        for tp in tps:
            self._book.failed(tp.partition)

    def _on_commit(self, err: KafkaError | None, tps: list[TopicPartition]) -> None:
        if err is not None and err.code() == KafkaError._NO_OFFSET:
            return
        if err is not None:
            self._commit_failed(tps, err)
            return
        self._ledger.committed(True)
        self._last_commit_at = time.time()
        for tp in tps:
            if tp.offset == OFFSET_INVALID:
                continue
            if tp.error is not None:
                self._commit_failed([tp], tp.error)
                continue
            self._book.acknowledged(tp.partition, tp.offset)

    # --- rebalance callbacks (run inside consume(), on this thread) ------------------------

    def _on_assign(self, _consumer: Any, tps: list[TopicPartition]) -> None:
        self._ledger.rebalanced("assign")
        self._joined = True
        for tp in tps:
            if tp.topic != self.topic or tp.partition in self._owned:
                continue
            worker = self._new_worker(tp.partition)
            worker.start()
            self._owned[tp.partition] = _Owned(worker)
            self._book.assign(tp.partition)
            self._fresh.append(tp.partition)
        log.info(
            "partitions assigned",
            extra={"partitions": [tp.partition for tp in tps], "owned": sorted(self._owned)},
        )

    def _on_revoke(self, _consumer: Any, tps: list[TopicPartition]) -> None:
        """Flush what the workers hold (bounded), commit it synchronously, stop them."""
        self._ledger.rebalanced("revoke")
        revoked = [tp.partition for tp in tps if tp.partition in self._owned]
        for p in revoked:
            self._owned[p].worker.stop()
        deadline = time.monotonic() + self.settings.revoke_flush_timeout_s
        for p in revoked:
            worker = self._owned[p].worker
            if not worker.join(max(0.0, deadline - time.monotonic())):
                log.warning(
                    "revoke flush timed out; uncommitted records will be re-read by the next owner",
                    extra={"partition": p},
                )
                worker.abandon()
        self._commit_sync(revoked)
        self._forget(revoked)
        log.info("partitions revoked", extra={"partitions": revoked, "owned": sorted(self._owned)})

    def _on_lost(self, _consumer: Any, tps: list[TopicPartition]) -> None:
        """Someone else owns these now: drop buffers, commit nothing."""
        self._ledger.rebalanced("lost")
        lost = [tp.partition for tp in tps if tp.partition in self._owned]
        for p in lost:
            self._owned[p].worker.abandon()
        self._forget(lost)
        log.warning("partitions lost", extra={"partitions": lost})

    def _forget(self, partitions: list[int]) -> None:
        for p in partitions:
            self._owned.pop(p, None)
            self._book.forget(p)

    def _on_error(self, err: KafkaError) -> None:
        # error_cb reports a fatal error as code _FATAL without the fatal() flag set.
        if err.fatal() or err.code() == KafkaError._FATAL:
            log.critical("fatal kafka error: %s", err)
            self._deps.report("kafka", False, str(err))
            self._fatal = str(err)
            self._stop.set()
            return
        if err.code() in (KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError._RESOLVE):
            self._deps.report("kafka", False, str(err))
        log.warning("kafka error: %s", err)


ZONE_METADATA_PREFIX = "device_timezone="


def zone_metadata(zone: str) -> str:
    """The committed-offset metadata of this group: the zone of its fallback times."""
    return ZONE_METADATA_PREFIX + zone


def _kafka_consumer(settings: Settings, on_commit: CommitCallback, on_error: ErrorCallback) -> Any:
    from confluent_kafka import Consumer

    return Consumer({**consumer_config(settings), "on_commit": on_commit, "error_cb": on_error})
