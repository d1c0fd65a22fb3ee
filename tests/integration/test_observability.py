"""The sidecar against a real replica: health, metrics JSON, alerts, summaries, webhook."""

from __future__ import annotations

import json
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest

from consumer.tools.simulate import ReadingGenerator
from tests.integration.stack import ROOT, ConsumerProcess, Stack, wait_for

pytestmark = pytest.mark.integration

FAST = {
    "LAG_SAMPLE_INTERVAL_S": "0.5",
    "ALERT_CHECK_INTERVAL_S": "0.5",
    "METRICS_SUMMARY_INTERVAL_S": "1",
    "LAG_WINDOW_S": "5",
}


def get_json(proc: ConsumerProcess, path: str) -> tuple[int, Any]:
    status, body = proc.get(path)
    return status, json.loads(body)


def produce_readings(stack: Stack, n: int, seed: int) -> int:
    gen = ReadingGenerator(devices=30, seed=seed, array_ratio=0.0)
    msgs = [gen.next_message() for _ in range(n)]
    stack.produce([(m.key, m.value, []) for m in msgs])
    return n


def test_endpoints_report_real_state(stack: Stack, tmp_path: Path) -> None:
    summary_file = tmp_path / "summary.json"
    proc = stack.consumer(**FAST, METRICS_SUMMARY_FILE=str(summary_file)).start()
    n = produce_readings(stack, 2000, seed=801)
    wait_for(lambda: stack.health_rows() >= n, 60)

    status, live = get_json(proc, "/livez")
    assert status == 200 and live["status"] == "ok"
    status, health = wait_for(
        lambda: (r := get_json(proc, "/api/batch_processor/health"))[0] == 200 and r,
        30,
        what="healthy",
    )
    assert health["status"] == "healthy"
    checks = health["checks"]
    assert set(checks) == {
        "batch_processor",
        "system_resources",
        "queue_health",
        "dependencies",
        "lag",
    }
    assert checks["dependencies"]["mysql"]["status"] == "up"
    assert checks["system_resources"]["process"]["rss_mb"] > 0
    assert len(checks["queue_health"]["partitions"]) == stack.partitions
    assert health["summary"]["total_processed"] == n

    status, metrics = get_json(proc, "/api/batch_processor/metrics")
    assert status == 200 and metrics["processing_rate"] > 0
    assert "partitions" not in metrics
    _, detailed = get_json(proc, "/api/batch_processor/metrics?details=true")
    assert len(detailed["partitions"]) == stack.partitions and detailed["recent_batches"]
    status, shard = get_json(proc, "/api/batch_processor/metrics?shard_id=3")
    assert status == 200 and shard["partition"] == 3 and "queue_size" in shard
    status, foreign = get_json(proc, "/api/batch_processor/metrics?shard_id=99")
    assert status == 404 and "not owned" in foreign["error"]
    status, alerts = get_json(proc, "/api/batch_processor/alerts")
    assert status == 200 and alerts == {"firing": [], "history": []}

    summary = wait_for(
        lambda: summary_file.exists() and json.loads(summary_file.read_text()),
        10,
        what="summary file",
    )
    assert {
        "batches",
        "records",
        "error_rate",
        "processing_time_s",
        "per_partition_records",
    } <= set(summary)

    # no secret in any answer
    for path in ("/api/batch_processor/health", "/metrics", "/readyz"):
        assert "mysql+pymysql://" not in proc.get(path)[1].decode()
    proc.terminate()


def test_health_follows_a_mariadb_outage(stack: Stack) -> None:
    proc = stack.consumer(**FAST, DB_RETRY_MAX_BACKOFF_S="1").start()
    services = str(ROOT / "scripts" / "services.sh")
    subprocess.run([services, "down", "mariadb"], check=True, timeout=120)
    try:
        _, health = wait_for(
            lambda: (r := get_json(proc, "/api/batch_processor/health"))[0] == 503 and r,
            30,
            what="unhealthy",
        )
        assert health["status"] == "unhealthy"
        assert health["checks"]["dependencies"]["mysql"]["status"] == "down"
        assert health["checks"]["dependencies"]["mysql"]["last_error"]
        assert get_json(proc, "/livez")[0] == 200  # alive: the poll loop does not need the DB
        assert get_json(proc, "/readyz")[0] == 503
        assert proc.metric("health_consumer_dependency_up{dependency=mysql}") == 0
    finally:
        subprocess.run([services, "up", "mariadb"], check=True, timeout=300)
    wait_for(
        lambda: get_json(proc, "/api/batch_processor/health")[0] == 200, 60, what="healthy again"
    )
    proc.terminate()


class WebhookSink:
    """A local HTTP server standing in for the alert receiver."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                sink.events.append(orjson.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_slow_db_raises_lag_and_fires_then_resolves_processing_lag(stack: Stack) -> None:
    hook = WebhookSink()
    try:
        proc = stack.consumer(
            **FAST, ALERT_TIME_LAG_S="3", ALERT_WEBHOOK_URL=hook.url,
            WORKER_QUEUE_MAX_RECORDS="200", BATCH_MAX_RECORDS="100",
        ).start()  # fmt: skip
        locker = stack.engine.connect()
        locker.exec_driver_sql("LOCK TABLES t_user_health_data WRITE")
        try:
            n = produce_readings(stack, 3000, seed=802)
            wait_for(
                lambda: proc.metric("health_consumer_queue_utilization_ratio") > 0,
                30,
                what="queued records",
            )
            fired = wait_for(
                lambda: (
                    [
                        a
                        for a in get_json(proc, "/api/batch_processor/alerts")[1]["firing"]
                        if a["name"] == "processing_lag"
                    ]
                    if True
                    else None
                ),
                40,
                what="processing_lag firing",
            )
            assert fired[0]["severity"] == "critical"
            assert proc.metric("health_consumer_time_lag_seconds") > 3
            assert proc.metric("health_consumer_offset_lag_records") > 0
            assert proc.metric("health_consumer_ops_alerts_firing{alert=processing_lag}") == 1
        finally:
            locker.exec_driver_sql("UNLOCK TABLES")
            locker.close()
        wait_for(lambda: stack.health_rows() >= n, 120, what="all rows after unlock")
        history = wait_for(
            lambda: [
                a
                for a in get_json(proc, "/api/batch_processor/alerts")[1]["history"]
                if a["name"] == "processing_lag" and a["state"] == "resolved"
            ],
            60,
            what="processing_lag resolved",
        )
        assert history
        wait_for(
            lambda: (
                {(e["alert"], e["state"]) for e in hook.events}
                >= {("processing_lag", "firing"), ("processing_lag", "resolved")}
            ),
            20,
            what="webhook events",
        )
        proc.terminate()
    finally:
        hook.close()


def test_redis_outage_degrades_but_the_db_keeps_filling(stack: Stack) -> None:
    proc = stack.consumer(**FAST, REDIS_RETRY_MAX_S="0.5").start()
    services = str(ROOT / "scripts" / "services.sh")
    subprocess.run([services, "down", "redis"], check=True, timeout=60)
    try:
        n = produce_readings(stack, 1500, seed=803)
        wait_for(lambda: stack.health_rows() >= n, 60, what="rows while Redis is down")
        # The Redis step follows the DB commit and gives up after REDIS_RETRY_MAX_S: the
        # rows can be visible a moment before the skipped update is counted.
        wait_for(
            lambda: proc.metric("health_consumer_sink_skipped_batches_total{sink=redis}") > 0,
            30,
            what="a skipped Redis update counted",
        )
        _, health = wait_for(
            lambda: (r := get_json(proc, "/api/batch_processor/health"))[0] == 503 and r,
            30,
            what="degraded",
        )
        assert health["status"] == "degraded"
        assert health["checks"]["dependencies"]["redis"]["status"] == "down"
        assert proc.metric("health_consumer_dependency_up{dependency=redis}") == 0
    finally:
        subprocess.run([services, "up", "redis"], check=True, timeout=60)
    wait_for(
        lambda: get_json(proc, "/api/batch_processor/health")[0] == 200, 60, what="healthy again"
    )
    assert stack.health_rows() == n
    proc.terminate()
