"""The ASGI application: the legacy upload endpoint plus /livez, /readyz, /metrics and
/openapi.json (Starlette; served by uvicorn workers, see gateway.cli).

Answers are the legacy endpoint's: `{"status": "success"|"error", "message": ...}`. A 200
is sent only after the broker acknowledged every record of the upload; every refusal is
counted by reason and logged without the payload.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from gateway import logs
from gateway.auth import TokenCheck
from gateway.metrics import (
    CONTENT_TYPE,
    UPLOAD,
    GatewayMetrics,
    exposition,
    mark_worker_dead,
)
from gateway.openapi import openapi_document
from gateway.producer import GatewayProducer, Unavailable
from gateway.settings import GatewaySettings, load_settings
from gateway.split import UploadRejected, split_upload
from gateway.validate import dead_letter_reasons

log = logging.getLogger("gateway")

JSON = "application/json"
_PREVIEW = 200


def _render(status: str, message: str) -> bytes:
    return orjson.dumps({"status": status, "message": message})


def answer(status_code: int, status: str, message: str, **headers: str) -> Response:
    """The legacy endpoint's JSON answer."""
    body = _render(status, message)
    return Response(body, status_code=status_code, media_type=JSON, headers=headers or None)


_ONE_READING = _render("success", "Data uploaded: 1 readings of 1 devices")
_UNAVAILABLE = _render("error", "Kafka unavailable, retry later")
_INTERNAL = _render("error", "internal error")
_JSON_HEADERS = [(b"content-type", b"application/json")]


class _TooLarge(Exception):
    pass


class Gateway:
    """What one worker process holds: settings, metrics, the producer, the token check."""

    def __init__(
        self, settings: GatewaySettings, metrics: GatewayMetrics, producer: GatewayProducer
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.producer = producer
        self.tokens = TokenCheck(settings.api_token_header, settings.token_digests())
        self._counters: dict[tuple[str, int], Any] = {}
        self._retry_after = str(settings.retry_after_s)
        self._retry_headers = [*_JSON_HEADERS, (b"retry-after", self._retry_after.encode())]

    # --- lifecycle -------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def lifespan(self, _: Starlette) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        self.producer.start(loop)
        log.info(
            "gateway worker started",
            extra={
                "topic": self.settings.kafka_topic,
                "kafka_up": self.producer.kafka_up,
                "tokens": self.tokens.enabled,
                "strict": self.settings.reject_invalid_readings,
            },
        )
        try:
            yield
        finally:
            # uvicorn has let in-flight requests finish by now; deliver what is left.
            await loop.run_in_executor(None, self.producer.close, self.settings.delivery_timeout_s)
            mark_worker_dead(os.getpid())
            log.info("gateway worker stopped")

    # --- helpers -----------------------------------------------------------------------------

    def _count(self, handler: str, code: int) -> None:
        counter = self._counters.get((handler, code))
        if counter is None:
            counter = self._counters[handler, code] = self.metrics.requests.labels(
                handler, str(code)
            )
        counter.inc()

    async def _read_body(self, receive: Receive) -> bytes | None:
        """The whole body, or None when the client went away; _TooLarge past the limit."""
        limit = self.settings.max_body_bytes
        message = await receive()
        body = message.get("body", b"")
        if not message.get("more_body"):  # the common case: one chunk
            if message["type"] == "http.disconnect":
                return None
            if len(body) > limit:
                raise _TooLarge
            return bytes(body)
        chunks = [body]
        size = len(body)
        while message.get("more_body"):
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise _TooLarge
            chunks.append(chunk)
        return b"".join(chunks)

    # --- endpoints ---------------------------------------------------------------------------

    async def upload(self, scope: Scope, receive: Receive, send: Send) -> None:
        """POST /upload_health_data as a plain ASGI callable: it is the hot path, and the
        framework's Request/Response objects and middleware would cost as much as the
        upload's own work."""
        started = time.perf_counter()
        in_flight = self.metrics.in_flight
        in_flight.inc()
        try:
            code, body = await self._upload(scope, receive)
        except Exception:
            log.exception("upload failed")
            code, body = 500, _INTERNAL
        finally:
            in_flight.dec()
        headers = self._retry_headers if code == 503 else _JSON_HEADERS
        await send({"type": "http.response.start", "status": code, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        self.metrics.upload_duration.observe(time.perf_counter() - started)
        self._count(UPLOAD, code)

    def _reject_body(self, code: int, reason: str, message: str, body: bytes = b"") -> bytes:
        self.metrics.rejected.labels(reason).inc()
        log.info("upload rejected", extra={"status": code, "reason": reason})
        if body and log.isEnabledFor(logging.DEBUG):
            log.debug("rejected upload", extra={"reason": reason, "preview": body[:_PREVIEW]})
        return _render("error", message)

    async def _upload(self, scope: Scope, receive: Receive) -> tuple[int, bytes]:
        token_header = self.tokens.header.encode()
        token: str | None = None
        length: int | None = None
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit():
                length = int(value)
            elif name == token_header:
                token = value.decode("latin-1")
        if not self.tokens.allows(token):
            return 401, self._reject_body(401, "unauthorized", "missing or unknown API token")
        limit = self.settings.max_body_bytes
        if length is not None and length > limit:
            return 413, self._reject_body(413, "too_large", f"body larger than {limit} bytes")
        try:
            body = await self._read_body(receive)
        except _TooLarge:
            return 413, self._reject_body(413, "too_large", f"body larger than {limit} bytes")
        if body is None:
            return 499, _render("error", "client disconnected")
        try:
            upload = split_upload(body, max_readings=self.settings.max_readings_per_message)
        except UploadRejected as exc:
            return 400, self._reject_body(400, exc.reason, exc.message, body)
        if self.settings.reject_invalid_readings:
            problem = dead_letter_reasons(body)
            if problem is not None:
                return 400, self._reject_body(400, "invalid_readings", problem, body)
        try:
            await self.producer.send(upload.messages)
        except Unavailable as exc:
            self.metrics.produce_errors.labels(exc.reason).inc()
            log.debug("upload refused: kafka", extra={"reason": exc.reason, "error": exc.detail})
            return 503, _UNAVAILABLE
        self.metrics.readings_accepted.inc(upload.readings)
        if upload.readings == 1:
            return 200, _ONE_READING
        return 200, _render(
            "success", f"Data uploaded: {upload.readings} readings of {upload.devices} devices"
        )

    async def livez(self, _: Request) -> Response:
        fatal = self.producer.fatal or self.producer.stalled()
        response = (
            answer(200, "success", "alive")
            if fatal is None
            else answer(503, "error", f"fatal producer error: {fatal}")
        )
        self._count("/livez", response.status_code)
        return response

    async def readyz(self, _: Request) -> Response:
        up = self.producer.kafka_up
        response = (
            answer(200, "success", "ready")
            if up
            else answer(503, "error", "Kafka unreachable", **{"Retry-After": self._retry_after})
        )
        self._count("/readyz", response.status_code)
        return response

    async def metrics_endpoint(self, _: Request) -> Response:
        self._count("/metrics", 200)
        loop = asyncio.get_running_loop()
        body = await loop.run_in_executor(None, exposition, self.metrics)
        return Response(body, media_type=CONTENT_TYPE)

    async def openapi(self, _: Request) -> Response:
        self._count("/openapi.json", 200)
        document = openapi_document(self.settings.api_token_header)
        return Response(orjson.dumps(document), media_type=JSON)


async def _method_not_allowed(_: Request) -> Response:  # POST is served before routing
    return answer(405, "error", "method not allowed")


class GatewayApp:
    """POST /upload_health_data straight to the gateway; everything else (lifespan, the
    probes, /metrics, a GET on the upload path) through Starlette."""

    def __init__(self, gateway: Gateway, app: Starlette) -> None:
        self.gateway = gateway
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == UPLOAD and scope["method"] == "POST":
            await self.gateway.upload(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def build_app(gateway: Gateway) -> GatewayApp:
    routes = [
        Route(UPLOAD, _method_not_allowed, methods=["POST"]),
        Route("/livez", gateway.livez, methods=["GET"]),
        Route("/readyz", gateway.readyz, methods=["GET"]),
        Route("/metrics", gateway.metrics_endpoint, methods=["GET"]),
        Route("/openapi.json", gateway.openapi, methods=["GET"]),
    ]
    return GatewayApp(gateway, Starlette(routes=routes, lifespan=gateway.lifespan))


def create_app(
    settings: GatewaySettings | None = None,
    producer_factory: Callable[[dict[str, Any]], Any] | None = None,
) -> GatewayApp:
    """The app of one worker (uvicorn calls this with no arguments: settings from env)."""
    if settings is None:
        settings = load_settings()
        logs.configure(settings.log_level, settings.log_format)
    metrics = GatewayMetrics()
    producer = (
        GatewayProducer(settings, metrics)
        if producer_factory is None
        else GatewayProducer(settings, metrics, producer_factory)
    )
    return build_app(Gateway(settings, metrics, producer))
