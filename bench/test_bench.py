"""Checks of the benchmark's own pure logic (no services, no timing).

.venv/bin/pytest bench/test_bench.py -q
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.procstat import Series, cpu_seconds, memory_mb, thread_cpu_seconds
from bench.profile_replica import PERF_LINE, area, tables
from bench.report import TARGETS, judge, render
from bench.workload import watch_uploads
from schemas.decode import decode_message


def test_series_interpolates_between_samples_and_refuses_outside() -> None:
    s = Series(times=[10.0, 11.0, 13.0], cpu=[1.0, 1.5, 2.5], rss_mb=[1.0, 2.0, 3.0])
    assert s.at(10.0) == 1.0
    assert s.at(10.5) == 1.25
    assert s.at(12.0) == 2.0
    assert s.at(13.0) == 2.5
    assert s.at(9.0) is None and s.at(13.5) is None
    assert s.between(10.5, 12.0) == 0.75
    assert s.peak_rss_mb(10.5, 13.0) == 3.0


def test_proc_readers_see_this_process() -> None:
    assert cpu_seconds(os.getpid()) >= 0
    rss, hwm = memory_mb(os.getpid())
    assert 0 < rss <= hwm
    threads = thread_cpu_seconds(os.getpid())
    assert os.getpid() in threads  # the main thread's tid is the pid


def test_judge_and_render_mark_met_missed_and_skipped() -> None:
    result = {
        "readings_per_s": 50_000.0,
        "consumer_us_per_reading": 12.0,
        "mariadb_us_per_row": None,
        "peak_rss_mb": 120.0,
    }
    verdicts = {t["metric"]: t["met"] for t in judge("drain_1_replica", result)}
    assert verdicts == {
        "readings_per_s": True,
        "consumer_us_per_reading": False,
        "mariadb_us_per_row": None,
        "peak_rss_mb": True,
    }
    text = render(
        {
            "drain_1_replica": {**result, "targets": judge("drain_1_replica", result)},
            "bulk_insert_legacy": {"skipped": "not on this branch"},
        }
    )
    assert "MISSED" in text and "met" in text and "n/a" in text
    assert "skipped: not on this branch" in text


def test_every_issue_target_is_judged_somewhere() -> None:
    metrics = {(t.metric, t.op, t.limit) for ts in TARGETS.values() for t in ts}
    assert ("consumer_us_per_reading", "<=", 10) in metrics
    assert ("mariadb_us_per_row", "<=", 15) in metrics
    assert ("readings_per_s", ">=", 45_000) in metrics
    assert ("p95_ms", "<=", 100) in metrics and ("p99_ms", "<=", 250) in metrics
    assert ("peak_rss_mb", "<=", 300) in metrics


def test_watch_uploads_are_deterministic_legacy_shaped_and_decodable() -> None:
    a = list(watch_uploads(500, seed=3))
    b = list(watch_uploads(500, seed=3))
    assert [u.value for u in a] == [u.value for u in b]
    sizes = [len(u.readings) for u in a]
    assert set(sizes) == {1, 5}
    assert 0.1 < sizes.count(5) / len(sizes) < 0.3
    keys = [k for u in a for k in u.readings]
    assert len(keys) == len(set(keys))  # (device, timestamp) unique: one row each
    for u in a:
        body = orjson.loads(u.value)
        assert list(body) == ["data"] and isinstance(body["data"], list)
        assert all("customerId" not in r for r in body["data"])
        records = decode_message(u.value).records
        assert [(r.device_sn, r.timestamp.strftime("%Y-%m-%d %H:%M:%S")) for r in records] == list(
            u.readings
        )
        assert all(r.device_sn.encode() == u.key for r in records)


def test_profile_folding_groups_by_area(tmp_path: Path) -> None:
    folded = tmp_path / "x.folded"
    folded.write_text(
        "run (consumer/pipeline/poll_loop.py:1);_decode (schemas/decode.py:2) 3\n"
        "run (consumer/pipeline/poll_loop.py:1);loads (/x/lib/python3.11/json/__init__.py:3) 1\n"
    )
    _, data = tables(folded, 10)
    assert data["samples"] == 4
    assert data["self_by_area"] == {"schemas/decode.py": 75.0, "stdlib:json": 25.0}
    assert area("/v/lib/python3.11/site-packages/sqlalchemy/engine/base.py") == "sqlalchemy"


def test_perf_script_lines_parse() -> None:
    line = " C2 CompilerThre  8473      7fb17ffbd836 Compile::remove_types (/usr/lib/libjvm.so)"
    m = PERF_LINE.match(line)
    assert m is not None
    assert (m["comm"], m["pid"], m["sym"], m["dso"]) == (
        "C2 CompilerThre",
        "8473",
        "Compile::remove_types",
        "/usr/lib/libjvm.so",
    )
