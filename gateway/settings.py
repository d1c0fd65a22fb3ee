"""The gateway's one typed settings object, read from GATEWAY_* variables (and `.env`).

Validated once at start-up, before any worker forks, so a bad deployment fails with the
variable's name instead of answering 500s later.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.kafka_client import kafka_client_properties

ENV_PREFIX = "GATEWAY_"
KAFKA_CLIENT_PREFIX = ENV_PREFIX + "KAFKA_CLIENT_"

# What the contract with the consumer rests on: a 200 means durable, keys land where the
# Java clients put them, and a broker retry cannot duplicate or reorder.
PROTECTED_PRODUCER_PROPS = frozenset(
    {
        "bootstrap.servers",
        "acks",
        "request.required.acks",
        "enable.idempotence",
        "partitioner",
        "message.timeout.ms",
        "delivery.timeout.ms",
        "queue.buffering.max.messages",
        "max.in.flight.requests.per.connection",
        "max.in.flight",
    }
)


class ConfigError(Exception):
    """Start-up configuration problem; the message names each bad variable."""


class GatewaySettings(BaseSettings):
    """Every knob of the gateway. Env var = GATEWAY_ + field name upper-cased."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", extra="ignore", frozen=True
    )

    # HTTP
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65_535)
    workers: int = Field(1, ge=1, le=64)  # one process serves ~15k uploads/s
    max_body_bytes: int = Field(1_048_576, ge=256, le=64 * 1_048_576)
    # Comma-separated; empty disables the check. Secret: never logged.
    api_tokens: SecretStr = SecretStr("")
    api_token_header: str = Field("X-Api-Token", min_length=1)
    retry_after_s: int = Field(5, ge=1, le=3600)
    # An idle keep-alive connection is closed after this; a request must arrive whole
    # within request_timeout_s (slow clients cannot hold connections open).
    keepalive_s: float = Field(5.0, gt=0, le=3600)
    request_timeout_s: float = Field(30.0, gt=0, le=3600)

    # Kafka
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    kafka_topic: str = Field("health-data", min_length=1)
    delivery_timeout_s: float = Field(10.0, gt=0, le=300)
    linger_ms: float = Field(5.0, ge=0, le=1000)
    queue_max_messages: int = Field(100_000, ge=1, le=10_000_000)
    kafka_check_interval_s: float = Field(1.0, gt=0, le=60)

    # What the gateway checks itself (docs/gateway.md)
    max_readings_per_message: int = Field(1000, ge=1, le=100_000)
    reject_invalid_readings: bool = False

    # Observability
    metrics_dir: str | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_format: Literal["json", "text"] = "json"

    # librdkafka pass-through, from GATEWAY_KAFKA_CLIENT_* variables.
    kafka_client: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _collect_kafka_client(cls, data: Any) -> Any:
        if isinstance(data, dict) and "kafka_client" not in data:
            data = {
                **data,
                "kafka_client": kafka_client_properties(os.environ, KAFKA_CLIENT_PREFIX),
            }
        return data

    @model_validator(mode="after")
    def _check_consistency(self) -> GatewaySettings:
        protected = PROTECTED_PRODUCER_PROPS & self.kafka_client.keys()
        if protected:
            names = ", ".join(sorted(protected))
            raise ValueError(
                f"GATEWAY_KAFKA_CLIENT_* may not override {names}: the gateway owns them"
            )
        header = self.api_token_header
        if not header.isascii() or any(c in header for c in " :\t\r\n"):
            raise ValueError("GATEWAY_API_TOKEN_HEADER must be a plain HTTP header name")
        tokens = self.token_list()
        if any(len(t) < 16 for t in tokens):
            raise ValueError("GATEWAY_API_TOKENS: every token must have at least 16 characters")
        return self

    def token_list(self) -> list[str]:
        return [t.strip() for t in self.api_tokens.get_secret_value().split(",") if t.strip()]

    def token_digests(self) -> frozenset[bytes]:
        """SHA-256 of each token: requests are checked by digest, so the comparison's
        timing says nothing about the tokens themselves."""
        return frozenset(hashlib.sha256(t.encode()).digest() for t in self.token_list())


def load_settings(**overrides: Any) -> GatewaySettings:
    """Build and validate settings; raise ConfigError naming the variables at fault."""
    try:
        return GatewaySettings(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            var = ENV_PREFIX + loc.upper() if loc else "settings"
            msg = err["msg"].removeprefix("Value error, ")
            problems.append(f"{var}: {msg}" if loc else msg)
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None
