"""One thread per assigned partition: inbox -> batch -> flush -> flushed offset.

The poll thread is the only one touching the Kafka consumer; a worker only publishes
`flushed_offset` (the next offset to commit, advanced after each durable flush) and
`queued_records` / `queued_bytes` (for backpressure): plain attributes the poll thread
reads.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

from consumer.pipeline.batching import Batch, BatchPolicy, PendingMessage
from consumer.pipeline.flush import Abandoned, Flusher

log = logging.getLogger(__name__)


class PartitionWorker:
    def __init__(self, partition: int, flusher: Flusher, policy: BatchPolicy) -> None:
        self.partition = partition
        self.policy = policy
        self.flushed_offset: int | None = None
        self.queued_records = 0
        self.queued_bytes = 0  # the messages' bytes, inbox + batch in flight
        self.failure: str | None = None  # set when the thread ended on a fault (a bug)
        self._inbox: deque[PendingMessage] = deque()
        self._batch = Batch(partition)
        self._cond = threading.Condition()
        self._stopping = False  # flush what is held, then exit
        self._flusher = flusher
        self._abandon = flusher.abandon  # exit now, flush nothing more
        self._thread = threading.Thread(target=self._run, name=f"worker-p{partition}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    # --- called by the poll thread --------------------------------------------------------

    def enqueue(self, messages: list[PendingMessage]) -> None:
        size = sum(m.weight for m in messages)
        nbytes = sum(m.nbytes for m in messages)
        with self._cond:
            self._inbox.extend(messages)
            self.queued_records += size
            self.queued_bytes += nbytes
            self._cond.notify()

    def stop(self) -> None:
        """Flush everything already enqueued, then exit (revoke, shutdown)."""
        with self._cond:
            self._stopping = True
            self._cond.notify()

    def abandon(self) -> None:
        """Exit as soon as possible without flushing or reporting anything more (lost)."""
        self._abandon.set()
        self.stop()

    def join(self, timeout: float | None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def oldest_pending_timestamp_ms(self) -> int | None:
        """Kafka timestamp of the oldest message consumed but not yet flushed (time lag)."""
        try:
            if self._batch.messages:
                return self._batch.messages[0].timestamp_ms
            if self._inbox:
                return self._inbox[0].timestamp_ms
        except IndexError:  # emptied by the worker between the check and the read
            pass
        return None

    # --- the worker thread ----------------------------------------------------------------

    def _run(self) -> None:
        batch = self._batch
        try:
            while not self._abandon.is_set():
                stopping, drained = self._fill(batch)
                if self._abandon.is_set():
                    return
                now = time.monotonic()
                if batch.messages and (stopping or self.policy.should_flush(batch, now, drained)):
                    self._flush(batch)
                    batch = self._batch = Batch(self.partition)
                elif stopping and not batch.messages:
                    with self._cond:
                        if not self._inbox:
                            return
        except Abandoned:
            log.info("worker abandoned its batch", extra={"partition": self.partition})
        except Exception as exc:
            # A bug outside the flush's isolation: stop this partition without committing.
            self.failure = f"{type(exc).__name__}: {exc}"
            log.exception("worker crashed", extra={"partition": self.partition})

    def _fill(self, batch: Batch) -> tuple[bool, bool]:
        """Move inbox messages into the batch until it is full or due.

        Returns (stopping, drained): drained means the inbox is empty, which an eager
        policy takes as the moment to flush instead of waiting for more.
        """
        with self._cond:
            while not self._inbox and not self._stopping and not self._abandon.is_set():
                wait = self.policy.seconds_until_due(batch, time.monotonic())
                if wait is not None and wait <= 0:
                    break
                self._cond.wait(wait)
            while self._inbox and not self.policy.full(batch):
                batch.add(self._inbox.popleft(), time.monotonic())
            return self._stopping, not self._inbox

    def _flush(self, batch: Batch) -> None:
        self._flusher.flush(batch)
        if self._abandon.is_set():
            raise Abandoned
        self.flushed_offset = batch.next_offset
        with self._cond:
            self.queued_records -= sum(m.weight for m in batch.messages)
            self.queued_bytes -= batch.byte_count
