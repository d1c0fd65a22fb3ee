"""The sink protocol: what the flush needs to know of a place a batch is written to.

A sink writes a batch (`write_batch`), says how its failures classify (`classify`, into
`sinks.errors`), whether the offset waits for it (`policy`), what must be up before the
replica consumes (`ready`), how its dependency is probed (`health`) and how it closes.
The flush runs the sinks in `order`; service, start-up, health and metrics iterate the
same list, so a new sink is one module with a `build_sink(context)` function in this
package (`sinks.chain.discover` finds it) and no change anywhere else.

`Policy.REQUIRED`: the offset is committed only once the sink has the batch; a retryable
failure is retried forever, a row fault or bug is bisected down to the row.
`Policy.BEST_EFFORT`: any failure is logged and counted (the batch counts as skipped by
the sink) and the flush goes on: a cache, never the record of what happened.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from consumer.health_alerts.rules import Alert
from consumer.pipeline.batching import PendingMessage
from consumer.pipeline.reasons import DeadLetterReason
from consumer.sinks.errors import SinkError, fault_of
from schemas.record import HealthRecord

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from consumer.dependencies import Dependencies
    from consumer.settings import Settings


class Abandoned(Exception):
    """The worker was told to give up (revoke timeout, lost partition, hard shutdown)."""


class Policy(StrEnum):
    REQUIRED = "required"
    BEST_EFFORT = "best_effort"


# Where a sink runs in the flush: stores of record first (their row faults decide what is
# dead-lettered), then outputs that follow them, then the dead letters (every row fault is
# known by then), then caches.
ORDER_STORE = 100
ORDER_OUTPUT = 200
ORDER_DEAD_LETTERS = 300
ORDER_CACHE = 400


@dataclass(slots=True)
class Letter:
    """One dead letter of the batch; `delivery` is the dead-letter sink's handle on it."""

    message: PendingMessage
    reason: DeadLetterReason
    detail: str
    delivery: Any = None


@dataclass(slots=True)
class SinkBatch:
    """What one sink is handed: the batch's readings still standing, in offset order."""

    source_topic: str
    partition: int
    records: list[HealthRecord]
    alerts: list[Alert] = field(default_factory=list)  # fired by the rules on `records`
    new_alerts: list[Alert] = field(default_factory=list)  # stored now for the first time
    letters: list[Letter] = field(default_factory=list)
    cancel: threading.Event = field(default_factory=threading.Event)  # set: raise Abandoned


@dataclass(slots=True)
class SinkResult:
    written: int = 0  # readings the sink took (inserted, for a store that finds duplicates)
    duplicates: int = 0  # readings it already had
    new_alerts: list[Alert] = field(default_factory=list)  # alerts it stored first
    refused: int = 0  # items refused alone (a Redis key): counted, the batch is not failed
    skipped: bool = False  # a best-effort sink did not take the batch


@dataclass(frozen=True, slots=True)
class SinkContext:
    """What a sink's `build_sink` may use to build itself."""

    settings: Settings
    engine: Engine
    dependencies: Dependencies


class Sink(Protocol):
    name: str  # metrics label and log field
    dependency: str  # what health reports it on ("mysql", "redis", "kafka")
    policy: Policy
    order: int

    def write_batch(self, batch: SinkBatch) -> SinkResult:
        """Write the batch; raise a `SinkError` (or anything: a bug)."""
        ...

    def classify(self, err: Exception) -> SinkError: ...

    def ready(self) -> str | None:
        """What keeps the sink from taking batches now (start-up waits), or None."""
        ...

    def health(self) -> tuple[bool, str | None] | None:
        """Probe the dependency: (up, error), or None when another part watches it."""
        ...

    def stats(self) -> Mapping[str, int]:
        """Lifetime counters of the sink's own events, exported by name."""
        ...

    def close(self, timeout_s: float) -> None: ...


class SinkBase:
    """Defaults for the optional parts of the protocol."""

    name: str
    dependency: str
    policy: Policy
    order: int

    def classify(self, err: Exception) -> SinkError:
        return fault_of(err)

    def ready(self) -> str | None:
        return None

    def health(self) -> tuple[bool, str | None] | None:
        return None

    def stats(self) -> Mapping[str, int]:
        return {}

    def close(self, timeout_s: float) -> None:
        return None
