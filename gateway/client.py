"""An open-loop HTTP load generator for the upload endpoint (simulator and benchmark).

Open loop: upload i is due at start + i/rate whatever happened to the earlier ones, and
its latency is measured from that due time, so a slow gateway cannot hide its queueing
by slowing the sender down (coordinated omission). Many keep-alive connections carry
the uploads concurrently, as a fleet of watches would.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import aiohttp

TOKEN_ENV = "HEALTH_GATEWAY_TOKEN"  # sent as X-Api-Token when set
UPLOAD_PATH = "/upload_health_data"


@dataclass(frozen=True, slots=True)
class Sent:
    index: int
    status: int  # 0 = no HTTP answer (connection error, timeout)
    due: float  # time.time() the upload was due
    answered: float  # time.time() the answer arrived

    @property
    def latency_s(self) -> float:
        return self.answered - self.due


async def _post_all(
    url: str,
    bodies: Iterator[bytes],
    rate: float,
    duration_s: float | None,
    connections: int,
    on_sent: Callable[[Sent], None],
    timeout_s: float,
) -> None:
    headers = {"Content-Type": "application/json"}
    token = os.environ.get(TOKEN_ENV)
    if token:
        headers["X-Api-Token"] = token
    target = url.rstrip("/") + UPLOAD_PATH
    slots = asyncio.Semaphore(connections)
    connector = aiohttp.TCPConnector(limit=connections, force_close=False)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(index: int, body: bytes, due: float) -> None:
            try:
                async with session.post(target, data=body, headers=headers) as response:
                    await response.read()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError):
                status = 0
            finally:
                slots.release()
            on_sent(Sent(index, status, due, time.time()))

        tasks: set[asyncio.Task[None]] = set()
        started_mono = time.monotonic()
        started_wall = time.time()
        for index, body in enumerate(bodies):
            offset = index / rate if rate > 0 else 0.0
            if duration_s is not None and (
                offset >= duration_s or time.monotonic() - started_mono >= duration_s
            ):
                break
            delay = started_mono + offset - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await slots.acquire()
            due = started_wall + offset if rate > 0 else time.time()
            task = asyncio.create_task(one(index, body, due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)


def post_uploads(
    url: str,
    bodies: Iterator[bytes],
    *,
    rate: float,
    duration_s: float | None,
    connections: int = 64,
    on_sent: Callable[[Sent], None],
    timeout_s: float = 30.0,
) -> None:
    """POST each body to `url`/upload_health_data at `rate` uploads/s (0 = as fast as the
    connections allow) until `bodies` or `duration_s` runs out; `on_sent` sees each answer."""
    try:
        import uvloop

        runner: Callable[..., None] = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        runner = asyncio.run
    runner(_post_all(url, bodies, rate, duration_s, connections, on_sent, timeout_s))
