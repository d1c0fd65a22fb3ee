"""Burrow-style consumer lag evaluation per partition (pure: callers pass the clock in).

A raw lag number cannot tell a busy consumer from a dead one, so, like LinkedIn's Burrow,
we judge the *shape* of a sliding window of (committed offset, high watermark) samples.

Definitions:

* lag = high_watermark - committed, never negative. A group that has committed nothing
  (committed None) counts as position 0; that over-reports lag on a compacted or
  retention-trimmed topic, but it is never mistaken for "caught up".
* progress = the committed offset changed, or the consumer was fully caught up (lag 0).
  Counting "caught up" as progress stops an idle partition that just received its first
  message in hours from looking stopped: with no work there was nothing to commit.
* progress_at = the latest progress: the later of the last commit change (the first sample
  ever seen if the offset never changed) and the newest in-window sample with lag 0.

Statuses, first match wins:

1. REWIND - the committed offset went backwards between two consecutive samples in the
   window (a reset or a replica committing stale offsets); it wins over everything because
   it means records are reprocessed.
2. OK     - no samples, or the newest sample has lag 0.
3. STOP   - ``now - progress_at > window_s``: no progress for longer than the whole window.
4. STALL  - ``newest.at - progress_at >= window_s / 2``: the samples since the last progress
   span at least half the window with the offset frozen and work waiting. Half the window
   flags a hung worker well before STOP while still bridging a slow batch flush.
5. WARN   - at least 3 samples, the committed offset moved across the window, yet the lag
   never decreased (each sample's lag >= the previous): the consumer runs but falls behind.
6. OK     - otherwise.

STOP is measured against ``now`` (it escalates even if sampling itself falls behind); STALL
is measured on the samples, because it is a statement about what the samples show.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum


class LagStatus(StrEnum):
    OK = "OK"
    WARN = "WARN"
    STALL = "STALL"
    STOP = "STOP"
    REWIND = "REWIND"


@dataclass(frozen=True, slots=True)
class LagSample:
    at: float
    committed: int | None
    high_watermark: int

    @property
    def lag(self) -> int:
        """Clamped at 0: a watermark read before the commit it races with is not negative lag."""
        return max(0, self.high_watermark - (self.committed or 0))


def _position(sample: LagSample) -> int:
    return sample.committed if sample.committed is not None else 0


def classify_lag(
    samples: Sequence[LagSample],
    now: float,
    window_s: float,
    last_commit_change_at: float | None,
) -> LagStatus:
    """Classify a time-ordered window; see the module docstring for the rules.

    ``last_commit_change_at`` may predate the window (the caller remembers it across trimming);
    None means "unknown", and the window's first sample stands in for it.
    """
    if not samples:
        return LagStatus.OK
    pairs = list(itertools.pairwise(samples))
    if any(_position(b) < _position(a) for a, b in pairs):
        return LagStatus.REWIND
    newest = samples[-1]
    if newest.lag == 0:
        return LagStatus.OK

    progress_at = last_commit_change_at if last_commit_change_at is not None else samples[0].at
    for a, b in pairs:
        if b.committed != a.committed:
            progress_at = max(progress_at, b.at)
    for s in samples:
        if s.lag == 0:
            progress_at = max(progress_at, s.at)

    if now - progress_at > window_s:
        return LagStatus.STOP
    if newest.at - progress_at >= window_s / 2:
        return LagStatus.STALL
    if (
        len(samples) >= 3
        and _position(newest) > _position(samples[0])
        and all(b.lag >= a.lag for a, b in pairs)
    ):
        return LagStatus.WARN
    return LagStatus.OK


class LagWindow:
    """Sliding window of samples for one partition.

    Keeps, beyond the window, the time of the last commit change and of the first sample, so
    STOP can be detected for a consumer frozen for longer than the window itself.
    """

    __slots__ = ("_first_at", "_last_change_at", "_last_committed", "_samples", "_window_s")

    def __init__(self, window_s: float = 300.0, max_samples: int = 1000) -> None:
        if window_s <= 0:
            raise ValueError("window_s must be > 0")
        if max_samples < 1:
            raise ValueError("max_samples must be >= 1")
        self._window_s = window_s
        self._samples: deque[LagSample] = deque(maxlen=max_samples)
        self._first_at: float | None = None
        self._last_change_at: float | None = None
        self._last_committed: int | None = None

    def add(self, sample: LagSample) -> None:
        """Append and trim to ``window_s`` before the newest sample.

        A sample older than the newest one (a clock step backwards) is ignored: the rules
        assume time order, and one lost sample costs less than a misordered window.
        """
        if self._samples and sample.at < self._samples[-1].at:
            return
        if self._first_at is None:
            self._first_at = sample.at
        elif sample.committed != self._last_committed:
            self._last_change_at = sample.at
        self._last_committed = sample.committed
        self._samples.append(sample)
        horizon = sample.at - self._window_s
        while self._samples[0].at < horizon:
            self._samples.popleft()

    def samples(self) -> list[LagSample]:
        return list(self._samples)

    def last_commit_change_at(self) -> float | None:
        """None until the committed offset has changed at least once since the first sample."""
        return self._last_change_at

    def status(self, now: float) -> LagStatus:
        since = self._last_change_at if self._last_change_at is not None else self._first_at
        return classify_lag(list(self._samples), now, self._window_s, since)
