"""Sidecar HTTP thread: liveness, readiness and Prometheus metrics.

Read-only and never touches the Kafka consumer: every answer is built from state the
poll loop and workers already publish, so a slow scrape cannot stall the data path.
Bounded: each connection gets a socket timeout and at most `max_connections` are served
at once (more are answered 503 at once, without a thread), so idle or hostile clients
cannot pile up threads. Every answer, errors included, is JSON (or the Prometheus text).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger(__name__)

Route = Callable[[dict[str, list[str]]], tuple[int, Any]]


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
        handler = _handler_for(self, timeout_s)
        self.server = _BoundedServer((host, port), handler, max_connections)
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


class _BoundedServer(ThreadingHTTPServer):
    """A thread per connection, but never more than `max_connections` threads."""

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        max_connections: int,
    ) -> None:
        super().__init__(address, handler)
        self._slots = threading.BoundedSemaphore(max_connections)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            try:
                request.settimeout(1.0)
                request.sendall(BUSY_RESPONSE)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


def _handler_for(sidecar: Sidecar, timeout_s: float) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "healthstream"
        timeout = timeout_s  # socket timeout: an idle or slow client is dropped

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
            if self.request_version == "HTTP/0.9":  # garbage request line: answer as 1.0
                self.request_version = "HTTP/1.0"
            with contextlib.suppress(OSError):
                self._json(code, {"error": message or self.responses.get(code, ("error",))[0]})

        def do_GET(self) -> None:
            url = urlparse(self.path)
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
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # quiet: scrapes are frequent
            return

    return Handler
