"""The OpenAPI 3.1 description of the gateway, served at /openapi.json.

Built from the contract's own JSON Schema (schemas/health-data.v1.schema.json), so the
request body documented here is exactly what the consumer accepts and cannot drift.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from gateway import __version__

_STATUS = {
    "type": "object",
    "required": ["status", "message"],
    "properties": {
        "status": {"type": "string", "enum": ["success", "error"]},
        "message": {"type": "string"},
    },
}


def _answer(description: str, status: str, example: str, **extra: Any) -> dict[str, Any]:
    return {
        "description": description,
        "content": {
            "application/json": {
                "schema": {"$ref": "#/components/schemas/UploadAnswer"},
                "example": {"status": status, "message": example},
            }
        },
        **extra,
    }


def _contract_schemas() -> dict[str, Any]:
    """The contract's schema as OpenAPI components: its $defs lifted beside it."""
    text = resources.files("schemas").joinpath("health-data.v1.schema.json").read_text()
    schema: dict[str, Any] = json.loads(text.replace('"#/$defs/', '"#/components/schemas/'))
    components: dict[str, Any] = schema.pop("$defs", {})
    schema.pop("$schema", None)
    schema.pop("$id", None)
    components["HealthDataMessage"] = schema
    return components


@cache
def openapi_document(token_header: str = "X-Api-Token") -> dict[str, Any]:
    retry_after = {
        "Retry-After": {
            "description": "Seconds to wait before retrying",
            "schema": {"type": "integer"},
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "healthstream ingest gateway",
            "version": __version__,
            "description": "The legacy upload endpoint of the watches, into Kafka keyed by "
            "device SN. A 200 means the broker acknowledged every record of the upload.",
        },
        "paths": {
            "/upload_health_data": {
                "post": {
                    "operationId": "uploadHealthData",
                    "summary": "Upload readings of one or several watches",
                    "security": [{}, {"apiToken": []}],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/HealthDataMessage"}
                            }
                        },
                    },
                    "responses": {
                        "200": _answer(
                            "Durable in Kafka: the broker acknowledged every record",
                            "success",
                            "Data uploaded: 1 readings of 1 devices",
                        ),
                        "400": _answer(
                            "Not JSON, or no reading with a device SN", "error", "no_device_sn"
                        ),
                        "401": _answer("Missing or unknown API token", "error", "unauthorized"),
                        "413": _answer(
                            "Body larger than GATEWAY_MAX_BODY_BYTES, or a device's record "
                            "larger than Kafka takes (never retried)",
                            "error",
                            "too large",
                        ),
                        "415": _answer(
                            "Content-Type missing or not application/json",
                            "error",
                            "Content-Type must be application/json",
                        ),
                        "503": _answer(
                            "Kafka unreachable or the producer queue full: retry later",
                            "error",
                            "Kafka unavailable, retry later",
                            headers=retry_after,
                        ),
                    },
                }
            },
            "/livez": {
                "get": {
                    "summary": "Process alive",
                    "responses": {
                        "200": {"description": "alive"},
                        "503": {"description": "fatal producer error"},
                    },
                }
            },
            "/readyz": {
                "get": {
                    "summary": "Kafka reachable",
                    "responses": {
                        "200": {"description": "ready"},
                        "503": {"description": "not ready"},
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus exposition",
                    "responses": {"200": {"description": "metrics"}},
                }
            },
        },
        "components": {
            "schemas": {"UploadAnswer": _STATUS, **_contract_schemas()},
            "securitySchemes": {
                "apiToken": {"type": "apiKey", "in": "header", "name": token_header}
            },
        },
    }
