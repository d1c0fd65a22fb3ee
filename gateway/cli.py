"""`health-gateway`: validate the configuration, then serve with GATEWAY_WORKERS worker
processes (`health-gateway openapi` prints the OpenAPI document instead).

One worker serves about 20,000 uploads/s on one core (docs/performance.md), so the
default is one; more workers fork after the socket is bound and accept on it together.
The multiprocess metrics directory is prepared here, before any worker imports
prometheus-client, so /metrics sums all of them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time

from common import logs
from gateway import __version__
from gateway.server import listen
from gateway.settings import ConfigError, GatewaySettings, load_settings

log = logging.getLogger("gateway")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # read by prometheus-client at import


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="health-gateway",
        description="healthstream ingest gateway: POST /upload_health_data into Kafka "
        "(configured by GATEWAY_* variables)",
    )
    parser.add_argument("--version", action="version", version=__version__)
    parser.add_argument(
        "command", nargs="?", default="serve", choices=["serve", "check-config", "openapi"]
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"health-gateway: {exc}", file=sys.stderr)
        return 2
    if args.command == "check-config":
        print("configuration OK")
        return 0
    if args.command == "openapi":
        from gateway.openapi import openapi_document

        print(json.dumps(openapi_document(settings.api_token_header), indent=2))
        return 0

    logs.configure(settings.log_level, settings.log_format)
    own_directory = settings.metrics_dir is None
    directory = settings.metrics_dir or tempfile.mkdtemp(prefix="health-gateway-metrics-")
    os.environ[MULTIPROC_ENV] = directory
    from gateway.metrics import prepare_multiprocess_dir

    prepare_multiprocess_dir(directory)
    check_limits(settings)
    try:
        sock = listen(settings.host, settings.port)
    except OSError as exc:
        print(f"health-gateway: GATEWAY_HOST/GATEWAY_PORT: cannot listen: {exc}", file=sys.stderr)
        return 2
    try:
        if settings.workers == 1:
            from gateway.worker import serve

            serve(settings, sock)
            return 0
        return supervise(settings, sock)
    finally:
        if own_directory:
            shutil.rmtree(directory, ignore_errors=True)


def check_limits(settings: GatewaySettings) -> None:
    """Warn, naming both values, when the body limit admits what Kafka cannot take."""
    from gateway.limits import limit_warnings, read_topic_max_bytes

    for warning in limit_warnings(settings, read_topic_max_bytes(settings)):
        log.warning(warning)


def supervise(settings: GatewaySettings, sock: socket.socket) -> int:
    """Fork GATEWAY_WORKERS workers on one listening socket, restart one that dies, and
    pass SIGTERM/SIGINT on to all of them (each drains its uploads, then exits)."""
    from gateway.worker import serve

    stopping = False

    def spawn() -> int:
        pid = os.fork()
        if pid == 0:  # the worker: default signal handling, its own loop
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            code = 0
            try:
                serve(settings, sock)
            except BaseException:
                log.exception("gateway worker crashed")
                code = 1
            finally:
                os._exit(code)
        return pid

    def forward(signum: int, _: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    workers: set[int] = set()
    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    workers.update(spawn() for _ in range(settings.workers))
    code = 0
    while workers:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        if pid not in workers:
            continue
        workers.discard(pid)
        exit_code = os.waitstatus_to_exitcode(status)
        if stopping:
            # A worker still starting dies of the signal itself (its loop's handlers are
            # not installed yet): it held nothing, so that is a clean stop too.
            clean = (0, -signal.SIGTERM, -signal.SIGINT)
            code = code or int(exit_code not in clean)
        else:
            log.error(
                "gateway worker exited: starting another",
                extra={"worker": pid, "exit_code": exit_code},
            )
            time.sleep(1.0)
            workers.add(spawn())
    return code if stopping else 1


if __name__ == "__main__":
    sys.exit(main())
