"""The gateway's endpoints: the legacy upload plus /livez, /readyz, /metrics, /openapi.json.

Answers are the legacy endpoint's: `{"status": "success"|"error", "message": ...}`. A 200
is sent only after the broker acknowledged every record of the upload; every refusal is
counted by reason and logged without the payload.

The upload path is synchronous up to `produce()`: body checks, the split and the produce
run in the protocol's callback, and the last delivery report writes the answer. No
coroutine, task or future per upload: each would cost as much as the upload's own work.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import orjson

from gateway.auth import TokenCheck
from gateway.metrics import CONTENT_TYPE, UPLOAD, GatewayMetrics, Tally, exposition
from gateway.openapi import openapi_document
from gateway.producer import GatewayProducer, TooLarge, Unavailable
from gateway.server import Answer, Reply, Request
from gateway.settings import GatewaySettings
from gateway.split import UploadRejected, split_upload
from gateway.validate import dead_letter_reasons

log = logging.getLogger("gateway")

_PREVIEW = 200


def render(status: str, message: str) -> bytes:
    return orjson.dumps({"status": status, "message": message})


def answer(code: int, status: str, message: str, **headers: str) -> Answer:
    """The legacy endpoint's JSON answer."""
    extra = tuple((k.lower().encode(), v.encode()) for k, v in headers.items())
    return Answer(code, render(status, message), headers=extra)


ONE_READING = answer(200, "success", "Data uploaded: 1 readings of 1 devices")
INTERNAL = answer(500, "error", "internal error")
NOT_FOUND = answer(404, "error", "not found")
ALIVE = answer(200, "success", "alive")
READY = answer(200, "success", "ready")
POST_ONLY = answer(405, "error", "method not allowed", Allow="POST")
GET_ONLY = answer(405, "error", "method not allowed", Allow="GET, HEAD")
WRONG_TYPE_MESSAGE = "Content-Type must be application/json"


def is_json(content_type: bytes | None) -> bool:
    """`application/json` or `application/*+json`, any parameters (what Flask's
    `request.get_json()` reads; it refused everything else, see docs/gateway.md)."""
    if content_type is None:
        return False
    mime = content_type.split(b";", 1)[0].strip().lower()
    return mime == b"application/json" or (
        mime.startswith(b"application/") and mime.endswith(b"+json")
    )


class Gateway:
    """What one worker process holds: settings, metrics, the producer, the token check."""

    def __init__(
        self, settings: GatewaySettings, metrics: GatewayMetrics, producer: GatewayProducer
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.producer = producer
        self.tokens = TokenCheck(settings.api_token_header, settings.token_digests())
        self._token_header = self.tokens.header.encode()
        self._counters: dict[tuple[str, int], Any] = {}
        self._retry_after = str(settings.retry_after_s)
        self._unavailable = answer(
            503, "error", "Kafka unavailable, retry later", **{"Retry-After": self._retry_after}
        )
        self._not_ready = answer(
            503, "error", "Kafka unreachable", **{"Retry-After": self._retry_after}
        )
        self.in_flight = 0
        self.tally = Tally(metrics)
        self._routes: dict[bytes, Callable[[], Answer | None]] = {
            b"/livez": self.livez,
            b"/readyz": self.readyz,
            b"/openapi.json": self.openapi,
        }
        self._openapi: Answer | None = None

    # --- routing -----------------------------------------------------------------------------

    def dispatch(self, request: Request, reply: Reply) -> None:
        path = request.path
        method = request.method
        if path == b"/upload_health_data":
            if method == b"POST":
                self.upload(request, reply)
            else:
                self._reply(reply, UPLOAD, POST_ONLY)
            return
        route = self._routes.get(path)
        if route is None and path != b"/metrics":
            self._reply(reply, "other", NOT_FOUND)
        elif method not in (b"GET", b"HEAD"):
            self._reply(reply, path.decode("latin-1"), GET_ONLY)
        elif route is None:
            self.metrics_endpoint(reply)
        else:
            self._reply(reply, path.decode("latin-1"), route())

    def _reply(self, reply: Reply, handler: str, response: Answer | None) -> None:
        assert response is not None
        self._count(handler, response.status)
        reply.send(response)

    def _count(self, handler: str, code: int) -> None:
        counter = self._counters.get((handler, code))
        if counter is None:
            counter = self._counters[handler, code] = self.metrics.requests.labels(
                handler, str(code)
            )
        counter.inc()

    # --- the upload --------------------------------------------------------------------------

    def upload(self, request: Request, reply: Reply) -> None:
        """POST /upload_health_data: checks, split, produce; answered from the delivery report."""
        started = time.perf_counter()
        response = self._refusal(request)
        if response is not None:
            self._finish(reply, response, started)
            return
        try:
            upload = split_upload(request.body, max_readings=self.settings.max_readings_per_message)
        except UploadRejected as exc:
            message = self._reject(400, exc.reason, exc.message, request.body)
            self._finish(reply, message, started)
            return
        if self.settings.reject_invalid_readings:
            problem = dead_letter_reasons(request.body)
            if problem is not None:
                message = self._reject(400, "invalid_readings", problem, request.body)
                self._finish(reply, message, started)
                return

        def delivered(error: Exception | None) -> None:
            self.in_flight -= 1
            if error is None:
                tally = self.tally
                tally.records += len(upload.messages)
                tally.readings += upload.readings
                done = (
                    ONE_READING
                    if upload.readings == 1
                    else answer(
                        200,
                        "success",
                        f"Data uploaded: {upload.readings} readings of {upload.devices} devices",
                    )
                )
            else:
                done = self._kafka_refusal(error)
            self._finish(reply, done, started)

        try:
            self.producer.submit(upload.messages, delivered)
        except (Unavailable, TooLarge) as exc:
            self._finish(reply, self._kafka_refusal(exc), started)
            return
        self.in_flight += 1

    def _refusal(self, request: Request) -> Answer | None:
        """The answer for an upload refused before its body is parsed, or None."""
        token: str | None = None
        content_type: bytes | None = None
        token_header = self._token_header
        for name, value in request.headers:
            if name == b"content-type":
                content_type = value
            elif name == token_header:
                token = value.decode("latin-1")
        if not self.tokens.allows(token):
            return self._reject(401, "unauthorized", "missing or unknown API token")
        if request.oversize:
            limit = self.settings.max_body_bytes
            return self._reject(413, "too_large", f"body larger than {limit} bytes")
        if not is_json(content_type):
            return self._reject(415, "unsupported_media_type", WRONG_TYPE_MESSAGE)
        return None

    def _kafka_refusal(self, error: Exception) -> Answer:
        if isinstance(error, TooLarge):
            return self._reject(413, "record_too_large", str(error))
        reason = error.reason if isinstance(error, Unavailable) else "delivery_failed"
        self.metrics.produce_errors.labels(reason).inc()
        log.debug("upload refused: kafka", extra={"reason": reason, "error": str(error)})
        return self._unavailable

    def _finish(self, reply: Reply, response: Answer, started: float) -> None:
        reply.send(response)
        self.tally.upload(response.status, time.perf_counter() - started)

    def _reject(self, code: int, reason: str, message: str, body: bytes = b"") -> Answer:
        self.metrics.rejected.labels(reason).inc()
        log.info("upload rejected", extra={"status": code, "reason": reason})
        if body and log.isEnabledFor(logging.DEBUG):
            log.debug("rejected upload", extra={"reason": reason, "preview": body[:_PREVIEW]})
        return answer(code, "error", message)

    # --- the rest ----------------------------------------------------------------------------

    def flush_metrics(self) -> None:
        """Per-request counts into the shared metrics (each tick, and before a scrape)."""
        self.tally.flush()
        self.metrics.in_flight.set(self.in_flight)

    def livez(self) -> Answer:
        fatal = self.producer.fatal or self.producer.stalled()
        if fatal is None:
            return ALIVE
        return answer(503, "error", f"fatal producer error: {fatal}")

    def readyz(self) -> Answer:
        return READY if self.producer.kafka_up else self._not_ready

    def openapi(self) -> Answer:
        if self._openapi is None:
            document = openapi_document(self.settings.api_token_header)
            self._openapi = Answer(200, orjson.dumps(document))
        return self._openapi

    def metrics_endpoint(self, reply: Reply) -> None:
        """Exposition reads every worker's files: in a thread, off the event loop."""
        self._count("/metrics", 200)
        self.flush_metrics()
        future = asyncio.get_running_loop().run_in_executor(None, exposition, self.metrics)

        def done(f: asyncio.Future[bytes]) -> None:
            if f.exception() is None:
                reply.send(Answer(200, f.result(), content_type=CONTENT_TYPE.encode()))
            else:
                reply.send(INTERNAL)

        future.add_done_callback(done)
