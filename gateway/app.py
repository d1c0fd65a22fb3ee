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


def answer(status_code: int, status: str, message: str, **headers: str) -> Response:
    """The legacy endpoint's JSON answer."""
    body = orjson.dumps({"status": status, "message": message})
    return Response(body, status_code=status_code, media_type=JSON, headers=headers or None)


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

    def _reject(self, code: int, reason: str, message: str, body: bytes = b"") -> Response:
        self.metrics.rejected.labels(reason).inc()
        log.info("upload rejected", extra={"status": code, "reason": reason})
        if body and log.isEnabledFor(logging.DEBUG):
            log.debug("rejected upload", extra={"reason": reason, "preview": body[:_PREVIEW]})
        return answer(code, "error", message)

    async def _read_body(self, request: Request) -> bytes:
        limit = self.settings.max_body_bytes
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _TooLarge
            chunks.append(chunk)
        return b"".join(chunks)

    # --- endpoints ---------------------------------------------------------------------------

    async def upload(self, request: Request) -> Response:
        started = time.perf_counter()
        in_flight = self.metrics.in_flight
        in_flight.inc()
        try:
            response = await self._upload(request)
        except Exception:
            log.exception("upload failed")
            response = answer(500, "error", "internal error")
        finally:
            in_flight.dec()
        self.metrics.upload_duration.observe(time.perf_counter() - started)
        self._count(UPLOAD, response.status_code)
        return response

    async def _upload(self, request: Request) -> Response:
        if not self.tokens.allows(request.headers.get(self.tokens.header)):
            return self._reject(401, "unauthorized", "missing or unknown API token")
        limit = self.settings.max_body_bytes
        length = request.headers.get("content-length")
        too_large = f"body larger than {limit} bytes"
        if length is not None and length.isdigit() and int(length) > limit:
            return self._reject(413, "too_large", too_large)
        try:
            body = await self._read_body(request)
        except _TooLarge:
            return self._reject(413, "too_large", too_large)
        try:
            upload = split_upload(body, max_readings=self.settings.max_readings_per_message)
        except UploadRejected as exc:
            return self._reject(400, exc.reason, exc.message, body)
        if self.settings.reject_invalid_readings:
            problem = dead_letter_reasons(body)
            if problem is not None:
                return self._reject(400, "invalid_readings", problem, body)
        try:
            await self.producer.send(upload.messages)
        except Unavailable as exc:
            self.metrics.produce_errors.labels(exc.reason).inc()
            log.debug("upload refused: kafka", extra={"reason": exc.reason, "error": exc.detail})
            return answer(
                503, "error", "Kafka unavailable, retry later", **{"Retry-After": self._retry_after}
            )
        self.metrics.readings_accepted.inc(upload.readings)
        return answer(
            200,
            "success",
            f"Data uploaded: {upload.readings} readings of {upload.devices} devices",
        )

    async def livez(self, _: Request) -> Response:
        fatal = self.producer.fatal
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


def build_app(gateway: Gateway) -> Starlette:
    routes = [
        Route(UPLOAD, gateway.upload, methods=["POST"]),
        Route("/livez", gateway.livez, methods=["GET"]),
        Route("/readyz", gateway.readyz, methods=["GET"]),
        Route("/metrics", gateway.metrics_endpoint, methods=["GET"]),
        Route("/openapi.json", gateway.openapi, methods=["GET"]),
    ]
    return Starlette(routes=routes, lifespan=gateway.lifespan)


def create_app(
    settings: GatewaySettings | None = None,
    producer_factory: Callable[[dict[str, Any]], Any] | None = None,
) -> Starlette:
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
