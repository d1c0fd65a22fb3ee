"""`health-gateway`: validate the configuration, then serve with GATEWAY_WORKERS uvicorn
workers (`health-gateway openapi` prints the OpenAPI document instead).

Several worker processes because one Python process uses one core for the request work;
the multiprocess metrics directory is prepared here, before any worker imports
prometheus-client, so /metrics sums all of them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile

from gateway import __version__, logs
from gateway.settings import ConfigError, load_settings

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

    import uvicorn

    try:
        uvicorn.run(
            "gateway.app:create_app",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            loop="uvloop",
            http="httptools",
            lifespan="on",
            access_log=False,
            log_config=None,
            server_header=False,
            proxy_headers=False,  # no proxy in front by default; saves work per request
            # In-flight uploads may wait up to the delivery timeout for their acks.
            timeout_graceful_shutdown=int(settings.delivery_timeout_s) + 5,
            backlog=4096,
        )
    finally:
        if own_directory:
            shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
