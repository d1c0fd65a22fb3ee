"""The sidecar's JSON endpoints, built from in-memory snapshots (no I/O per request).

`http.py` is the transport; this module decides what each endpoint says. The shapes of
`/api/batch_processor/*` follow the original operations plan, so existing tooling reads them.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from consumer.observe import stats
from consumer.observe.health import Status
from consumer.observe.http import Route
from consumer.observe.monitor import Monitor
from consumer.pipeline.view import LoopView

Query = dict[str, list[str]]


class Api:
    def __init__(self, monitor: Monitor) -> None:
        self.m = monitor
        self.ledger = monitor.ledger
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
        """Alive while the poll loop turns, whatever the DB or Redis are doing; a replica
        stopping on a bug is not alive, so the orchestrator restarts it."""
        view = self.m.view()
        age = time.monotonic() - view.last_poll_at
        ok = self.m.poll_loop_alive(view)
        body: dict[str, Any] = {
            "status": "ok" if ok else "stale",
            "phase": view.phase,
            "poll_age_s": age,
        }
        if view.failed is not None:
            body.update(status="failed", failure=view.failed)
        return (200 if ok else 503), body

    def readyz(self, _q: Query) -> tuple[int, Any]:
        deps = self.m.dependencies.snapshot()
        view = self.m.view()
        ready = view.joined and deps["kafka"].up and deps["mysql"].up and view.failed is None
        body = {
            "ready": ready,
            "joined": view.joined,
            "partitions": sorted(view.partitions),
            "dependencies": {name: state.up for name, state in deps.items()},
        }
        return (200 if ready else 503), body

    def _partition(self, p: int, view: LoopView) -> dict[str, Any]:
        pv = view.partitions.get(p)
        lag = self.m.lag.get(p)
        out: dict[str, Any] = {"partition": p}
        if pv is not None:
            c = pv.counters
            out.update(
                queue_size=pv.queued_records,
                utilization=round(self.m.queue_utilizations(view)[p], 4),
                paused=pv.paused,
                processed=c.records,
                processed_messages=c.messages,
                errors=c.errors,
                error_rate=round(c.errors / c.messages, 4) if c.messages else 0.0,
                flushed_offset=pv.flushed_offset,
                committed_offset=pv.committed_offset,
                processing_rate=round(self.m.processing_rate(p), 1),
                last_flush_at=c.last_flush_at,
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
        view = m.view()
        totals = self._totals()
        deps = m.dependencies.snapshot()
        partitions = sorted(view.partitions)
        utilization = m.queue_utilizations(view)
        error_rate = m.error_rate()
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
                        "processing_rate": round(m.processing_rate(), 1),
                        "window_s": self.settings.stats_window_s,
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
                    "partitions": {str(p): self._queue_view(p, view) for p in partitions},
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

    def _queue_view(self, p: int, view: LoopView) -> dict[str, Any]:
        out = self._partition(p, view)
        keys = ("queue_size", "utilization", "paused", "processed", "errors", "error_rate")
        return {k: out[k] for k in keys if k in out}

    def _totals(self) -> dict[str, int]:
        t = self.ledger.totals()
        return {
            "batches": t.batches,
            "records": t.records_flushed,
            "messages": t.messages_flushed,
            "errors": t.errors,
            "duplicates": t.records_duplicate,
        }

    def metrics(self, q: Query) -> tuple[int, Any]:
        details = q.get("details", ["false"])[0].lower() in ("1", "true", "yes")
        shard = q.get("shard_id", [None])[0]
        if shard is not None:
            view = self.m.view()
            try:
                p = int(shard)
            except ValueError:
                return 400, {"error": "shard_id must be a partition number", "shard_id": shard}
            if p not in view.partitions:
                return 404, {
                    "error": f"partition {shard} is not owned by this replica",
                    "shard_id": shard,
                    "owned_partitions": sorted(view.partitions),
                }
            recent = [b for b in self.ledger.recent() if b.partition == p]
            return 200, {**self._partition(p, view), "recent_batches": stats.as_rows(recent, 20)}
        view = self.m.view()
        body: dict[str, Any] = {
            "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
            "processing_rate": round(self.m.processing_rate(), 1),
            "error_rate": round(self.m.error_rate(), 4),
            "window_s": self.settings.stats_window_s,
            "totals": self._totals(),
            "assigned_partitions": sorted(view.partitions),
        }
        if details:
            body["partitions"] = {str(p): self._partition(p, view) for p in sorted(view.partitions)}
            body["recent_batches"] = stats.as_rows(self.ledger.recent(), 50)
        return 200, body

    def alerts(self, _q: Query) -> tuple[int, Any]:
        return 200, {
            "firing": [a.as_dict() for a in self.m.alerts.firing()],
            "history": [a.as_dict() for a in self.m.alerts.history()],
        }
