"""librdkafka properties from environment variables: `<PREFIX>SASL_MECHANISMS=PLAIN`
becomes `{"sasl.mechanisms": "PLAIN"}` (KAFKA_CLIENT_ for the consumer,
GATEWAY_KAFKA_CLIENT_ for the gateway). Which properties each may set is its own call."""

from __future__ import annotations

from collections.abc import Mapping


def kafka_client_properties(environ: Mapping[str, str], prefix: str) -> dict[str, str]:
    """Every `prefix*` variable (name case ignored) as a librdkafka property."""
    props: dict[str, str] = {}
    for name, value in environ.items():
        upper = name.upper()
        if upper.startswith(prefix) and len(name) > len(prefix):
            props[upper[len(prefix) :].lower().replace("_", ".")] = value
    return props
