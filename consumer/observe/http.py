"""Sidecar HTTP thread: liveness, readiness and Prometheus metrics.

Read-only and never touches the Kafka consumer: every answer is built from state the
poll loop and workers already publish, so a slow scrape cannot stall the data path.
Bounded: each request has one deadline for the whole request (not per recv, which a client
sending a byte every few seconds would never hit) and at most `max_connections` are served
at once, so idle or hostile clients cannot pile up threads. When every slot is taken, a
small probe lane (`PROBE_SLOTS` threads, `PROBE_TIMEOUT_S` per request) still answers
`/livez` and `/readyz`: the orchestrator must never restart a healthy replica because slow
clients hold the sidecar. A full probe lane drops its oldest connection that has not sent
its request yet (answered 503), so the newest arrival, a probe, is always read. Every
answer, errors included, is JSON (or the Prometheus text).
"""

from __future__ import annotations

import contextlib
import io
import logging
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger(__name__)

Route = Callable[[dict[str, list[str]]], tuple[int, Any]]

PROBE_PATHS = frozenset({"/livez", "/readyz"})
PROBE_SLOTS = 4
PROBE_TIMEOUT_S = 1.0


class Sidecar:
    """Serves `routes` (JSON) and `/metrics` on its own daemon thread."""

    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        routes: dict[str, Route],
        max_connections: int = 32,
        timeout_s: float = 5.0,
    ) -> None:
        self.registry = registry
        self.routes = routes
        handler = _handler_for(self)
        self.server = _BoundedServer((host, port), handler, max_connections, timeout_s)
        self.thread = threading.Thread(target=self.server.serve_forever, name="http", daemon=True)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def start(self) -> None:
        self.thread.start()
        log.info("sidecar listening", extra={"port": self.port})

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _json_body(payload: Any) -> bytes:
    return orjson.dumps(payload, default=str)


BUSY = _json_body({"error": "too many connections"})
BUSY_RESPONSE = (
    b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Connection: close\r\nContent-Length: " + str(len(BUSY)).encode() + b"\r\n\r\n" + BUSY
)


class _Connection:
    """One accepted connection: its lane, its deadline, and whether it is still reading."""

    __slots__ = ("deadline", "done", "probe_lane", "reading", "sock")

    def __init__(self, sock: socket.socket, probe_lane: bool, timeout_s: float) -> None:
        self.sock = sock
        self.probe_lane = probe_lane
        self.deadline = time.monotonic() + timeout_s
        self.reading = True
        self.done = threading.Event()  # its thread has ended


class _DeadlineReader(io.RawIOBase):
    """Socket reads that share one deadline: each recv waits only for what is left."""

    def __init__(self, conn: _Connection) -> None:
        self._conn = conn

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        remaining = self._conn.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("request deadline passed")
        self._conn.sock.settimeout(remaining)
        return self._conn.sock.recv_into(buffer)


class _BoundedServer(ThreadingHTTPServer):
    """A thread per connection: at most `max_connections`, plus the probe lane."""

    daemon_threads = True
    request_queue_size = 128  # a burst of hostile connects must not drop a probe's SYN

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        max_connections: int,
        timeout_s: float = 5.0,
    ) -> None:
        super().__init__(address, handler)
        self.timeout_s = timeout_s
        self._slots = threading.BoundedSemaphore(max_connections)
        self._lock = threading.Lock()
        self.connections: dict[socket.socket, _Connection] = {}
        self._probe_lane: list[_Connection] = []

    def process_request(self, request: Any, client_address: Any) -> None:
        if self._slots.acquire(blocking=False):
            conn = _Connection(request, False, self.timeout_s)
        elif self._enter_probe_lane(request):
            conn = _Connection(request, True, min(PROBE_TIMEOUT_S, self.timeout_s))
        else:
            _answer_busy(request)
            self.shutdown_request(request)
            return
        with self._lock:
            self.connections[request] = conn
            if conn.probe_lane:
                self._probe_lane.append(conn)
        thread = threading.Thread(
            target=self._serve, args=(conn, client_address), name="http-request", daemon=True
        )
        thread.start()

    def _enter_probe_lane(self, request: Any) -> bool:
        """Room in the probe lane, making it by dropping the oldest connection that has
        not sent its request yet; False when every one of them is answering."""
        with self._lock:
            if len(self._probe_lane) < PROBE_SLOTS:
                return True
            victim = next((c for c in self._probe_lane if c.reading), None)
            if victim is None:
                return False
            self._probe_lane.remove(victim)
            victim.reading = False
        _answer_busy(victim.sock)
        with contextlib.suppress(OSError):
            victim.sock.shutdown(socket.SHUT_RDWR)  # wakes its thread, which then exits
        victim.done.wait(PROBE_TIMEOUT_S)  # so the lane never holds more threads than seats
        return True

    def mark_answering(self, sock: socket.socket) -> bool:
        """The request was read; False if the connection was dropped meanwhile."""
        with self._lock:
            conn = self.connections.get(sock)
            if conn is None or not conn.reading:
                return False
            conn.reading = False
            return True

    def _serve(self, conn: _Connection, client_address: Any) -> None:
        try:
            self.finish_request(conn.sock, client_address)
        except Exception:
            self.handle_error(conn.sock, client_address)
        finally:
            self.shutdown_request(conn.sock)
            with self._lock:
                self.connections.pop(conn.sock, None)
                if conn in self._probe_lane:
                    self._probe_lane.remove(conn)
            if not conn.probe_lane:
                self._slots.release()
            conn.done.set()


def _answer_busy(sock: Any) -> None:
    try:
        sock.settimeout(1.0)
        sock.sendall(BUSY_RESPONSE)
    except OSError:
        pass


def _handler_for(sidecar: Sidecar) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "healthstream"
        server: _BoundedServer

        def setup(self) -> None:
            super().setup()
            self.conn = self.server.connections[self.request]
            # Reads share the request's deadline; an idle or slow client is dropped at it.
            self.rfile = io.BufferedReader(_DeadlineReader(self.conn))

        def handle_one_request(self) -> None:
            try:
                super().handle_one_request()
            except (TimeoutError, ConnectionError):
                self.close_connection = True

        def send_error(
            self, code: int, message: str | None = None, explain: str | None = None
        ) -> None:
            """Malformed requests and unsupported methods answer JSON, like everything else."""
            self.close_connection = True
            if not self.server.mark_answering(self.request):
                return
            if self.request_version == "HTTP/0.9":  # garbage request line: answer as 1.0
                self.request_version = "HTTP/1.0"
            with contextlib.suppress(OSError):
                self._json(code, {"error": message or self.responses.get(code, ("error",))[0]})

        def do_GET(self) -> None:
            if not self.server.mark_answering(self.request):
                return  # dropped from the probe lane (already answered 503)
            url = urlparse(self.path)
            if self.conn.probe_lane and url.path not in PROBE_PATHS:
                self.close_connection = True
                self._send(503, BUSY, "application/json")
                return
            if url.path == "/metrics":
                body = generate_latest(sidecar.registry)
                self._send(200, body, CONTENT_TYPE_LATEST)
                return
            route = sidecar.routes.get(url.path)
            if route is None:
                self._json(404, {"error": "not found", "path": url.path})
                return
            try:
                status, payload = route(parse_qs(url.query))
            except Exception as exc:  # a bug in a report must not kill the sidecar
                log.exception("sidecar route failed")
                status, payload = 500, {"error": type(exc).__name__}
            self._json(status, payload)

        def _json(self, status: int, payload: Any) -> None:
            self._send(status, _json_body(payload), "application/json")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            # Writing gets what is left of the deadline, and at least a moment.
            self.connection.settimeout(max(0.5, self.conn.deadline - time.monotonic()))
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # quiet: scrapes are frequent
            return

    return Handler
