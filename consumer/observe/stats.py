"""Sliding-window rates and periodic summaries over the ledger's recent batches (pure).

The ledger keeps the batches; this module only computes, so the rates the sidecar shows
and the summary the monitor logs are unit-tested without threads or services.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from consumer.pipeline.ledger import BatchStat


def window(
    batches: Sequence[BatchStat], now: float, window_s: float, partition: int | None = None
) -> list[BatchStat]:
    cutoff = now - window_s
    return [
        b for b in batches if b.at >= cutoff and (partition is None or b.partition == partition)
    ]


def processing_rate(batches: Sequence[BatchStat], window_s: float) -> float:
    """Records/s over a window (0 when idle, never a guess)."""
    return sum(b.size for b in batches) / window_s if batches else 0.0


def error_rate(batches: Sequence[BatchStat]) -> float:
    """Failed (dead-lettered or rejected) messages / messages."""
    messages = sum(b.messages for b in batches)
    return sum(b.errors for b in batches) / messages if messages else 0.0


def as_rows(batches: Sequence[BatchStat], limit: int) -> list[dict[str, Any]]:
    return [{**asdict(b), "throughput": round(b.throughput, 1)} for b in batches[-limit:]]


def summarize(batches: Sequence[BatchStat], interval_s: float, now: float) -> dict[str, Any]:
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
