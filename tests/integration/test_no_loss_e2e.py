"""Watches -> health-gateway -> Kafka -> one replica -> MariaDB, with genuine duplicates.

The reproduction of issue 16 through the product: a load client posts many readings of a
few devices (several in the same second, so uploads repeat a (SN, timestamp)) and sends
some uploads twice, as a retrying watch does. Then one `health-consumer run` drains the
backlog on a fresh database, twelve partitions flushing at once. Every distinct reading
must be a row, the duplicate counter must equal the real duplicates, and the committed
offsets reach the end of every partition only because everything before them is written.
"""

from __future__ import annotations

import datetime as dt
import random
import threading
from collections.abc import Iterator

import orjson
import pytest

from tests.integration.gateway_stack import GatewayProcess
from tests.integration.stack import KAFKA, Stack, wait_for

pytestmark = pytest.mark.integration

DEVICES = 5
UPLOADS = 2_400
RETRIED = 25
CLIENTS = 8
START = dt.datetime(2025, 6, 1, 8, 0, 0)


def uploads(seed: int) -> list[tuple[bytes, list[tuple[str, str]]]]:
    """(body, its (SN, timestamp) keys): 1-8 readings of one device per upload, a device
    clock that moves 0 or 1 second per reading, so many readings share a second."""
    rng = random.Random(seed)
    clock = {f"E2E-{d}": START for d in range(DEVICES)}
    out: list[tuple[bytes, list[tuple[str, str]]]] = []
    for _ in range(UPLOADS):
        sn = f"E2E-{rng.randrange(DEVICES)}"
        readings: list[dict[str, object]] = []
        for _ in range(rng.randint(1, 8)):
            clock[sn] += dt.timedelta(seconds=rng.randint(0, 1))
            readings.append(
                {
                    "deviceSn": sn,
                    "heart_rate": rng.randint(60, 100),
                    "blood_oxygen": 98,
                    "timestamp": f"{clock[sn]:%Y-%m-%d %H:%M:%S}",
                }
            )
        keys = [(str(r["deviceSn"]), str(r["timestamp"])) for r in readings]
        out.append((orjson.dumps({"data": readings}), keys))
    retried = rng.sample(range(UPLOADS), RETRIED)
    return out + [out[i] for i in retried]


@pytest.fixture
def gateway(stack: Stack) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(
        {
            "GATEWAY_KAFKA_BOOTSTRAP_SERVERS": KAFKA,
            "GATEWAY_KAFKA_TOPIC": stack.topic,
            "GATEWAY_WORKERS": "1",
        }
    ).start()
    yield gw
    gw.stop()


def post_all(gw: GatewayProcess, bodies: list[bytes]) -> list[int]:
    statuses: list[int] = [0] * len(bodies)

    def client(k: int) -> None:
        for i in range(k, len(bodies), CLIENTS):
            statuses[i] = gw.post(bodies[i])[0]

    threads = [threading.Thread(target=client, args=(k,)) for k in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return statuses


@pytest.mark.timeout(400)
@pytest.mark.parametrize("load_data", ["true", "false"], ids=["load_data", "insert"])
def test_retried_and_repeated_uploads_lose_nothing_through_the_product(
    stack: Stack, gateway: GatewayProcess, load_data: str
) -> None:
    planned = uploads(seed=16)
    statuses = post_all(gateway, [body for body, _ in planned])
    assert statuses == [200] * len(planned)
    readings = [key for _, keys in planned for key in keys]
    distinct = set(readings)
    assert len(readings) - len(distinct) > 1_000  # the workload holds many duplicates

    proc = stack.consumer(DB_LOAD_DATA=load_data, BATCH_MAX_WAIT_MS="500").start()
    end = stack.end_offsets()
    wait_for(
        lambda: all(stack.committed().get(p) == e for p, e in end.items() if e > 0),
        240,
        what=f"committed == {end}",
    )

    rows = {
        (r.device_sn, f"{r.timestamp:%Y-%m-%d %H:%M:%S}")
        for r in stack.rows("SELECT device_sn, `timestamp` FROM t_user_health_data")
    }
    assert stack.health_rows() == len(distinct)
    assert rows == distinct
    assert proc.metric("health_consumer_records_written_total{sink=mysql}") == len(distinct)
    assert proc.metric("health_consumer_records_duplicate_total") == len(readings) - len(distinct)
    assert proc.metric("health_consumer_dead_letters_total") == 0
    assert proc.terminate() == 0
