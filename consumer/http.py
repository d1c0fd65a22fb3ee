"""Sidecar HTTP thread: liveness, readiness and Prometheus metrics.

Read-only and never touches the Kafka consumer: every answer is built from state the
poll loop and workers already publish, so a slow scrape cannot stall the data path.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from consumer.metrics import Metrics

log = logging.getLogger(__name__)

Route = Callable[[dict[str, list[str]]], tuple[int, Any]]


class Sidecar:
    """Serves `routes` (JSON) and `/metrics` on its own daemon thread."""

    def __init__(self, host: str, port: int, metrics: Metrics, routes: dict[str, Route]) -> None:
        self.metrics = metrics
        self.routes = routes
        handler = _handler_for(self)
        self.server = ThreadingHTTPServer((host, port), handler)
        self.server.daemon_threads = True
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


def _handler_for(sidecar: Sidecar) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "healthstream"

        def do_GET(self) -> None:
            url = urlparse(self.path)
            if url.path == "/metrics":
                body = generate_latest(sidecar.metrics.registry)
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
            self._send(status, orjson.dumps(payload, default=str), "application/json")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # quiet: scrapes are frequent
            return

    return Handler
