"""The sidecar's JSON endpoints, built from in-memory snapshots (no I/O per request).

`http.py` is the transport; this module decides what each endpoint says. The shapes of
`/api/batch_processor/*` follow the original operations plan, so existing tooling reads them.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from consumer.health import Status
from consumer.http import Route
from consumer.monitor import Monitor

Query = dict[str, list[str]]


class Api:
    def __init__(self, monitor: Monitor) -> None:
        self.m = monitor
        self.loop = monitor.loop
        self.stats = monitor.stats
        self.settings = monitor.settings

    def routes(self) -> dict[str, Route]:
        return {
            "/livez": self.livez,
            "/readyz": self.readyz,
            "/api/batch_processor/health": self.health,
            "/api/batch_processor/metrics": self.metrics,
            "/api/batch_processor/alerts": self.alerts,
        }

    def livez(self, _q: Query) -> tuple[int, Any]:
        """Alive while the poll loop turns, whatever the DB or Redis are doing."""
        age = time.monotonic() - self.loop.stats.last_poll_at
        ok = age <= self.settings.liveness_max_age_s
        return (200 if ok else 503), {"status": "ok" if ok else "stale", "poll_age_s": age}

    def readyz(self, _q: Query) -> tuple[int, Any]:
        deps = self.m.dependencies.snapshot()
        ready = self.loop.stats.joined and deps["kafka"].up and deps["mysql"].up
        body = {
            "ready": ready,
            "joined": self.loop.stats.joined,
            "partitions": sorted(self.loop.partitions),
            "dependencies": {name: state.up for name, state in deps.items()},
        }
        return (200 if ready else 503), body

    def _partition(self, p: int) -> dict[str, Any]:
        state = self.loop.partitions.get(p)
        lag = self.m.lag.get(p)
        out: dict[str, Any] = {"partition": p}
        if state is not None:
            w = state.worker
            cap = self.settings.worker_queue_max_records
            out.update(
                queue_size=w.queued_records,
                utilization=round(w.queued_records / cap, 4),
                paused=state.paused,
                processed=w.processed_records,
                processed_messages=w.processed_messages,
                errors=w.error_messages,
                error_rate=round(w.error_messages / w.processed_messages, 4)
                if w.processed_messages
                else 0.0,
                flushed_offset=w.flushed_offset,
                processing_rate=round(self.stats.processing_rate(p), 1),
                last_flush_at=w.last_flush_at,
            )
        if lag is not None:
            out["lag"] = {
                "status": lag.status.value,
                "offset_lag": lag.offset_lag,
                "time_lag_seconds": lag.time_lag_s,
                "committed_offset": lag.committed,
                "high_watermark": lag.high_watermark,
            }
        return out

    def health(self, _q: Query) -> tuple[int, Any]:
        m, r = self.m, self.m.resources
        verdict = m.verdict()
        totals = self.stats.totals()
        deps = m.dependencies.snapshot()
        partitions = sorted(self.loop.partitions)
        utilization = m.queue_utilizations()
        error_rate = self.stats.error_rate()
        lag = dict(m.lag)
        max_time_lag = max((pl.time_lag_s for pl in lag.values()), default=0.0)
        body = {
            "status": verdict.status.value,
            "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
            "checks": {
                "batch_processor": {
                    "status": verdict.batch_processor.value,
                    "error_rate": round(error_rate, 4),
                    "stats": {
                        **totals,
                        "processing_rate": round(self.stats.processing_rate(), 1),
                        "window_s": self.stats.window_s,
                    },
                },
                "system_resources": {
                    "status": verdict.system_resources.value,
                    "process": {
                        "rss_mb": r.rss_mb,
                        "memory_percent": r.process_memory_percent,
                        "cpu_percent": r.process_cpu_percent,
                        "threads": r.threads,
                        "open_files": r.open_files,
                    },
                    "system": {
                        "memory_percent": r.system_memory_percent,
                        "cpu_percent": r.system_cpu_percent,
                    },
                },
                "queue_health": {
                    "status": verdict.queue_health.value,
                    "partitions": {str(p): self._queue_view(p) for p in partitions},
                },
                "dependencies": {
                    "status": verdict.dependencies.value,
                    **{
                        name: {
                            "status": "up" if st.up else "down",
                            "last_error": st.last_error,
                            "errors": st.errors,
                        }
                        for name, st in deps.items()
                    },
                },
                "lag": {
                    "status": verdict.lag.value,
                    "partitions": {
                        str(p): {
                            "status": pl.status.value,
                            "offset_lag": pl.offset_lag,
                            "time_lag_seconds": pl.time_lag_s,
                        }
                        for p, pl in sorted(lag.items())
                    },
                },
            },
            "summary": {
                "total_processed": totals["records"],
                "error_rate": round(error_rate, 4),
                "queue_utilization": round(max(utilization.values(), default=0.0), 4),
                "memory_usage_percent": r.system_memory_percent,
                "max_time_lag_seconds": max_time_lag,
                "assigned_partitions": partitions,
            },
        }
        return (200 if verdict.status is Status.HEALTHY else 503), body

    def _queue_view(self, p: int) -> dict[str, Any]:
        view = self._partition(p)
        keys = ("queue_size", "utilization", "paused", "processed", "errors", "error_rate")
        return {k: view[k] for k in keys if k in view}

    def metrics(self, q: Query) -> tuple[int, Any]:
        details = q.get("details", ["false"])[0].lower() in ("1", "true", "yes")
        shard = q.get("shard_id", [None])[0]
        if shard is not None:
            try:
                p = int(shard)
            except ValueError:
                return 400, {"error": "shard_id must be a partition number", "shard_id": shard}
            if p not in self.loop.partitions:
                owned = sorted(self.loop.partitions)
                return 404, {
                    "error": f"partition {p} is not owned by this replica",
                    "shard_id": p,
                    "owned_partitions": owned,
                }
            return 200, {**self._partition(p), "recent_batches": self.stats.recent(20, p)}
        totals = self.stats.totals()
        body: dict[str, Any] = {
            "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
            "processing_rate": round(self.stats.processing_rate(), 1),
            "error_rate": round(self.stats.error_rate(), 4),
            "window_s": self.stats.window_s,
            "totals": totals,
            "assigned_partitions": sorted(self.loop.partitions),
        }
        if details:
            body["partitions"] = {str(p): self._partition(p) for p in sorted(self.loop.partitions)}
            body["recent_batches"] = self.stats.recent(50)
        return 200, body

    def alerts(self, _q: Query) -> tuple[int, Any]:
        return 200, {
            "firing": [a.as_dict() for a in self.m.alerts.firing()],
            "history": [a.as_dict() for a in self.m.alerts.history()],
        }
