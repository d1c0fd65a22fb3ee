"""consumer.db.tune.plan: which legacy indexes `migrate --tune-indexes` drops, and when not."""

from __future__ import annotations

from consumer.db.tune import plan

ADOPTED = {
    "PRIMARY": ("id",),
    "uk_health_device_ts": ("device_sn", "timestamp"),
    "idx_timestamp": ("timestamp",),
    "idx_device_sn": ("device_sn",),
    "idx_health_customer_device_time": ("customer_id", "device_sn", "timestamp"),
    "idx_health_customer_user_time": ("customer_id", "user_id", "timestamp"),
    "idx_health_customer_status": ("customer_id", "is_deleted"),
    "idx_health_cover_basic": (
        "customer_id", "user_id", "timestamp", "heart_rate", "pressure_high", "pressure_low",
        "blood_oxygen",
    ),
}  # fmt: skip


def test_an_adopted_table_loses_its_three_redundant_per_device_indexes_online() -> None:
    result = plan(ADOPTED)
    assert sorted(result.dropped) == [
        "idx_device_sn",
        "idx_health_customer_device_time",
        "idx_health_customer_user_time",
    ]
    assert result.sql.endswith("ALGORITHM=INPLACE, LOCK=NONE")
    assert result.kept == {}


def test_an_index_stays_while_the_one_serving_its_queries_is_missing() -> None:
    have = {k: v for k, v in ADOPTED.items() if k != "idx_health_cover_basic"}
    result = plan(have)
    assert "idx_health_customer_user_time" not in result.dropped
    assert "idx_health_cover_basic" in result.kept["idx_health_customer_user_time"]


def test_an_index_of_the_same_name_but_other_columns_stays() -> None:
    result = plan({**ADOPTED, "idx_device_sn": ("device_sn", "customer_id")})
    assert "idx_device_sn" in result.kept and "idx_device_sn" not in result.dropped


def test_nothing_to_do_on_our_own_schema() -> None:
    ours = {
        "PRIMARY": ("id",),
        "uk_health_device_ts": ("device_sn", "timestamp"),
        "idx_health_customer_user_time": ("customer_id", "user_id", "timestamp"),
    }
    result = plan(ours)
    assert (result.dropped, result.sql) == ([], "")
