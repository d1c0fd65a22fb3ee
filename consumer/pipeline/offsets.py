"""Commit bookkeeping (pure): which offsets are due, in flight, and acknowledged.

The poll thread is the only committer. Per partition it knows three offsets: what the
worker made durable (`flushed`, read from the worker), what it asked the broker to commit
(`requested`, an async commit in flight) and what the broker acknowledged (`committed`).
An offset is due when it is flushed but neither committed nor already requested, so a
partition is never committed beyond its flushed offset and never committed twice at once.
Like arroyo's CommitPolicy, the "how often" decision is a pure function of the clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(slots=True)
class PartitionOffsets:
    committed: int | None = None  # last offset the broker acknowledged
    requested: int | None = None  # an async commit of this offset is in flight


class CommitBook:
    """Offsets of the assigned partitions, and the commit interval policy."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._last_commit_at: float | None = None
        self._partitions: dict[int, PartitionOffsets] = {}

    # --- assignment ------------------------------------------------------------------------

    def assign(self, partition: int) -> None:
        self._partitions.setdefault(partition, PartitionOffsets())

    def forget(self, partition: int) -> None:
        self._partitions.pop(partition, None)

    def committed(self, partition: int) -> int | None:
        state = self._partitions.get(partition)
        return None if state is None else state.committed

    # --- policy ----------------------------------------------------------------------------

    def is_time(self, now: float) -> bool:
        """At most one async commit round per interval; the first call is always due."""
        if self._last_commit_at is not None and now - self._last_commit_at < self.interval_s:
            return False
        self._last_commit_at = now
        return True

    def due(
        self, flushed: Mapping[int, int | None], only: Iterable[int] | None = None
    ) -> dict[int, int]:
        """Flushed offsets not yet committed nor in flight, for assigned partitions."""
        out: dict[int, int] = {}
        for p in flushed if only is None else only:
            state = self._partitions.get(p)
            offset = flushed.get(p)
            if state is None or offset is None:
                continue
            if offset in (state.committed, state.requested):
                continue
            out[p] = offset
        return out

    # --- outcomes --------------------------------------------------------------------------

    def requested(self, offsets: Mapping[int, int]) -> None:
        for p, offset in offsets.items():
            state = self._partitions.get(p)
            if state is not None:
                state.requested = offset

    def acknowledged(self, partition: int, offset: int) -> None:
        """The broker stored `offset`; a late ack of an older commit never moves it back."""
        state = self._partitions.get(partition)
        if state is None:
            return
        if state.committed is None or offset > state.committed:
            state.committed = offset
        if state.requested is not None and state.requested <= offset:
            state.requested = None

    def failed(self, partition: int) -> None:
        """The commit in flight failed: the offset becomes due again on the next round."""
        state = self._partitions.get(partition)
        if state is not None:
            state.requested = None
