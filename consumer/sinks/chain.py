"""The ordered list of sinks a replica writes to, found in this package.

Every module of `consumer.sinks` may define `build_sink(context) -> Sink | None` (None:
not configured). `discover` imports them all and orders what they build, so adding a sink
touches no list anywhere: the flush, start-up, health, metrics and shutdown iterate this.
"""

from __future__ import annotations

import datetime as dt
import importlib
import pkgutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import consumer.sinks
from consumer.sinks.base import ORDER_DEAD_LETTERS, Policy, Sink, SinkContext
from schemas.record import HealthRecord


@runtime_checkable
class History(Protocol):
    """A store that can give back a device's recent readings (trend runs are rebuilt
    from it after a rebalance)."""

    dependency: str

    def recent_readings(
        self, first_seen: dict[str, dt.datetime], per_device: int
    ) -> list[HealthRecord]: ...


@dataclass(frozen=True, slots=True)
class Sinks:
    """Where a flush writes, shared by all workers of a replica, in flush order."""

    topic: str  # the source topic, named in dead-letter headers
    chain: tuple[Sink, ...]

    def __post_init__(self) -> None:
        check_order(self.chain)

    def __iter__(self) -> Iterator[Sink]:
        return iter(self.chain)

    @property
    def history(self) -> History | None:
        return next((s for s in self.chain if isinstance(s, History)), None)


def check_order(chain: Sequence[Sink]) -> None:
    """Every required sink that can reject rows runs before the dead letters go out: a
    row a later sink refused would have nowhere to go."""
    orders = [s.order for s in chain]
    if orders != sorted(orders):
        raise ValueError(f"sinks out of order: {[s.name for s in chain]}")
    names = [s.name for s in chain]
    if len(set(names)) != len(names):
        raise ValueError(f"two sinks share a name: {names}")
    late = [s.name for s in chain if s.order > ORDER_DEAD_LETTERS and s.policy is Policy.REQUIRED]
    if late:
        raise ValueError(f"required sinks after the dead letters: {late}")


def discover(context: SinkContext) -> list[Sink]:
    """Build every sink this package defines and the settings enable, in flush order."""
    built: list[Sink] = []
    for info in sorted(pkgutil.iter_modules(consumer.sinks.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"consumer.sinks.{info.name}")
        build = getattr(module, "build_sink", None)
        if build is None:
            continue
        sink = build(context)
        if sink is not None:
            built.append(sink)
    return sorted(built, key=lambda s: s.order)
