"""Legacy ljwx columns, defaults and keys, so a legacy dashboard reads our tables unchanged.

Brings a 0001 database to the production shape of the legacy tables (docs/
legacy-compatibility.md): every legacy column with its default, `upload_method` as the
legacy ENUM (the value sent kept in `upload_method_raw`), device SN columns widened to 255,
the dashboards' indexes under their legacy names. Existing rows are kept and backfilled.

An adopted legacy database (`consumer.db.adopt`) is stamped at this revision: revisions
after it must apply to both shapes (see the docs), and this one refuses to downgrade one.

Revision ID: 0002_legacy_compat
Revises: 0001_initial
Create Date: 2026-11-28
"""

from __future__ import annotations

from alembic import op

revision = "0002_legacy_compat"
down_revision = "0001_initial"
branch_labels = None
depends_on = None

# Frozen copy of consumer.sinks.mysql_rows.legacy_upload_method, for rows 0001 stored.
_METHOD = "LOWER(TRIM(upload_method))"
UPLOAD_METHOD_MAPPING = (
    f"CASE WHEN upload_method IS NULL OR {_METHOD} = '' THEN 'wifi' "
    f"WHEN {_METHOD} IN ('wifi', 'bluetooth', 'common_event', 'esim') THEN {_METHOD} "
    f"WHEN {_METHOD} = '4g' THEN 'esim' ELSE 'common_event' END"
)
UPLOAD_ENUM = "ENUM('wifi','bluetooth','common_event','esim')"
ON_UPDATE = "DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP"
AUDIT = (
    "ADD COLUMN create_user VARCHAR(255) NULL, ADD COLUMN create_user_id BIGINT NULL, "
    "ADD COLUMN update_user VARCHAR(255) NULL, ADD COLUMN update_user_id BIGINT NULL"
)
ADOPTION_TABLE = "healthstream_adoption"


def upgrade() -> None:
    _health_data()
    for table, period, old_key, new_key in (
        ("t_user_health_data_daily", "date", "uk_daily_device_date", "uk_device_date"),
        ("t_user_health_data_weekly", "week_start", "uk_weekly_device_week", "uk_device_week"),
    ):
        op.execute(
            f"ALTER TABLE {table} "
            "MODIFY device_sn VARCHAR(255) NOT NULL, "
            "MODIFY data_timestamp DATETIME NOT NULL DEFAULT '2000-01-01 00:00:00', "
            f"MODIFY update_time DATETIME NOT NULL {ON_UPDATE}, "
            f"RENAME INDEX {old_key} TO {new_key}, "
            f"ADD INDEX idx_{period} ({period})"
        )
    _alert_rules()
    _alert_info()


def _health_data() -> None:
    op.execute("UPDATE t_user_health_data SET customer_id = 0 WHERE customer_id IS NULL")
    op.execute(
        "ALTER TABLE t_user_health_data ADD COLUMN upload_method_raw VARCHAR(64) NULL "
        "AFTER upload_method"
    )
    op.execute(
        "UPDATE t_user_health_data SET upload_method_raw = upload_method, "
        f"upload_method = {UPLOAD_METHOD_MAPPING}"
    )
    op.execute(
        "ALTER TABLE t_user_health_data "
        "MODIFY device_sn VARCHAR(255) NOT NULL, "
        "MODIFY customer_id BIGINT NOT NULL DEFAULT 0, "
        "MODIFY `timestamp` DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP, "
        f"MODIFY upload_method {UPLOAD_ENUM} NOT NULL DEFAULT 'wifi', "
        "ADD COLUMN phone_number VARCHAR(20) NULL, "
        "ADD COLUMN user_name VARCHAR(255) NOT NULL DEFAULT 'heguang', "
        "ADD COLUMN is_deleted TINYINT(1) NOT NULL DEFAULT 0, "
        f"{AUDIT}, ADD COLUMN update_time DATETIME NOT NULL {ON_UPDATE}, "
        "ADD INDEX idx_health_customer_user_time (customer_id, user_id, `timestamp`)"
    )


def _alert_rules() -> None:
    op.execute(
        "ALTER TABLE t_alert_rules "
        "MODIFY rule_type VARCHAR(64) NOT NULL DEFAULT 'metric', "
        "MODIFY physical_sign VARCHAR(64) NULL, "
        "MODIFY trend_duration INT NULL DEFAULT 1, "
        "MODIFY alert_message TEXT NULL, "
        "MODIFY severity_level VARCHAR(16) NULL DEFAULT 'minor', "
        "MODIFY customer_id BIGINT NULL DEFAULT 0, "
        f"MODIFY update_time DATETIME NOT NULL {ON_UPDATE}, "
        "ADD COLUMN deviation_percentage DECIMAL(5,2) NULL, "
        "ADD COLUMN parameters JSON NULL, "
        "ADD COLUMN trigger_condition TEXT NULL, "
        "ADD COLUMN is_deleted TINYINT(1) NULL DEFAULT 0, "
        "ADD COLUMN notification_type VARCHAR(50) NULL DEFAULT 'message', "
        "ADD COLUMN metric VARCHAR(64) NULL, "
        "ADD COLUMN event_type VARCHAR(64) NULL, "
        "ADD COLUMN dsl JSON NULL, "
        "ADD COLUMN level VARCHAR(16) NOT NULL DEFAULT 'minor', "
        "ADD COLUMN notify JSON NULL, "
        f"{AUDIT}, "
        "DROP INDEX idx_rules_enabled_customer, "
        "ADD UNIQUE KEY uk_rule_type_physical_sign_severity_customer "
        "(rule_type, physical_sign, severity_level, customer_id), "
        "ADD INDEX idx_rules_customer_enabled (customer_id, is_enabled, is_deleted), "
        "ADD INDEX idx_rules_metric (metric, is_enabled, is_deleted), "
        "ADD INDEX idx_rules_event_type (event_type, is_enabled, is_deleted), "
        "ADD INDEX idx_rules_level (level, is_enabled, is_deleted)"
    )
    # The legacy reads `level`; 0001 only had severity_level.
    op.execute(
        "UPDATE t_alert_rules SET level = LEFT(severity_level, 16) WHERE severity_level <> ''"
    )


def _alert_info() -> None:
    op.execute("UPDATE t_alert_info SET customer_id = 0 WHERE customer_id IS NULL")
    op.execute(
        "ALTER TABLE t_alert_info "
        "MODIFY alert_type VARCHAR(100) NOT NULL, "
        "MODIFY device_sn VARCHAR(255) NOT NULL, "
        "MODIFY alert_desc VARCHAR(2000) NULL, "
        "MODIFY severity_level VARCHAR(50) NOT NULL DEFAULT 'medium', "
        "MODIFY alert_status VARCHAR(50) NOT NULL DEFAULT 'pending', "
        "MODIFY customer_id BIGINT NOT NULL DEFAULT 0, "
        "ADD COLUMN source VARCHAR(16) NOT NULL DEFAULT 'server', "
        "ADD COLUMN metric VARCHAR(64) NULL, "
        "ADD COLUMN value DOUBLE NULL, "
        "ADD COLUMN unit VARCHAR(16) NULL, "
        "ADD COLUMN level VARCHAR(16) NOT NULL DEFAULT 'minor', "
        "ADD COLUMN status VARCHAR(24) NOT NULL DEFAULT 'NEW', "
        "ADD COLUMN occur_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP, "
        "ADD COLUMN assigned_user VARCHAR(255) NULL, "
        "ADD COLUMN assigned_user_id BIGINT NULL, "
        "ADD COLUMN is_deleted TINYINT(1) NULL DEFAULT 0, "
        "ADD COLUMN longitude DECIMAL(12,8) NULL DEFAULT '22.54036796', "
        "ADD COLUMN latitude DECIMAL(12,8) NULL DEFAULT '114.01508952', "
        "ADD COLUMN altitude DECIMAL(10,2) NULL DEFAULT '0.00', "
        "ADD COLUMN responded_time DATETIME NULL, "
        "ADD COLUMN response_duration INT UNSIGNED NULL, "
        "ADD COLUMN event_type VARCHAR(64) NULL, "
        "ADD COLUMN dedup_key VARCHAR(128) NULL, "
        "ADD COLUMN throttle_until DATETIME NULL, "
        "ADD COLUMN recover_at DATETIME NULL, "
        "ADD COLUMN assigned_to VARCHAR(64) NULL, "
        "ADD COLUMN extend JSON NULL, "
        f"{AUDIT}, ADD COLUMN update_time DATETIME NULL {ON_UPDATE}, "
        "DROP INDEX idx_alert_status_time, "
        "RENAME INDEX idx_alert_customer_status TO idx_alert_info_tenant_status, "
        "ADD INDEX idx_rule_id (rule_id), "
        "ADD INDEX idx_alert_type (alert_type), "
        "ADD INDEX idx_alert_info_health_user (health_id, user_id), "
        "ADD INDEX idx_alert_org_user (org_id, user_id), "
        "ADD INDEX idx_alert_customer_user (customer_id, user_id), "
        "ADD INDEX idx_alerts_status_level (status, level, occur_at), "
        "ADD INDEX idx_alerts_user_time (user_id, occur_at, is_deleted), "
        "ADD INDEX idx_alerts_metric_time (metric, occur_at, is_deleted), "
        "ADD INDEX idx_alerts_customer_status (customer_id, status, occur_at), "
        "ADD INDEX idx_alerts_dedup (dedup_key, throttle_until), "
        "ADD INDEX idx_alerts_org_status (org_id, status, level, occur_at)"
    )
    # Alerts 0001 stored: when they happened and at which level, as the new columns say.
    op.execute(
        "UPDATE t_alert_info SET occur_at = alert_timestamp, level = LEFT(severity_level, 16)"
    )


def downgrade() -> None:
    bind = op.get_bind()
    adopted = bind.exec_driver_sql(f"SHOW TABLES LIKE '{ADOPTION_TABLE}'").first()
    if adopted is not None:
        # 0001's downgrade drops the five tables: on an adopted database they are the
        # legacy system's production data.
        raise RuntimeError(
            "this database was adopted from a legacy ljwx deployment; "
            "refusing to downgrade (it would drop the legacy tables)"
        )
    op.execute(
        "ALTER TABLE t_alert_info "
        "DROP INDEX idx_rule_id, DROP INDEX idx_alert_type, DROP INDEX idx_alert_info_health_user, "
        "DROP INDEX idx_alert_org_user, DROP INDEX idx_alert_customer_user, "
        "DROP INDEX idx_alerts_status_level, DROP INDEX idx_alerts_user_time, "
        "DROP INDEX idx_alerts_metric_time, DROP INDEX idx_alerts_customer_status, "
        "DROP INDEX idx_alerts_dedup, DROP INDEX idx_alerts_org_status, "
        "RENAME INDEX idx_alert_info_tenant_status TO idx_alert_customer_status, "
        "ADD INDEX idx_alert_status_time (alert_status, create_time), "
        + _drop_columns(
            "source",
            "metric",
            "value",
            "unit",
            "level",
            "status",
            "occur_at",
            "assigned_user",
            "assigned_user_id",
            "is_deleted",
            "longitude",
            "latitude",
            "altitude",
            "responded_time",
            "response_duration",
            "event_type",
            "dedup_key",
            "throttle_until",
            "recover_at",
            "assigned_to",
            "extend",
            "create_user",
            "create_user_id",
            "update_user",
            "update_user_id",
            "update_time",
        )
        + ", MODIFY alert_type VARCHAR(64) NOT NULL, MODIFY device_sn VARCHAR(64) NOT NULL, "
        "MODIFY alert_desc VARCHAR(512) NULL, MODIFY severity_level VARCHAR(16) NOT NULL, "
        "MODIFY alert_status VARCHAR(16) NOT NULL DEFAULT 'pending', "
        "MODIFY customer_id BIGINT NULL"
    )
    op.execute(
        "ALTER TABLE t_alert_rules "
        "DROP INDEX uk_rule_type_physical_sign_severity_customer, "
        "DROP INDEX idx_rules_customer_enabled, DROP INDEX idx_rules_metric, "
        "DROP INDEX idx_rules_event_type, DROP INDEX idx_rules_level, "
        "ADD INDEX idx_rules_enabled_customer (is_enabled, customer_id), "
        + _drop_columns(
            "deviation_percentage",
            "parameters",
            "trigger_condition",
            "is_deleted",
            "notification_type",
            "metric",
            "event_type",
            "dsl",
            "level",
            "notify",
            "create_user",
            "create_user_id",
            "update_user",
            "update_user_id",
        )
        + ", MODIFY rule_type VARCHAR(64) NOT NULL, MODIFY physical_sign VARCHAR(64) NOT NULL, "
        "MODIFY trend_duration INT NOT NULL DEFAULT 1, MODIFY alert_message VARCHAR(255) NULL, "
        "MODIFY severity_level VARCHAR(16) NOT NULL DEFAULT 'warning', "
        "MODIFY customer_id BIGINT NOT NULL DEFAULT 0, "
        "MODIFY update_time DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP"
    )
    for table, period, old_key, new_key in (
        ("t_user_health_data_daily", "date", "uk_daily_device_date", "uk_device_date"),
        ("t_user_health_data_weekly", "week_start", "uk_weekly_device_week", "uk_device_week"),
    ):
        op.execute(
            f"ALTER TABLE {table} DROP INDEX idx_{period}, "
            f"RENAME INDEX {new_key} TO {old_key}, "
            "MODIFY device_sn VARCHAR(64) NOT NULL, MODIFY data_timestamp DATETIME NOT NULL, "
            "MODIFY update_time DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP"
        )
    op.execute(
        "ALTER TABLE t_user_health_data DROP INDEX idx_health_customer_user_time, "
        + _drop_columns(
            "phone_number",
            "user_name",
            "is_deleted",
            "create_user",
            "create_user_id",
            "update_user",
            "update_user_id",
            "update_time",
        )
        + ", MODIFY upload_method VARCHAR(32) NULL, MODIFY customer_id BIGINT NULL, "
        "MODIFY `timestamp` DATETIME NOT NULL, MODIFY device_sn VARCHAR(64) NOT NULL"
    )
    # The value sent is what 0001 stored.
    op.execute("UPDATE t_user_health_data SET upload_method = LEFT(upload_method_raw, 32)")
    op.execute("ALTER TABLE t_user_health_data DROP COLUMN upload_method_raw")


def _drop_columns(*names: str) -> str:
    return ", ".join(f"DROP COLUMN {name}" for name in names)
