"""The legacy ljwx schema as its production dump has it (shared/ljwx/tables.md), for tests.

Created with raw DDL, never through our migrations, with pre-existing rows (duplicates
included) and, for device binding, the `sys_user` / `sys_user_org` / `sys_org_units` tables.
MariaDB has no utf8mb4_0900_ai_ci, so the default collation.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Engine

LEGACY_DDL = (
    """CREATE TABLE t_user_health_data (
  id bigint NOT NULL AUTO_INCREMENT,
  phone_number varchar(20) DEFAULT NULL,
  heart_rate int DEFAULT NULL,
  pressure_high int DEFAULT NULL,
  pressure_low int DEFAULT NULL,
  blood_oxygen int DEFAULT NULL,
  stress int DEFAULT NULL,
  temperature double(5,2) DEFAULT NULL,
  step int DEFAULT NULL,
  timestamp datetime NOT NULL DEFAULT CURRENT_TIMESTAMP,
  user_name varchar(255) NOT NULL DEFAULT 'heguang',
  latitude decimal(10,6) DEFAULT NULL,
  longitude decimal(10,6) DEFAULT NULL,
  altitude double DEFAULT NULL,
  device_sn varchar(255) NOT NULL,
  distance double DEFAULT NULL,
  calorie double DEFAULT NULL,
  is_deleted tinyint(1) NOT NULL DEFAULT '0',
  create_user varchar(255) DEFAULT NULL,
  create_user_id bigint DEFAULT NULL,
  create_time timestamp NOT NULL DEFAULT CURRENT_TIMESTAMP,
  update_user varchar(255) DEFAULT NULL,
  update_user_id bigint DEFAULT NULL,
  update_time timestamp NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,
  upload_method enum({methods}) NOT NULL DEFAULT 'wifi',
  user_id bigint DEFAULT NULL,
  org_id bigint DEFAULT NULL,
  sleep double DEFAULT NULL,
  customer_id bigint NOT NULL DEFAULT '0',
  PRIMARY KEY (id),
  KEY idx_timestamp (timestamp),
  KEY idx_device_sn (device_sn),
  KEY idx_health_customer_device_time (customer_id,device_sn,timestamp),
  KEY idx_health_customer_user_time (customer_id,user_id,timestamp),
  KEY idx_health_customer_status (customer_id,is_deleted),
  KEY idx_health_cover_basic (customer_id,user_id,timestamp,heart_rate,pressure_high,
    pressure_low,blood_oxygen)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
    """CREATE TABLE t_user_health_data_daily (
  id bigint NOT NULL AUTO_INCREMENT,
  device_sn varchar(50) NOT NULL,
  user_id bigint DEFAULT NULL,
  org_id bigint DEFAULT NULL,
  date date NOT NULL,
  sleep_data json DEFAULT NULL,
  exercise_daily_data json DEFAULT NULL,
  workout_data json DEFAULT NULL,
  create_time datetime NOT NULL DEFAULT CURRENT_TIMESTAMP,
  update_time datetime NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,
  scientific_sleep_data json DEFAULT NULL,
  PRIMARY KEY (id),
  UNIQUE KEY uk_device_date (device_sn,date),
  KEY idx_date (date),
  KEY idx_device_sn (device_sn)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
    """CREATE TABLE t_user_health_data_weekly (
  id bigint NOT NULL AUTO_INCREMENT,
  device_sn varchar(50) NOT NULL,
  user_id bigint DEFAULT NULL,
  org_id bigint DEFAULT NULL,
  week_start date NOT NULL,
  exercise_week_data json DEFAULT NULL,
  create_time datetime NOT NULL DEFAULT CURRENT_TIMESTAMP,
  update_time datetime NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,
  PRIMARY KEY (id),
  UNIQUE KEY uk_device_week (device_sn,week_start),
  KEY idx_device_sn (device_sn),
  KEY idx_week_start (week_start)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
    """CREATE TABLE t_alert_rules (
  id bigint NOT NULL AUTO_INCREMENT,
  rule_type varchar(50) NOT NULL DEFAULT 'metric',
  physical_sign varchar(50) DEFAULT NULL,
  threshold_min decimal(10,2) DEFAULT NULL,
  threshold_max decimal(10,2) DEFAULT NULL,
  deviation_percentage decimal(5,2) DEFAULT NULL,
  trend_duration int DEFAULT NULL,
  parameters json DEFAULT NULL,
  trigger_condition text,
  alert_message text,
  severity_level varchar(16) DEFAULT 'minor',
  is_deleted tinyint(1) DEFAULT '0',
  create_user varchar(255) DEFAULT NULL,
  create_user_id bigint DEFAULT NULL,
  create_time timestamp NULL DEFAULT CURRENT_TIMESTAMP,
  update_user varchar(255) DEFAULT NULL,
  update_user_id bigint DEFAULT NULL,
  update_time timestamp NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,
  notification_type varchar(50) DEFAULT 'message',
  customer_id bigint DEFAULT '0',
  metric varchar(64) DEFAULT NULL,
  event_type varchar(64) DEFAULT NULL,
  dsl json DEFAULT NULL,
  level varchar(16) NOT NULL DEFAULT 'minor',
  notify json DEFAULT NULL,
  is_enabled tinyint(1) NOT NULL DEFAULT '1',
  PRIMARY KEY (id),
  UNIQUE KEY uk_rule_type_physical_sign_severity_customer (rule_type,physical_sign,
    severity_level,customer_id),
  KEY idx_rules_metric (metric,is_enabled,is_deleted),
  KEY idx_rules_event_type (event_type,is_enabled,is_deleted),
  KEY idx_rules_level (level,is_enabled,is_deleted),
  KEY idx_rules_customer_enabled (customer_id,is_enabled,is_deleted)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
    """CREATE TABLE t_alert_info (
  id bigint unsigned NOT NULL AUTO_INCREMENT,
  rule_id bigint NOT NULL,
  alert_type varchar(100) NOT NULL,
  device_sn varchar(20) NOT NULL,
  alert_timestamp timestamp NULL DEFAULT CURRENT_TIMESTAMP,
  alert_desc varchar(2000) DEFAULT NULL,
  severity_level varchar(50) NOT NULL DEFAULT 'medium',
  alert_status varchar(50) DEFAULT 'pending',
  assigned_user varchar(255) DEFAULT NULL,
  assigned_user_id bigint DEFAULT NULL,
  is_deleted tinyint(1) DEFAULT '0',
  create_user varchar(255) DEFAULT NULL,
  create_user_id bigint DEFAULT NULL,
  create_time timestamp NULL DEFAULT CURRENT_TIMESTAMP,
  update_user varchar(255) DEFAULT NULL,
  update_user_id bigint DEFAULT NULL,
  update_time timestamp NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,
  longitude decimal(12,8) DEFAULT '22.54036796',
  latitude decimal(12,8) DEFAULT '114.01508952',
  altitude decimal(10,2) DEFAULT '0.00',
  health_id bigint DEFAULT NULL,
  user_id bigint DEFAULT NULL,
  org_id bigint DEFAULT NULL,
  customer_id bigint NOT NULL DEFAULT '0',
  responded_time timestamp NULL DEFAULT NULL,
  response_duration int unsigned DEFAULT NULL,
  source varchar(16) NOT NULL DEFAULT 'server',
  event_type varchar(64) DEFAULT NULL,
  metric varchar(64) DEFAULT NULL,
  value double DEFAULT NULL,
  unit varchar(16) DEFAULT NULL,
  level varchar(16) NOT NULL DEFAULT 'minor',
  status varchar(24) NOT NULL DEFAULT 'NEW',
  dedup_key varchar(128) DEFAULT NULL,
  throttle_until datetime DEFAULT NULL,
  occur_at datetime NOT NULL DEFAULT CURRENT_TIMESTAMP,
  recover_at datetime DEFAULT NULL,
  assigned_to varchar(64) DEFAULT NULL,
  extend json DEFAULT NULL,
  PRIMARY KEY (id),
  KEY idx_device_sn (device_sn),
  KEY idx_alert_type (alert_type),
  KEY idx_rule_id (rule_id),
  KEY idx_alert_info_health_user (health_id,user_id),
  KEY idx_alert_info_tenant_status (customer_id,alert_status),
  KEY idx_alert_org_id (org_id),
  KEY idx_alert_user_id (user_id),
  KEY idx_alert_org_user (org_id,user_id),
  KEY idx_alert_customer_user (customer_id,user_id),
  KEY idx_alerts_status_level (status,level,occur_at DESC),
  KEY idx_alerts_user_time (user_id,occur_at DESC,is_deleted),
  KEY idx_alerts_metric_time (metric,occur_at DESC,is_deleted),
  KEY idx_alerts_customer_status (customer_id,status,occur_at DESC),
  KEY idx_alerts_dedup (dedup_key,throttle_until),
  KEY idx_alerts_org_status (org_id,status,level,occur_at DESC)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
)
PRODUCTION_METHODS = "'wifi','bluetooth','common_event','esim'"
OLD_METHODS = "'wifi','bluetooth','common_event'"  # before production added esim

SN = "CRFTQ23409001890"
T0 = dt.datetime(2025, 5, 1, 8, 0, 0)

# Pre-existing legacy rows. (device_sn, minute) repeats: the legacy SELECT-then-INSERT
# raced and stored some readings twice or three times.
LEGACY_HEALTH = [(SN, 0, 70), (SN, 1, 71), (SN, 1, 72), (SN, 2, 73), (SN, 2, 74), (SN, 2, 75),
                 ("OTHER0000000001", 0, 60), ("OTHER0000000001", 1, 61)]  # fmt: skip
HEALTH_DUPLICATES = 3
LEGACY_ALERTS = [(SN, 1, 1), (SN, 1, 1), (SN, 2, 1), (SN, 2, 2)]  # (sn, minute, rule_id)
ALERT_DUPLICATES = 1


def create_legacy(engine: Engine, methods: str = PRODUCTION_METHODS) -> None:
    with engine.begin() as conn:
        for ddl in LEGACY_DDL:
            conn.exec_driver_sql(ddl.replace("{methods}", methods))
        for sn, minute, hr in LEGACY_HEALTH:
            conn.exec_driver_sql(
                "INSERT INTO t_user_health_data (device_sn, timestamp, heart_rate, customer_id, "
                "user_id, upload_method) VALUES (%s, %s, %s, 5, 8, 'bluetooth')",
                (sn, T0 + dt.timedelta(minutes=minute), hr),
            )
        for sn, minute, rule_id in LEGACY_ALERTS:
            conn.exec_driver_sql(
                "INSERT INTO t_alert_info (rule_id, alert_type, device_sn, alert_timestamp, "
                "severity_level) VALUES (%s, 'heart_rate', %s, %s, 'critical')",
                (rule_id, sn, T0 + dt.timedelta(minutes=minute)),
            )
        conn.exec_driver_sql(
            "INSERT INTO t_user_health_data_daily (device_sn, date, sleep_data, workout_data) "
            """VALUES (%s, %s, '{"legacy": 1}', '{"w": 0}')""",
            (SN, T0.date()),
        )
        conn.exec_driver_sql(
            "INSERT INTO t_alert_rules (rule_type, physical_sign, threshold_min, threshold_max, "
            "severity_level, level, customer_id) VALUES "
            "('heart_rate', 'heart_rate', 40, 120, 'critical', 'major', 0)"
        )


SYS_DDL = (
    """CREATE TABLE sys_user (
  id bigint NOT NULL AUTO_INCREMENT,
  user_name varchar(64) DEFAULT NULL,
  device_sn varchar(50) DEFAULT NULL,
  is_deleted tinyint unsigned DEFAULT '0',
  customer_id bigint NOT NULL DEFAULT '0',
  PRIMARY KEY (id),
  KEY idx_sys_user_device_sn (device_sn)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
    """CREATE TABLE sys_user_org (
  id bigint NOT NULL,
  user_id bigint DEFAULT NULL,
  org_id bigint DEFAULT NULL,
  principal varchar(2) DEFAULT '0',
  create_user varchar(64) NOT NULL,
  create_user_id bigint NOT NULL,
  create_time datetime NOT NULL,
  update_user varchar(64) DEFAULT NULL,
  update_user_id bigint DEFAULT NULL,
  update_time datetime DEFAULT NULL,
  is_deleted tinyint unsigned DEFAULT '0',
  customer_id bigint NOT NULL DEFAULT '0',
  PRIMARY KEY (id),
  KEY idx_sys_user_org_user_id (user_id),
  KEY idx_sys_user_org_org_id (org_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
    """CREATE TABLE sys_org_units (
  id bigint NOT NULL AUTO_INCREMENT,
  parent_id bigint DEFAULT NULL,
  name varchar(200) NOT NULL,
  code varchar(100) DEFAULT NULL,
  abbr varchar(50) DEFAULT NULL,
  level int NOT NULL DEFAULT '0',
  ancestors varchar(500) NOT NULL,
  description varchar(500) DEFAULT NULL,
  sort int DEFAULT '999',
  create_user varchar(64) NOT NULL,
  create_user_id bigint NOT NULL,
  create_time datetime NOT NULL,
  update_user varchar(64) DEFAULT NULL,
  update_user_id bigint DEFAULT NULL,
  update_time datetime DEFAULT NULL,
  status varchar(2) DEFAULT '1',
  is_deleted tinyint unsigned DEFAULT '0',
  customer_id bigint NOT NULL DEFAULT '0',
  PRIMARY KEY (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
)


def create_bindings(
    engine: Engine, users: list[tuple[int, str, int]], orgs: list[tuple[int, str]]
) -> None:
    """sys_* tables with `users` (user id, device SN, org id) and `orgs` (org id, ancestors)."""
    now = dt.datetime(2025, 1, 1)
    with engine.begin() as conn:
        for ddl in SYS_DDL:
            conn.exec_driver_sql(ddl)
        for org_id, ancestors in orgs:
            conn.exec_driver_sql(
                "INSERT INTO sys_org_units (id, name, ancestors, create_user, create_user_id, "
                "create_time) VALUES (%s, %s, %s, 'admin', 1, %s)",
                (org_id, f"org {org_id}", ancestors, now),
            )
        for i, (user_id, sn, org_id) in enumerate(users, start=1):
            conn.exec_driver_sql(
                "INSERT INTO sys_user (id, user_name, device_sn) VALUES (%s, %s, %s)",
                (user_id, f"user {user_id}", sn),
            )
            conn.exec_driver_sql(
                "INSERT INTO sys_user_org (id, user_id, org_id, create_user, create_user_id, "
                "create_time) VALUES (%s, %s, %s, 'admin', 1, %s)",
                (i, user_id, org_id, now),
            )
