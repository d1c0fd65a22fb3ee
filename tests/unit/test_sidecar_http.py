"""The sidecar's transport under hostile clients: bounded threads, timeouts, JSON errors."""

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


def boom(_q: dict[str, list[str]]) -> tuple[int, Any]:
    raise RuntimeError("report bug")


@pytest.fixture
def sidecar() -> Iterator[Sidecar]:
    routes = {"/ok": lambda q: (200, {"q": q}), "/boom": boom}
    s = Sidecar("127.0.0.1", 0, CollectorRegistry(), routes, max_connections=4, timeout_s=0.5)
    s.start()
    yield s
    s.close()


def get(port: int, path: str, method: str = "GET") -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path)
        r = conn.getresponse()
        return r.status, json.loads(r.read())
    finally:
        conn.close()


def http_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name == "http-request")


def test_idle_connections_are_capped_answered_503_and_timed_out(sidecar: Sidecar) -> None:
    before = http_threads()
    idle = [socket.create_connection(("127.0.0.1", sidecar.port)) for _ in range(50)]
    try:
        peak, until = 0, time.monotonic() + 1.0
        while time.monotonic() < until:
            peak = max(peak, http_threads() - before)
            time.sleep(0.01)
        assert peak <= 4 + PROBE_SLOTS
        # Every connection ends server-side: with a JSON 503 when all slots were taken (at
        # once, or when a newer connection needed its probe-lane seat), or closed at the
        # 0.5 s request deadline once it held a slot and said nothing.
        replies = []
        for s in idle:
            s.settimeout(10)
            replies.append(s.recv(4096))
        busy = [r for r in replies if r.startswith(b"HTTP/1.0 503")]
        assert all(r.endswith(b'{"error":"too many connections"}') for r in busy)
        assert busy and all(r == b"" for r in replies if r not in busy)
    finally:
        for s in idle:
            s.close()
    assert get(sidecar.port, "/ok")[0] == 200
    deadline = time.monotonic() + 5
    while http_threads() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert http_threads() == before


def test_every_error_path_answers_json(sidecar: Sidecar) -> None:
    assert get(sidecar.port, "/nope") == (404, {"error": "not found", "path": "/nope"})
    assert get(sidecar.port, "/boom") == (500, {"error": "RuntimeError"})
    status, body = get(sidecar.port, "/ok", method="POST")
    assert status == 501 and "error" in body
    raw = socket.create_connection(("127.0.0.1", sidecar.port))
    raw.sendall(b"GARBAGE\r\n\r\n")
    raw.settimeout(2)
    reply = b""
    while chunk := raw.recv(4096):
        reply += chunk
    raw.close()
    assert reply.startswith(b"HTTP/1.0 400") and b'{"error":' in reply
