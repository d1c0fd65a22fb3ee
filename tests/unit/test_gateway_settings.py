"""gateway.settings (GATEWAY_* variables, errors naming them), the CLI's config check and
the OpenAPI document."""

from __future__ import annotations

from typing import Any

import pytest

from common.kafka_client import kafka_client_properties
from gateway.cli import main
from gateway.openapi import openapi_document
from gateway.settings import KAFKA_CLIENT_PREFIX, ConfigError, load_settings


def test_safe_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GATEWAY_HOST", raising=False)
    s = load_settings()
    assert (s.host, s.port, s.kafka_topic) == ("127.0.0.1", 8080, "health-data")
    assert s.max_body_bytes == 1_048_576
    assert s.token_list() == [] and s.token_digests() == frozenset()
    assert s.reject_invalid_readings is False
    assert s.workers == 1, "one process per pod: the autoscaler adds pods, not processes"


def test_errors_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_PORT", "http")
    monkeypatch.setenv("GATEWAY_WORKERS", "0")
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert "GATEWAY_PORT" in str(err.value)
    assert "GATEWAY_WORKERS" in str(err.value)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"GATEWAY_KAFKA_CLIENT_ACKS": "1"}, "may not override acks"),
        ({"GATEWAY_KAFKA_CLIENT_ENABLE_IDEMPOTENCE": "false"}, "enable.idempotence"),
        ({"GATEWAY_KAFKA_CLIENT_PARTITIONER": "random"}, "partitioner"),
        ({"GATEWAY_API_TOKENS": "short"}, "GATEWAY_API_TOKENS"),
        ({"GATEWAY_API_TOKEN_HEADER": "X Token"}, "GATEWAY_API_TOKEN_HEADER"),
        ({"GATEWAY_MAX_BODY_BYTES": "10"}, "GATEWAY_MAX_BODY_BYTES"),
    ],
)
def test_what_the_contract_needs_cannot_be_configured_away(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=message):
        load_settings()


def test_kafka_client_passthrough_and_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_KAFKA_CLIENT_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("GATEWAY_API_TOKENS", " token-aaaaaaaaaaaaaaaa ,token-bbbbbbbbbbbbbbbb,")
    s = load_settings()
    assert s.kafka_client == {"security.protocol": "SASL_SSL"}
    assert s.token_list() == ["token-aaaaaaaaaaaaaaaa", "token-bbbbbbbbbbbbbbbb"]
    assert len(s.token_digests()) == 2
    assert "token-aaaa" not in repr(s)
    assert kafka_client_properties(
        {"GATEWAY_KAFKA_CLIENT_SASL_USERNAME": "u"}, KAFKA_CLIENT_PREFIX
    ) == {"sasl.username": "u"}


def test_cli_refuses_a_bad_configuration_with_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GATEWAY_RETRY_AFTER_S", "0")
    assert main(["check-config"]) == 2
    assert "GATEWAY_RETRY_AFTER_S" in capsys.readouterr().err
    monkeypatch.delenv("GATEWAY_RETRY_AFTER_S")
    assert main(["check-config"]) == 0


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_openapi_documents_the_endpoint_with_the_contract_schema() -> None:
    doc = openapi_document("X-Api-Token")
    assert doc["openapi"].startswith("3.1")
    post = doc["paths"]["/upload_health_data"]["post"]
    body = post["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/HealthDataMessage"}
    assert "Retry-After" in post["responses"]["503"]["headers"]
    schemas = doc["components"]["schemas"]
    assert {"HealthDataMessage", "Envelope", "Reading", "RelayEnvelope"} <= set(schemas)
    assert "deviceSn" in schemas["Reading"]["properties"]
    assert doc["components"]["securitySchemes"]["apiToken"]["name"] == "X-Api-Token"
    for ref in _refs(doc):  # every reference resolves inside the document
        node: Any = doc
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]
        assert isinstance(node, dict), ref
