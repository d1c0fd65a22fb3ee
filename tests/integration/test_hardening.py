"""Issue 7 regressions against the real stack: no input and no missing dependency stops us."""

from __future__ import annotations

import contextlib
import datetime as dt
import socket
import subprocess
import threading
from collections.abc import Iterator

import orjson
import pytest
import redis

from tests.integration.stack import KAFKA, ROOT, Stack, free_port, wait_for

SERVICES = str(ROOT / "scripts" / "services.sh")
FAST = {"LAG_SAMPLE_INTERVAL_S": "0.5", "BATCH_MAX_WAIT_MS": "50"}

# F5: every one of these used to be mangled (`SN%s` stored as `SN{}`), retried forever
# (`A%sB%s`) or kill the worker (`100%`, `SN%`, `AB%(x)s`). What is stored must be what was
# sent, byte for byte. The contract allows only printable ASCII without quotes in a device SN,
# so quotes, NUL and non-ASCII ride in upload_method (which the contract lower-cases; the
# value sent is stored in upload_method_raw, the legacy ENUM gets the mapped value).
HOSTILE_SNS = ["SN%s", "A%sB%s", "100%", "SN%", "AB%(x)s", "back\\slash", "%%%d%n", "x%"]
HOSTILE_METHODS = ["wifi%s", "q'u\"o%", "nul\x00byte", "ünï-设备%(upload)s", "back\\%d"]
REJECTED_SNS = ["Q'uote", "nul\x00sn", "ünï-дев"]  # schema_violation: dead letters, not rows


def reading(sn: str, second: int, method: str = "wifi", **extra: object) -> dict[str, object]:
    ts = dt.datetime(2025, 6, 1, 8, 0, 0) + dt.timedelta(seconds=second)
    return {"deviceSn": sn, "heart_rate": 70 + second % 5, "blood_oxygen": 97,
            "upload_method": method, "timestamp": ts.strftime("%Y-%m-%d %H:%M:%S"),
            **extra}  # fmt: skip


def message(sn: str, *readings: dict[str, object]) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    return sn.encode(), orjson.dumps({"data": list(readings)}), []


def test_percent_quotes_and_nul_are_stored_byte_exact(
    stack: Stack, redis_client: redis.Redis
) -> None:
    messages = []
    for i, sn in enumerate(HOSTILE_SNS):
        method = HOSTILE_METHODS[i % len(HOSTILE_METHODS)]
        sleep = orjson.dumps({"code": 0, "data": [], "name": f"sleep {sn}"}).decode()
        messages.append(message(sn, reading(sn, i, method, sleepData=sleep)))
    messages += [message(sn, reading(sn, 1)) for sn in REJECTED_SNS]
    stack.produce(messages)
    proc = stack.consumer(**FAST).start()
    wait_for(lambda: stack.health_rows() == len(HOSTILE_SNS), 60, what="all rows")
    rows = stack.rows("SELECT device_sn, upload_method_raw FROM t_user_health_data")
    n = len(HOSTILE_METHODS)
    expected = {(sn, HOSTILE_METHODS[i % n]) for i, sn in enumerate(HOSTILE_SNS)}
    assert {(r[0], r[1]) for r in rows} == expected
    daily = stack.rows("SELECT device_sn, sleep_data FROM t_user_health_data_daily")
    assert {r[0] for r in daily} == set(HOSTILE_SNS)
    assert all(orjson.loads(r[1])["name"] == f"sleep {r[0]}" for r in daily)
    for sn in HOSTILE_SNS:
        stored = redis_client.hgetall(f"health_data:{sn}")
        assert stored.get("device_sn", stored.get("deviceSn")) == sn
    ends = {p: o for p, o in stack.end_offsets().items() if o > 0}
    wait_for(lambda: {p: stack.committed()[p] for p in ends} == ends, 30, what="committed")
    assert proc.metric("health_consumer_db_retries_total") == 0
    assert proc.metric("health_consumer_dead_letters_total{reason=schema_violation}") == 3
    proc.terminate()


def test_foreign_shard_id_of_any_size_is_a_json_404(stack: Stack) -> None:
    proc = stack.consumer(**FAST).start()
    for shard in ("99999999999999999999", "-1", "7" * 300):
        status, body = proc.json(f"/api/batch_processor/metrics?shard_id={shard}")
        assert status == 404 and body["shard_id"] == shard
    status, body = proc.json("/api/batch_processor/metrics?shard_id=abc")
    assert status == 400
    proc.terminate()


def sidecar_state(proc: object) -> tuple[int, int, dict[str, object]]:
    live = proc.json("/livez")[0]  # type: ignore[attr-defined]
    ready = proc.json("/readyz")[0]  # type: ignore[attr-defined]
    return live, ready, proc.json("/api/batch_processor/health")[1]  # type: ignore[attr-defined]


def test_starts_while_mysql_is_down_and_consumes_once_it_is_back(stack: Stack) -> None:
    stack.produce([message("SNDB1", reading("SNDB1", s)) for s in range(20)])
    subprocess.run([SERVICES, "down", "mariadb"], check=True, timeout=120)
    try:
        proc = stack.consumer(**FAST).launch()
        wait_for(lambda: _answers(proc.port), 60, what="sidecar up")
        live, ready, health = wait_for(
            lambda: (st := sidecar_state(proc))[2].get("checks", {})["dependencies"]["mysql"][
                "status"] == "down" and st, 60, what="mysql named down",
        )  # fmt: skip
        assert (live, ready) == (200, 503)
        assert health["status"] == "unhealthy"
        assert proc.proc is not None and proc.proc.poll() is None
    finally:
        subprocess.run([SERVICES, "up", "mariadb"], check=True, timeout=300)
    wait_for(lambda: stack.health_rows() == 20, 90, what="rows after MySQL came back")
    wait_for(lambda: proc.json("/readyz")[0] == 200, 30, what="ready")
    log = proc.log_path.read_text()
    assert log.count("waiting for dependencies before consuming") >= 1
    proc.terminate()


class LateProxy:
    """A TCP forwarder to the real broker that starts listening only when told: Kafka
    'comes back' at the bootstrap address the replica was given."""

    def __init__(self, target_port: int) -> None:
        self.port = free_port()
        self.target = target_port
        self.server: socket.socket | None = None

    def open(self) -> None:
        self.server = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        assert self.server is not None
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


@pytest.fixture
def late_kafka() -> Iterator[LateProxy]:
    proxy = LateProxy(int(KAFKA.rsplit(":", 1)[1]))
    yield proxy
    proxy.close()


def test_starts_while_kafka_is_down_and_consumes_once_it_is_back(
    stack: Stack, late_kafka: LateProxy
) -> None:
    stack.produce([message("SNK1", reading("SNK1", s)) for s in range(10)])
    proc = stack.consumer(**FAST, KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{late_kafka.port}").launch()
    wait_for(lambda: _answers(proc.port), 60, what="sidecar up")
    live, ready, health = wait_for(
        lambda: (st := sidecar_state(proc))[2]["checks"]["dependencies"]["kafka"]["status"]
        == "down" and st, 60, what="kafka named down",
    )  # fmt: skip
    assert (live, ready, health["status"]) == (200, 503, "unhealthy")
    late_kafka.open()
    wait_for(lambda: stack.health_rows() == 10, 90, what="rows after Kafka came back")
    proc.terminate()


def test_starts_while_redis_is_down_and_consumes_degraded(stack: Stack) -> None:
    stack.produce([message("SNR1", reading("SNR1", s)) for s in range(10)])
    proc = stack.consumer(**FAST, REDIS_URL=f"redis://127.0.0.1:{free_port()}/0").start()
    wait_for(lambda: stack.health_rows() == 10, 60, what="rows without Redis")
    status, health = wait_for(
        lambda: (r := proc.json("/api/batch_processor/health"))[1]["checks"]["dependencies"][
            "redis"]["status"] == "down" and r, 30, what="redis named down",
    )  # fmt: skip
    assert health["status"] == "degraded" and status == 503
    assert proc.json("/livez")[0] == 200 and proc.json("/readyz")[0] == 200
    proc.terminate()


def _answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False
