"""Adoption planning (pure): what a legacy ljwx schema gets, and what it never loses."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import UniqueConstraint

from consumer.db import adopt
from consumer.db.adopt import ColumnInfo, IndexInfo, TableInfo, plan_adoption
from consumer.db.migrate import alembic_config
from consumer.db.tables import TABLES

# The legacy tables as inspect_schema reports them (tables.md), reduced to what matters
# to the plan: every column name, the types of the columns it looks at, the keys.
AUDIT = ("create_user", "create_user_id", "create_time", "update_user", "update_user_id",
         "update_time")  # fmt: skip
LEGACY_COLUMNS: dict[str, tuple[str, ...]] = {
    "t_user_health_data": (
        "id", "phone_number", "heart_rate", "pressure_high", "pressure_low", "blood_oxygen",
        "stress", "temperature", "step", "timestamp", "user_name", "latitude", "longitude",
        "altitude", "device_sn", "distance", "calorie", "is_deleted", *AUDIT, "upload_method",
        "user_id", "org_id", "sleep", "customer_id",
    ),
    "t_user_health_data_daily": (
        "id", "device_sn", "user_id", "org_id", "date", "sleep_data", "exercise_daily_data",
        "workout_data", "create_time", "update_time", "scientific_sleep_data",
    ),
    "t_user_health_data_weekly": (
        "id", "device_sn", "user_id", "org_id", "week_start", "exercise_week_data",
        "create_time", "update_time",
    ),
    "t_alert_rules": (
        "id", "rule_type", "physical_sign", "threshold_min", "threshold_max",
        "deviation_percentage", "trend_duration", "parameters", "trigger_condition",
        "alert_message", "severity_level", "is_deleted", *AUDIT, "notification_type",
        "customer_id", "metric", "event_type", "dsl", "level", "notify", "is_enabled",
    ),
    "t_alert_info": (
        "id", "rule_id", "alert_type", "device_sn", "alert_timestamp", "alert_desc",
        "severity_level", "alert_status", "assigned_user", "assigned_user_id", "is_deleted",
        *AUDIT, "longitude", "latitude", "altitude", "health_id", "user_id", "org_id",
        "customer_id", "responded_time", "response_duration", "source", "event_type", "metric",
        "value", "unit", "level", "status", "dedup_key", "throttle_until", "occur_at",
        "recover_at", "assigned_to", "extend",
    ),
}  # fmt: skip
LEGACY_TYPES = {
    ("t_user_health_data", "device_sn"): "varchar(255)",
    ("t_user_health_data", "upload_method"): "enum('wifi','bluetooth','common_event','esim')",
    ("t_user_health_data", "temperature"): "double(5,2)",
    ("t_user_health_data_daily", "device_sn"): "varchar(50)",
    ("t_user_health_data_weekly", "device_sn"): "varchar(50)",
    ("t_alert_info", "device_sn"): "varchar(20)",
    ("t_alert_info", "alert_timestamp"): "timestamp",
}
LEGACY_KEYS: dict[str, tuple[IndexInfo, ...]] = {
    "t_user_health_data": (
        IndexInfo("idx_timestamp", ("timestamp",), False),
        IndexInfo("idx_device_sn", ("device_sn",), False),
        IndexInfo("idx_health_customer_user_time", ("customer_id", "user_id", "timestamp"), False),
    ),
    "t_user_health_data_daily": (IndexInfo("uk_device_date", ("device_sn", "date"), True),),
    "t_user_health_data_weekly": (IndexInfo("uk_device_week", ("device_sn", "week_start"), True),),
    "t_alert_rules": (
        IndexInfo(
            "uk_rule_type_physical_sign_severity_customer",
            ("rule_type", "physical_sign", "severity_level", "customer_id"),
            True,
        ),
    ),
    "t_alert_info": (IndexInfo("idx_device_sn", ("device_sn",), False),),
}


def legacy_schema(**replace: TableInfo | None) -> dict[str, TableInfo]:
    tables = {}
    for name, columns in LEGACY_COLUMNS.items():
        infos = tuple(
            ColumnInfo(
                c,
                # Unlisted: a type the plan does not judge ("x").
                LEGACY_TYPES.get((name, c), "bigint" if c.endswith("id") else "x"),
                nullable=c not in ("id", "device_sn", "upload_method"),
                default="'wifi'" if c == "upload_method" else None,
            )
            for c in columns
        )
        keys = (IndexInfo("PRIMARY", ("id",), True), *LEGACY_KEYS[name])
        tables[name] = TableInfo(name, infos, keys)
    for name, table in replace.items():
        if table is None:
            del tables[name]
        else:
            tables[name] = table
    return tables


def target_shaped() -> dict[str, TableInfo]:
    """A database exactly like the migrated fresh schema."""
    out = {}
    for table in TABLES:
        columns = tuple(ColumnInfo(c.name, "x", nullable=bool(c.nullable)) for c in table.columns)
        keys = [IndexInfo("PRIMARY", ("id",), True)]
        keys += [
            IndexInfo(str(c.name), tuple(col.name for col in c.columns), True)
            for c in table.constraints
            if isinstance(c, UniqueConstraint)
        ]
        out[table.name] = TableInfo(table.name, columns, tuple(keys))
    return out


def actions(plan: adopt.Plan) -> list[tuple[str, str]]:
    return [(s.table, s.action.split(" ")[0] + " " + s.action.split(" ")[1]) for s in plan.steps]


def test_a_legacy_schema_gets_our_keys_and_columns_only() -> None:
    plan = plan_adoption(legacy_schema(), TABLES)
    assert actions(plan) == [
        ("t_user_health_data", "add columns"),
        ("t_user_health_data", "move rows"),
        ("t_user_health_data", "add unique"),
        ("t_user_health_data_daily", "add columns"),
        ("t_user_health_data_weekly", "add columns"),
        ("t_alert_info", "move rows"),
        ("t_alert_info", "add unique"),
    ]
    sql = adopt.render(plan)
    assert "ADD COLUMN upload_method_raw VARCHAR(64)" in sql
    assert "ADD UNIQUE KEY `uk_health_device_ts` (`device_sn`, `timestamp`)" in sql
    assert (
        "ADD UNIQUE KEY `uk_alert_device_rule_ts` (`device_sn`, `rule_id`, `alert_timestamp`)"
        in sql
    )
    daily = next(s for s in plan.steps if s.table == "t_user_health_data_daily")
    assert daily.action == "add columns customer_id, data_timestamp"
    # Added columns never need a value from a legacy writer that does not know them.
    assert "data_timestamp DATETIME NOT NULL DEFAULT '2000-01-01 00:00:00'" in sql


def test_the_plan_never_drops_renames_or_narrows() -> None:
    sql = adopt.render(plan_adoption(legacy_schema(), TABLES)).upper()
    for verb in ("DROP TABLE", "DROP COLUMN", "DROP INDEX", "RENAME", "CHANGE COLUMN", "TRUNCATE"):
        assert verb not in sql
    assert "MODIFY" not in sql  # the production ENUM already has 'esim'
    # The only DELETE is the move of duplicates, whose rows were copied first.
    assert sql.count("DELETE FROM `T_") == 2 and sql.count("INSERT INTO `T_") == 2
    assert sql.count("ALTER TABLE") == sql.count("LOCK=NONE")  # writers keep writing


def test_duplicates_move_to_a_side_table_in_chunks_keeping_the_lowest_id() -> None:
    plan = plan_adoption(legacy_schema(), TABLES)
    move = next(s for s in plan.steps if s.move is not None)
    create_side, pairs, lock, copy, delete = move.statements
    assert create_side == (
        "CREATE TABLE IF NOT EXISTS `t_user_health_data_dup` LIKE `t_user_health_data`"
    )
    assert "MIN(`id`) AS keep_id" in pairs and "t.`id` <> d.keep_id" in pairs
    assert "`device_sn` IS NOT NULL AND `timestamp` IS NOT NULL" in pairs
    # A chunk locks a row only while its keeper still holds the same key.
    assert "k.`id` = m.keep_id AND k.`device_sn` = t.`device_sn`" in lock
    assert lock.endswith("FOR UPDATE")
    assert copy.startswith("INSERT INTO `t_user_health_data_dup` (`id`, `phone_number`")
    assert copy.format(ids="1, 2").endswith("WHERE `id` IN (1, 2)")
    assert "`upload_method_raw`" in copy  # the column added by the step before
    assert delete.format(ids="7") == "DELETE FROM `t_user_health_data` WHERE `id` IN (7)"
    assert "HAVING COUNT(*) > 1" in move.move.count_sql  # type: ignore[union-attr]


def test_an_adopted_or_fresh_schema_needs_nothing() -> None:
    plan = plan_adoption(target_shaped(), TABLES)
    assert plan.nothing_to_do and plan.notes == ()
    assert adopt.render(plan) == "-- nothing to add"


def test_a_missing_table_is_created_as_on_a_fresh_database() -> None:
    plan = plan_adoption(legacy_schema(t_user_health_data_weekly=None), TABLES)
    create = next(s for s in plan.steps if s.table == "t_user_health_data_weekly")
    assert create.action == "create table (missing)"
    assert create.statements[0].startswith("CREATE TABLE t_user_health_data_weekly (")
    assert "CONSTRAINT uk_device_week UNIQUE (device_sn, week_start)" in create.statements[0]
    assert any(s.startswith("CREATE INDEX idx_week_start") for s in create.statements)


def test_an_old_enum_without_esim_is_extended_keeping_its_default() -> None:
    health = legacy_schema()["t_user_health_data"]
    for default in ("'wifi'", "wifi"):  # MariaDB quotes COLUMN_DEFAULT, MySQL does not
        old = ColumnInfo(
            "upload_method",
            "enum('wifi','bluetooth','common_event')",
            nullable=False,
            default=default,
            charset="utf8mb4",
            collation="utf8mb4_0900_ai_ci",
            comment="上传方式 100%",
        )
        columns = tuple(old if c.name == "upload_method" else c for c in health.columns)
        plan = plan_adoption(
            legacy_schema(t_user_health_data=TableInfo(health.name, columns, health.indexes)),
            TABLES,
        )
        step = next(s for s in plan.steps if s.action.startswith("extend enum"))
        assert step.statements == (
            "ALTER TABLE `t_user_health_data` MODIFY COLUMN `upload_method` "
            "ENUM('wifi', 'bluetooth', 'common_event', 'esim') CHARACTER SET utf8mb4 "
            "COLLATE utf8mb4_0900_ai_ci NOT NULL DEFAULT 'wifi' COMMENT '上传方式 100%'",
        )


def test_rules_without_their_legacy_unique_key_are_left_alone() -> None:
    rules = legacy_schema()["t_alert_rules"]
    bare = TableInfo(rules.name, rules.columns, (IndexInfo("PRIMARY", ("id",), True),))
    plan = plan_adoption(legacy_schema(t_alert_rules=bare), TABLES)
    assert not [s for s in plan.steps if s.table == "t_alert_rules"]


def test_an_existing_unique_key_in_another_order_or_name_counts() -> None:
    health = legacy_schema()["t_user_health_data"]
    keys = (*health.indexes, IndexInfo("legacy_uk", ("timestamp", "device_sn"), True))
    plan = plan_adoption(
        legacy_schema(t_user_health_data=TableInfo(health.name, health.columns, keys)), TABLES
    )
    assert [a for a in actions(plan) if a[0] == "t_user_health_data"] == [
        ("t_user_health_data", "add columns")
    ]


def test_a_taken_index_name_gets_a_suffix() -> None:
    health = legacy_schema()["t_user_health_data"]
    keys = (*health.indexes, IndexInfo("uk_health_device_ts", ("device_sn",), False))
    plan = plan_adoption(
        legacy_schema(t_user_health_data=TableInfo(health.name, health.columns, keys)), TABLES
    )
    assert "ADD UNIQUE KEY `uk_health_device_ts_2`" in adopt.render(plan)


def test_no_single_column_primary_key_is_refused() -> None:
    health = legacy_schema()["t_user_health_data"]
    keys = tuple(ix for ix in health.indexes if ix.name != "PRIMARY")
    with pytest.raises(adopt.AdoptionError, match="primary key"):
        plan_adoption(
            legacy_schema(t_user_health_data=TableInfo(health.name, health.columns, keys)),
            TABLES,
        )


def test_notes_name_the_narrow_legacy_columns() -> None:
    notes = plan_adoption(legacy_schema(), TABLES).notes
    assert any(n.startswith("t_alert_info.device_sn stays varchar(20)") for n in notes)
    assert any("db_rejected" in n for n in notes)
    assert any(n.startswith("t_user_health_data_daily.device_sn stays varchar(50)") for n in notes)
    assert any(n.startswith("t_alert_info.alert_timestamp stays TIMESTAMP") for n in notes)
    assert not any(n.startswith("t_user_health_data.device_sn") for n in notes)  # 255 = 255


def test_render_shows_the_chunk_transaction_and_skips_empty_moves() -> None:
    plan = plan_adoption(legacy_schema(), TABLES)
    moves = [i for i, s in enumerate(plan.steps) if s.move is not None]
    text = adopt.render(plan, {moves[0]: 3, moves[1]: 0})
    assert "--   3 row(s) to move" in text and "--   0 row(s) to move; nothing to run" in text
    assert text.count("START TRANSACTION;") == text.count("COMMIT;") == 1
    assert f"per chunk of {adopt.MOVE_CHUNK_ROWS} ids (READ COMMITTED" in text
    moving = text[text.index("3 row(s) to move") :]
    # The side table is DDL (an implicit commit): it comes before the transaction.
    assert moving.index("CREATE TABLE IF NOT EXISTS") < moving.index("START TRANSACTION;")
    assert (
        moving.index("START TRANSACTION;") < moving.index("DELETE FROM") < moving.index("COMMIT;")
    )


def test_enum_values() -> None:
    assert adopt.enum_values("enum('wifi','it''s')") == ("wifi", "it's")
    assert adopt.enum_values("varchar(32)") is None


def test_adoption_stamps_the_revision_whose_schema_it_builds() -> None:
    """plan_adoption builds tables.py's schema, which is head's, then stamps 0002 and
    upgrades. So every revision after 0002 must leave an adopted database unchanged
    (ADOPTED_UNCHANGED: 0003 drops an index only from our own schema, and tables.py no
    longer has it). A revision that must change adopted databases too needs the 0002
    target frozen for adoption first (docs/legacy-compatibility.md, "Future revisions")."""
    scripts = ScriptDirectory.from_config(alembic_config("mysql+pymysql://x@y/z"))
    after = [
        r for r in scripts.iterate_revisions("head", adopt.ADOPTED_REVISION)
        if r.revision != adopt.ADOPTED_REVISION
    ]  # fmt: skip
    assert "0003_drop_health_customer_ts" in [r.revision for r in after]
    for r in after:
        assert getattr(r.module, "ADOPTED_UNCHANGED", False) is True, r.revision


def test_target_tables_have_the_legacy_columns() -> None:
    for name, legacy_columns in LEGACY_COLUMNS.items():
        table = next(t for t in TABLES if t.name == name)
        assert set(legacy_columns) <= {c.name for c in table.columns}, name
    # Never narrower than legacy: 255 everywhere on a fresh database.
    assert {t.c.device_sn.type.length for t in TABLES if "device_sn" in t.c} == {255}


def with_table(name: str, **changes: Any) -> dict[str, TableInfo]:
    return legacy_schema(**{name: dataclasses.replace(legacy_schema()[name], **changes)})


def health_with_column(column: ColumnInfo) -> dict[str, TableInfo]:
    health = legacy_schema()["t_user_health_data"]
    return with_table("t_user_health_data", columns=(*health.columns, column))


def test_a_column_of_another_kind_is_refused_before_anything_runs() -> None:
    """A4: an INT upload_method_raw refuses every 'wifi' we write (error 1366)."""
    plan = plan_adoption(health_with_column(ColumnInfo("upload_method_raw", "int(11)")), TABLES)
    assert len(plan.conflicts) == 1
    assert plan.conflicts[0].startswith(
        "t_user_health_data.upload_method_raw is int(11) (integer); the consumer writes "
        "VARCHAR(64) (text)"
    )
    assert adopt.refusals(plan, {}, {}) == list(plan.conflicts)
    assert "-- REFUSED: t_user_health_data.upload_method_raw" in adopt.render(plan)


@pytest.mark.parametrize(
    ("column", "legacy_type"),
    [
        ("heart_rate", "bigint(20)"),  # integer into a wider integer
        ("temperature", "double"),  # decimal into a float: the notes say so
        ("temperature", "int(11)"),  # rounded: a note, not a refusal
        ("upload_method_raw", "text"),
        ("timestamp", "timestamp"),
        ("device_sn", "char(32)"),
    ],
)
def test_a_column_of_the_same_kind_is_kept(column: str, legacy_type: str) -> None:
    health = legacy_schema()["t_user_health_data"]
    columns = tuple(c for c in health.columns if c.name != column)
    plan = plan_adoption(
        with_table("t_user_health_data", columns=(*columns, ColumnInfo(column, legacy_type))),
        TABLES,
    )
    assert plan.conflicts == ()


def test_a_null_able_data_timestamp_is_kept_and_named() -> None:
    """A4: the sink reads a NULL there as the oldest time (test_adopt_online checks it)."""
    daily = legacy_schema()["t_user_health_data_daily"]
    column = ColumnInfo("data_timestamp", "datetime", nullable=True)
    plan = plan_adoption(
        with_table("t_user_health_data_daily", columns=(*daily.columns, column)), TABLES
    )
    assert plan.conflicts == ()
    assert any(
        n.startswith("t_user_health_data_daily.data_timestamp stays NULL-able") for n in plan.notes
    )


CASCADE = adopt.ForeignKey(
    "fk_alert_health", "t_alert_info", ("health_id",), "t_user_health_data", ("id",), "CASCADE"
)


def test_a_foreign_key_onto_a_duplicate_refuses_only_when_rows_point_at_one() -> None:
    """A1/A2: moving a duplicate a legacy alert points at would cascade-delete the alert."""
    plan = plan_adoption(with_table("t_user_health_data", referenced_by=(CASCADE,)), TABLES)
    i = next(i for i, s in enumerate(plan.steps) if s.move and s.table == "t_user_health_data")
    move = plan.steps[i].move
    assert move is not None and move.referenced_by == (CASCADE,)
    assert move.reference_sql == (
        "SELECT COUNT(*) FROM `t_alert_info` c JOIN `t_user_health_data` t ON "
        "c.`health_id` = t.`id` WHERE t.`id` IN ({rows})",
    )
    assert adopt.refusals(plan, {i: 3}, {i: 0}) == []  # nobody points at the duplicates
    assert adopt.refusals(plan, {i: 0}, {}) == []  # nothing to move
    (reason,) = adopt.refusals(plan, {i: 3}, {i: 2})
    assert reason.startswith("2 row(s) point at duplicate t_user_health_data rows")
    assert "ON DELETE CASCADE" in reason and "delete those rows with them" in reason
    assert any("fk_alert_health" in n for n in plan.notes)


def test_a_delete_trigger_refuses_a_move_and_other_triggers_are_noted() -> None:
    triggers = (
        adopt.Trigger("no_delete", "t_user_health_data", "BEFORE", "DELETE"),
        adopt.Trigger("audit", "t_user_health_data", "AFTER", "INSERT"),
    )
    plan = plan_adoption(with_table("t_user_health_data", triggers=triggers), TABLES)
    i = next(i for i, s in enumerate(plan.steps) if s.move and s.table == "t_user_health_data")
    (reason,) = adopt.refusals(plan, {i: 1}, {})
    assert reason.startswith("t_user_health_data has trigger no_delete (BEFORE DELETE)")
    assert adopt.refusals(plan, {i: 0}, {}) == []
    assert any(
        "trigger audit (AFTER INSERT) is kept; it fires on every row" in n for n in plan.notes
    )
