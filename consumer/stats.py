"""Per-batch records, sliding-window rates and the periodic summary (log line + JSON file).

Workers call `record()` once per flush; the HTTP thread and the monitor read snapshots.
Everything is bounded: the last `keep` batches and a `window_s` of rate samples.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BatchStat:
    batch_id: int
    partition: int
    at: float
    size: int
    messages: int
    success: int
    duplicates: int
    errors: int
    total_s: float
    db_s: float
    redis_s: float
    alerts_s: float

    @property
    def throughput(self) -> float:
        return self.size / self.total_s if self.total_s > 0 else 0.0


class Stats:
    def __init__(
        self, window_s: float = 60.0, keep: int = 1000, clock: Callable[[], float] = time.time
    ) -> None:
        self.window_s = window_s
        self._clock = clock
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._recent: deque[BatchStat] = deque(maxlen=keep)
        self._since_summary: list[BatchStat] = []
        self.total_records = 0
        self.total_messages = 0
        self.total_errors = 0
        self.total_duplicates = 0
        self.total_batches = 0

    def record(
        self,
        *,
        partition: int,
        size: int,
        messages: int,
        success: int,
        duplicates: int,
        errors: int,
        total_s: float,
        db_s: float,
        redis_s: float,
        alerts_s: float,
    ) -> BatchStat:
        stat = BatchStat(
            next(self._ids), partition, self._clock(), size, messages, success, duplicates,
            errors, total_s, db_s, redis_s, alerts_s,
        )  # fmt: skip
        with self._lock:
            self._recent.append(stat)
            self._since_summary.append(stat)
            self.total_records += size
            self.total_messages += messages
            self.total_errors += errors
            self.total_duplicates += duplicates
            self.total_batches += 1
        return stat

    def _window(self, partition: int | None = None) -> list[BatchStat]:
        cutoff = self._clock() - self.window_s
        with self._lock:
            return [
                s for s in self._recent
                if s.at >= cutoff and (partition is None or s.partition == partition)
            ]  # fmt: skip

    def processing_rate(self, partition: int | None = None) -> float:
        """Records/s flushed over the sliding window (0 when idle, never a guess)."""
        window = self._window(partition)
        return sum(s.size for s in window) / self.window_s if window else 0.0

    def error_rate(self, partition: int | None = None) -> float:
        """Failed (dead-lettered or rejected) messages / messages over the window."""
        window = self._window(partition)
        messages = sum(s.messages for s in window)
        return sum(s.errors for s in window) / messages if messages else 0.0

    def recent(self, limit: int = 20, partition: int | None = None) -> list[dict[str, Any]]:
        with self._lock:
            chosen = [s for s in self._recent if partition is None or s.partition == partition]
        return [{**asdict(s), "throughput": round(s.throughput, 1)} for s in chosen[-limit:]]

    def totals(self) -> dict[str, Any]:
        with self._lock:
            return {
                "batches": self.total_batches,
                "records": self.total_records,
                "messages": self.total_messages,
                "errors": self.total_errors,
                "duplicates": self.total_duplicates,
            }

    def take_summary(self, interval_s: float) -> dict[str, Any]:
        """Summarize the batches since the previous call and start a new interval."""
        with self._lock:
            batches, self._since_summary = self._since_summary, []
        return summarize(batches, interval_s, self._clock())


def summarize(batches: list[BatchStat], interval_s: float, now: float) -> dict[str, Any]:
    records = sum(b.size for b in batches)
    messages = sum(b.messages for b in batches)
    times = [b.total_s for b in batches]
    throughputs = [b.throughput for b in batches]
    per_partition: dict[str, int] = {}
    for b in batches:
        per_partition[str(b.partition)] = per_partition.get(str(b.partition), 0) + b.size
    return {
        "at": now,
        "interval_s": interval_s,
        "batches": len(batches),
        "records": records,
        "records_per_s": round(records / interval_s, 1) if interval_s > 0 else 0.0,
        "success_rate": _ratio(sum(b.success for b in batches), records),
        "duplicate_rate": _ratio(sum(b.duplicates for b in batches), records),
        "error_rate": _ratio(sum(b.errors for b in batches), messages),
        "processing_time_s": {
            "avg": round(sum(times) / len(times), 4) if times else 0.0,
            "min": round(min(times), 4) if times else 0.0,
            "max": round(max(times), 4) if times else 0.0,
        },
        "throughput_records_per_s": {
            "avg": round(sum(throughputs) / len(throughputs), 1) if throughputs else 0.0,
            "max": round(max(throughputs), 1) if throughputs else 0.0,
        },
        "per_partition_records": dict(sorted(per_partition.items(), key=lambda kv: int(kv[0]))),
    }


def _ratio(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0


def write_atomically(path: str, payload: dict[str, Any]) -> None:
    """Readers never see a half-written file: write a temp file, then rename over."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".summary-", dir=directory)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(payload, fh, indent=2)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
