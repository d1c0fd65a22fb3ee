"""Targets of issue #9 and the tables `make bench` prints (pure: results in, text out)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Target:
    metric: str  # key in the scenario's result
    op: str  # "<=" or ">="
    limit: float
    label: str  # what the table calls it

    def judge(self, value: object) -> bool | None:
        if not isinstance(value, int | float):
            return None
        return value <= self.limit if self.op == "<=" else value >= self.limit


CONSUMER = Target("consumer_us_per_reading", "<=", 10, "consumer CPU µs/reading")
MARIADB = Target("mariadb_us_per_row", "<=", 15, "MariaDB CPU µs/row")
RSS = Target("peak_rss_mb", "<=", 300, "peak RSS MB per replica")
P95 = Target("p95_ms", "<=", 100, "P95 ms")
P99 = Target("p99_ms", "<=", 250, "P99 ms")
GATEWAY_CPU = Target("gateway_us_per_upload", "<=", 50, "gateway CPU µs/upload (all processes)")

TARGETS: dict[str, tuple[Target, ...]] = {
    "drain_1_replica": (
        Target("readings_per_s", ">=", 45_000, "readings/s, 1 replica"),
        CONSUMER,
        MARIADB,
        RSS,
    ),
    "drain_2_replicas": (CONSUMER, MARIADB, RSS),
    "latency_5k_1_replica": (P95, P99, RSS),
    "latency_5k_2_replicas": (P95, P99, RSS),
    "demo_2k_2_replicas": (P95, P99, RSS),
    # Ceilings: the same limits show whether a perfect pipeline could meet them at all.
    "floor_consume_decode": (CONSUMER,),
    "bulk_insert_fresh": (MARIADB,),
    "bulk_insert_duplicates": (MARIADB,),
    "bulk_insert_legacy": (MARIADB,),
    # Issue 19. The floor has no target of its own: it shows what the HTTP stack costs.
    "gateway_floor": (GATEWAY_CPU,),
    "gateway_saturation": (
        Target("uploads_per_s", ">=", 12_000, "gateway uploads/s"),
        Target("errors", "<=", 0, "gateway errors at saturation"),
        Target("missing_in_db", "<=", 0, "200s missing from the DB"),
        GATEWAY_CPU,
    ),
    "gateway_2k": (
        Target("p95_ms", "<=", 50, "gateway P95 ms at 2k/s"),
        Target("p99_ms", "<=", 100, "gateway P99 ms at 2k/s"),
        GATEWAY_CPU,
    ),
    "gateway_demo_2k": (Target("achieved_rate", ">=", 1_980, "make demo uploads/s (of 2,000)"),),
    # Issue 20: the slowest chunk of a run to 50M rows, and that it got there.
    "growth": (
        Target("shipped_200k_min_rows_per_s", ">=", 60_000, "shipped, 200k devices: rows/s"),
        Target("shipped_200k_reached_rows", ">=", 50_000_000, "shipped, 200k: rows reached"),
        Target("legacy-tuned_200k_min_rows_per_s", ">=", 30_000, "tuned legacy, 200k: rows/s"),
        Target("legacy-tuned_200k_reached_rows", ">=", 50_000_000, "tuned legacy: rows reached"),
    ),
}

COLUMNS = (
    ("scenario", "scenario"),
    ("readings/s", "readings_per_s"),
    ("consumer µs/rd", "consumer_us_per_reading"),
    ("mariadb µs/row", "mariadb_us_per_row"),
    ("(own sessions)", "mariadb_own_sessions_us_per_row"),
    ("broker µs/rd", "broker_us_per_reading"),
    ("redis µs/rd", "redis_us_per_reading"),
    ("peak RSS MB", "peak_rss_mb"),
    ("p50 ms", "p50_ms"),
    ("p95 ms", "p95_ms"),
    ("p99 ms", "p99_ms"),
    ("load 1m", "loadavg_1m"),
)


def judge(name: str, result: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "metric": t.metric,
            "label": t.label,
            "target": f"{t.op} {t.limit:g}",
            "value": result.get(t.metric),
            "met": t.judge(result.get(t.metric)),
        }
        for t in TARGETS.get(name, ())
    ]


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return (
            f"{value:,.0f}"
            if abs(value) >= 1000
            else f"{value:.3g}"
            if value < 10
            else f"{value:.1f}"
        )
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join("-" * w for w in widths)
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)), line]
    out += [
        "  ".join(
            c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    ]
    return "\n".join(out)


def render(summary: Mapping[str, Mapping[str, Any]]) -> str:
    """The scenario table, then one line per target with met/missed."""
    rows = []
    for name, result in summary.items():
        if result.get("skipped") or result.get("error"):
            rows.append([name, *(["-"] * (len(COLUMNS) - 2)), _cell(result.get("loadavg_1m"))])
            continue
        row = {**result, "scenario": name}
        if row.get("readings_per_s") is None and row.get("uploads_per_s") is not None:
            row["readings_per_s"] = row["uploads_per_s"]  # the gateway: uploads of 1 reading
        rows.append([_cell(row.get(key)) for _, key in COLUMNS])
    text = [table(rows, [h for h, _ in COLUMNS]), ""]
    trows = []
    for name, result in summary.items():
        if result.get("skipped") or result.get("error"):
            why = f"skipped: {result['skipped']}" if result.get("skipped") else "FAILED"
            trows.append([name, "-", "-", "-", why])
            continue
        for t in result.get("targets", []):
            verdict = {True: "met", False: "MISSED", None: "n/a"}[t["met"]]
            trows.append([name, t["label"], t["target"], _cell(t["value"]), verdict])
    text.append(table(trows, ["scenario", "target", "limit", "value", "met/missed"]))
    return "\n".join(text)
