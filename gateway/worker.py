"""One gateway worker process: its producer, its endpoints and the HTTP server, on uvloop.

`gateway.cli` runs one in-process (GATEWAY_WORKERS=1) or forks several that accept on
the same listening socket. A worker stops on SIGTERM/SIGINT: it stops accepting, answers
the uploads it holds (their acks may take up to the delivery timeout), delivers what its
producer still queues, then exits.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
from collections.abc import Callable
from typing import Any

from gateway.app import INTERNAL, Gateway
from gateway.metrics import GatewayMetrics, mark_worker_dead
from gateway.producer import GatewayProducer
from gateway.server import HttpServer
from gateway.settings import GatewaySettings

log = logging.getLogger("gateway")

TICK_S = 1.0


def build(
    settings: GatewaySettings,
    producer_factory: Callable[[dict[str, Any]], Any] | None = None,
    topic_max_reader: Callable[[], int | None] | None = None,
) -> tuple[Gateway, HttpServer]:
    """The endpoints and their server, not yet started (tests run them in a thread)."""
    metrics = GatewayMetrics()
    kwargs: dict[str, Any] = {"topic_max_reader": topic_max_reader}
    if producer_factory is not None:
        kwargs["factory"] = producer_factory
    gateway = Gateway(settings, metrics, GatewayProducer(settings, metrics, **kwargs))
    server = HttpServer(
        gateway,
        max_body_bytes=settings.max_body_bytes,
        internal_error=INTERNAL,
        keepalive_s=settings.keepalive_s,
        request_timeout_s=settings.request_timeout_s,
        on_error=lambda: log.exception("request failed"),
    )
    return gateway, server


async def run(
    gateway: Gateway,
    server: HttpServer,
    sock: socket.socket,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve until `stop` is set (by default: SIGTERM/SIGINT), then drain and close."""
    loop = asyncio.get_running_loop()
    if stop is None:
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
    settings = gateway.settings
    gateway.producer.start(loop)
    await server.start(sock)
    log.info(
        "gateway worker started",
        extra={
            "topic": settings.kafka_topic,
            "kafka_up": gateway.producer.kafka_up,
            "tokens": gateway.tokens.enabled,
            "strict": settings.reject_invalid_readings,
            "record_limit": gateway.producer.record_limit,
        },
    )
    while True:  # per-request counts reach the shared metrics once a second
        gateway.flush_metrics()
        try:
            await asyncio.wait_for(stop.wait(), TICK_S)
            break
        except TimeoutError:
            continue
    await server.shutdown(settings.delivery_timeout_s + 5)
    gateway.flush_metrics()
    await loop.run_in_executor(None, gateway.producer.close, settings.delivery_timeout_s)
    mark_worker_dead(os.getpid())
    log.info("gateway worker stopped")


def serve(settings: GatewaySettings, sock: socket.socket) -> None:
    """A worker's whole life, in this process."""
    import uvloop

    gateway, server = build(settings)
    quiet_gc()
    uvloop.run(run(gateway, server, sock))


def quiet_gc() -> None:
    """Keep the cyclic GC off the hot path: everything loaded so far is frozen out of its
    scans, and a collection runs after 50,000 net allocations instead of 700. An upload
    makes no reference cycles, so its objects are freed by reference counting anyway;
    under load the default threshold spent ~18% of the event loop's CPU in gc (py-spy)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
