"""The pure parts of consumer.sinks.mysql: TLS arguments, the LOAD DATA statement, the
error classes."""

from __future__ import annotations

from decimal import Decimal

import pymysql
import pytest
from sqlalchemy.engine import make_url

from consumer.sinks.errors import Retryable
from consumer.sinks.mysql import (
    HEALTH_LOAD_SQL,
    LOAD_DATA_FILE,
    BugInStatement,
    Contention,
    RowRejected,
    RowsNotStored,
    classify,
    duplicate_key_name,
    tls_args,
)
from consumer.sinks.mysql_rows import HEALTH_COLUMNS


@pytest.mark.parametrize(
    "url",
    [
        "mysql+pymysql://root@127.0.0.1:3306/health",
        "mysql+pymysql://root@127.0.0.2/health",
        "mysql+pymysql://u:p@localhost/health",
        "mysql+pymysql://u:p@LOCALHOST/health",
        "mysql+pymysql://u:p@[::1]:3306/health",
        "mysql+pymysql://u:p@/health",
        "mysql+pymysql://u:p@db/health?unix_socket=/run/mysqld/mysqld.sock",
    ],
)
def test_a_local_server_without_tls_options_skips_the_tls_set_up(url: str) -> None:
    assert tls_args(make_url(url)) == {"ssl_disabled": True}


@pytest.mark.parametrize(
    "url",
    [
        # Remote: PyMySQL's default (preferred TLS) stays.
        "mysql+pymysql://u:p@mysql:3306/health",
        "mysql+pymysql://u:p@mysql.example.internal:3306/health",
        "mysql+pymysql://u:p@10.0.0.5/health",
        # Anything about TLS in the URL: configured by the user, left alone.
        "mysql+pymysql://u:p@127.0.0.1/health?ssl_ca=/etc/ca.pem",
        "mysql+pymysql://u:p@localhost/health?ssl_verify_cert=true",
        "mysql+pymysql://u:p@localhost/health?SSL_DISABLED=false",
        "mysql+pymysql://u:p@localhost/health?read_default_file=/etc/my.cnf",
    ],
)
def test_tls_is_left_to_pymysql_elsewhere(url: str) -> None:
    assert tls_args(make_url(url)) == {}


def test_the_load_data_statement_lists_the_rendered_columns_in_order() -> None:
    assert (
        f"LOCAL INFILE '{LOAD_DATA_FILE}' IGNORE INTO TABLE t_user_health_data" in HEALTH_LOAD_SQL
    )
    assert HEALTH_LOAD_SQL.endswith("(" + ", ".join(f"`{c}`" for c in HEALTH_COLUMNS) + ")")
    # The server's default escaping, which render_health_tsv writes.
    assert "FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n'" in (
        HEALTH_LOAD_SQL
    )


@pytest.mark.parametrize(
    ("error", "invalidated", "kind"),
    [
        # The server answered: the row's values, whatever the code (issue 17, B4).
        (pymysql.err.OperationalError(1644, "trigger says no"), False, RowRejected),
        (pymysql.err.IntegrityError(1452, "foreign key"), False, RowRejected),
        (pymysql.err.DataError(1406, "data too long"), False, RowRejected),
        (pymysql.err.InternalError(4025, "CHECK constraint failed"), False, RowRejected),
        (pymysql.err.OperationalError(9999, "a code nobody listed"), False, RowRejected),
        # Server states no row causes: retried.
        (pymysql.err.ProgrammingError(1146, "no such table"), False, Retryable),
        (pymysql.err.OperationalError(1290, "read only"), False, Retryable),
        (pymysql.err.OperationalError(1213, "deadlock"), False, Contention),
        (pymysql.err.OperationalError(1205, "lock wait timeout"), False, Contention),
        # The connection: an outage.
        (pymysql.err.OperationalError(2013, "lost connection"), False, Retryable),
        (pymysql.err.OperationalError(2003, "can't connect"), False, Retryable),
        (pymysql.err.InterfaceError(0, ""), False, Retryable),
        (pymysql.err.OperationalError(1406, "too long"), True, Retryable),
        (None, False, Retryable),
        # What we sent cannot be parsed: a bug, isolated.
        (pymysql.err.ProgrammingError(1064, "syntax"), False, BugInStatement),
    ],
)
def test_every_error_class_has_one_rule(
    error: BaseException | None, invalidated: bool, kind: type[Exception]
) -> None:
    assert type(classify(error, invalidated)) is kind


def test_contention_is_retried_like_an_outage_but_is_not_one() -> None:
    assert issubclass(Contention, Retryable)
    assert not issubclass(RowsNotStored, Retryable)
    assert issubclass(RowsNotStored, RowRejected)


@pytest.mark.parametrize(
    ("message", "key"),
    [
        (
            "Duplicate entry 'SN-1-2025-06-01 08:00:00' for key 'uk_health_device_ts'",
            "uk_health_device_ts",
        ),
        ("Duplicate entry '4711' for key 'PRIMARY'", "PRIMARY"),
        (
            "Duplicate entry 'x' for key 't_user_health_data.uk_health_device_ts'",
            "uk_health_device_ts",
        ),
        ("Duplicate entry 'it''s for key 'x'' for key 'uk'", "uk"),
        ("something else entirely", ""),
    ],
)
def test_the_index_a_duplicate_names(message: str, key: str) -> None:
    """Only a duplicate on the (device_sn, timestamp) key proves its row exists."""
    assert duplicate_key_name(message) == key


@pytest.mark.parametrize(
    ("stored", "fired", "shows"),
    [
        (36.7, Decimal("36.7"), True),  # a legacy DOUBLE column: the float is not exact
        (Decimal("39.50"), Decimal("39.5"), True),  # our DECIMAL(5,2)
        (60, 180, False),  # a duplicate with other values: not this reading (issue 18 S3)
        (None, 180, False),
    ],
)
def test_an_alert_stands_on_the_stored_reading_compared_as_decimals(
    stored: object, fired: object, shows: bool
) -> None:
    from consumer.health_alerts.rules import Alert, HealthRule
    from consumer.sinks.mysql import _shows
    from tests.records import make_record

    rule = HealthRule(1, "t", "temperature", None, Decimal("35"), 1, "major", None, 0)
    alert = Alert(rule, make_record(), fired, "temperature")  # type: ignore[arg-type]
    assert _shows((7, {"temperature": stored}), alert) is shows
