"""B9: one deadline per request, and probes answered while slow clients hold every slot."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from consumer.observe.http import PROBE_SLOTS, Sidecar

SLOTS = 4


@pytest.fixture
def sidecar() -> Iterator[Sidecar]:
    routes = {
        "/livez": lambda q: (200, {"status": "ok"}),
        "/readyz": lambda q: (200, {"ready": True}),
        "/api/batch_processor/health": lambda q: (200, {"status": "healthy"}),
    }
    s = Sidecar("127.0.0.1", 0, CollectorRegistry(), routes, SLOTS, timeout_s=1.5)
    s.start()
    yield s
    s.close()


def get(port: int, path: str) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, json.loads(r.read())
    finally:
        conn.close()


class SlowClients:
    """`n` clients that each send one request byte every `every_s`, reconnecting whenever
    the server drops them: they hold every slot they can get, all the time."""

    def __init__(self, port: int, n: int, every_s: float) -> None:
        self.port, self.every_s = port, every_s
        self.stop = threading.Event()
        self.drops = 0
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(n)]

    def __enter__(self) -> SlowClients:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(5)

    def _run(self) -> None:
        request = b"GET /api/batch_processor/health HTTP/1.0\r\n" + b"X-Slow: " + b"y" * 500
        while not self.stop.is_set():
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
                    for byte in request:
                        sock.sendall(bytes([byte]))
                        if self.stop.wait(self.every_s):
                            return
            except OSError:
                pass
            self.drops += 1


def test_a_trickling_client_is_dropped_at_the_request_deadline(sidecar: Sidecar) -> None:
    """A byte every 0.2 s never trips a per-recv timeout of 1.5 s; the request deadline
    (1.5 s for the whole request) ends it long before its 40 bytes are sent."""
    sock = socket.create_connection(("127.0.0.1", sidecar.port), timeout=10)
    sent = 0
    try:
        for byte in b"GET /livez HTTP/1.0\r\nX-Trickle: " + b"z" * 100:
            sock.sendall(bytes([byte]))
            sent += 1
            time.sleep(0.2)
    except OSError:  # reset by the server after it closed
        pass
    finally:
        sock.settimeout(5)
        try:
            tail = sock.recv(4096)
        except OSError:
            tail = b""
        sock.close()
    assert sent < 40, f"server kept a trickling client for {sent} bytes"
    assert tail == b""  # closed without an answer: it never finished its request


def test_probes_are_answered_while_slow_clients_hold_every_slot(sidecar: Sidecar) -> None:
    with SlowClients(sidecar.port, SLOTS + PROBE_SLOTS + 12, every_s=0.3) as slow:
        time.sleep(1.0)  # every slot and the probe lane are taken
        answers = []
        for i in range(16):
            answers.append(get(sidecar.port, "/livez" if i % 2 else "/readyz")[0])
            time.sleep(0.2)
        dropped = slow.drops
    assert answers == [200] * 16
    assert dropped > 0  # the slow clients really were competing (and being dropped)


def test_only_probes_are_served_from_the_probe_lane(sidecar: Sidecar) -> None:
    held = [socket.create_connection(("127.0.0.1", sidecar.port)) for _ in range(SLOTS)]
    try:
        time.sleep(0.2)  # the main slots are taken until their 1.5 s deadline
        assert get(sidecar.port, "/api/batch_processor/health") == (
            503, {"error": "too many connections"},
        )  # fmt: skip
        assert get(sidecar.port, "/livez") == (200, {"status": "ok"})
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.2)
    assert get(sidecar.port, "/api/batch_processor/health") == (200, {"status": "healthy"})
