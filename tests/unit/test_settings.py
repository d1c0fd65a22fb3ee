import pytest

from common.kafka_client import kafka_client_properties
from consumer.settings import (
    KAFKA_CLIENT_PREFIX,
    MAX_PARTITIONS_AHEAD,
    ConfigError,
    load_settings,
    partitions_ahead,
)


def test_defaults_match_the_documented_names(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("KAFKA_TOPIC", "KAFKA_GROUP_ID", "DLQ_TOPIC", "BATCH_MAX_RECORDS"):
        monkeypatch.delenv(var, raising=False)
    s = load_settings()
    assert (s.kafka_topic, s.kafka_group_id, s.dlq_topic) == (
        "health-data",
        "health-data-consumers",
        "health-data.dlq",
    )
    assert (s.batch_max_records, s.batch_max_wait_ms, s.worker_queue_max_records) == (
        1000,
        250,
        5000,
    )
    assert s.max_readings_per_message == 1000 and s.shutdown_timeout_s == 30


def test_errors_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCH_MAX_RECORDS", "0")
    monkeypatch.setenv("HTTP_PORT", "http")
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert "BATCH_MAX_RECORDS" in str(err.value)
    assert "HTTP_PORT" in str(err.value)


def test_cross_field_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DLQ_TOPIC", "health-data")
    with pytest.raises(ConfigError, match="DLQ_TOPIC must differ"):
        load_settings()


def test_kafka_client_passthrough(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_CLIENT_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("KAFKA_CLIENT_SASL_MECHANISMS", "PLAIN")
    monkeypatch.setenv("KAFKA_CLIENT_SASL_USERNAME", "u")
    monkeypatch.setenv("KAFKA_CLIENT_SASL_PASSWORD", "p")
    s = load_settings()
    assert s.kafka_client["security.protocol"] == "SASL_SSL"
    assert s.kafka_client["sasl.mechanisms"] == "PLAIN"
    assert kafka_client_properties({"KAFKA_CLIENT_": "x", "OTHER": "y"}, KAFKA_CLIENT_PREFIX) == {}


def test_commit_owning_properties_cannot_be_overridden(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_CLIENT_ENABLE_AUTO_COMMIT", "true")
    with pytest.raises(ConfigError, match=r"enable\.auto\.commit"):
        load_settings()


def test_secrets_do_not_leak_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "mysql+pymysql://u:hunter2@db/health")
    s = load_settings()
    assert "hunter2" not in repr(s)
    assert s.database_url.get_secret_value().endswith("@db/health")


@pytest.mark.parametrize(
    ("horizon_s", "ahead"), [(122_160, 2047), (122_220, 2048), (122_221, 2049)]
)
def test_partitions_ahead_at_the_limit_minus_one_the_limit_and_plus_one(
    monkeypatch: pytest.MonkeyPatch, horizon_s: int, ahead: int
) -> None:
    """The keeper's partitions ahead (FUTURE_TIMESTAMP_HORIZON_S and one round, in
    PARTITION_MINUTES) against MAX_PARTITIONS_AHEAD, a quarter of MariaDB's 8,192."""
    assert partitions_ahead(1, horizon_s) == ahead
    monkeypatch.setenv("PARTITION_MINUTES", "1")
    monkeypatch.setenv("FUTURE_TIMESTAMP_HORIZON_S", str(horizon_s))
    if ahead <= MAX_PARTITIONS_AHEAD:
        assert load_settings().partition_minutes == 1
    else:
        with pytest.raises(ConfigError) as err:
            load_settings()
        assert "PARTITION_MINUTES=1" in str(err.value)
        assert "FUTURE_TIMESTAMP_HORIZON_S=122221" in str(err.value)


def test_no_partitions_kept_ahead_when_the_keeper_is_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARTITION_MINUTES", "0")
    monkeypatch.setenv("FUTURE_TIMESTAMP_HORIZON_S", str(10 * 366 * 86_400))
    assert partitions_ahead(0, 10 * 366 * 86_400) == 0
    assert load_settings().partition_minutes == 0
