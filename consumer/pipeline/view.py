"""The read-only picture of the pipeline that every observer reads, and nothing else.

`PollLoop.view()` builds it on demand from any thread: the sidecar, the Prometheus
collector and the monitor never reach into the poll loop's or the workers' internals, so
those can change without breaking observation. Every field is a copy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from consumer.pipeline.ledger import PartitionCounters


@dataclass(frozen=True, slots=True)
class PartitionView:
    partition: int
    queued_records: int  # consumed, not yet flushed (the bounded queue's fill)
    paused: bool  # paused for backpressure
    flushed_offset: int | None  # next offset to commit: everything before it is durable
    committed_offset: int | None  # last offset the broker acknowledged for this replica
    oldest_pending_timestamp_ms: int | None  # Kafka timestamp of the oldest unflushed message
    counters: PartitionCounters


@dataclass(frozen=True, slots=True)
class LoopView:
    phase: str  # "starting" (waiting for dependencies), "running", "stopping"
    joined: bool  # assigned partitions at least once
    last_poll_at: float  # monotonic time of the last turn of the poll loop (liveness)
    last_commit_at: float  # wall-clock time of the last acknowledged commit
    failed: str | None = None  # why the replica is going down on a bug, if it is
    partitions: Mapping[int, PartitionView] = field(default_factory=dict)
