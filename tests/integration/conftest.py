import datetime as dt
from collections.abc import Iterator

import pytest
import redis
from sqlalchemy import Engine, create_engine, text

from tests.integration.stack import DB_ROOT_URL, REDIS_URL, Stack, db_url, drop_stack, make_stack


@pytest.fixture
def stack() -> Iterator[Stack]:
    s = make_stack()
    try:
        yield s
    finally:
        drop_stack(s)


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    client.flushdb()  # latest-state assertions must not see an earlier run's devices
    yield client
    client.close()


@pytest.fixture
def database() -> Iterator[tuple[str, Engine]]:
    """A private, empty database: (url, engine); dropped afterwards."""
    name = f"hs_test_adopt_{dt.datetime.now():%H%M%S%f}"
    root = create_engine(DB_ROOT_URL)
    with root.begin() as conn:
        conn.execute(text(f"CREATE DATABASE {name} CHARACTER SET utf8mb4"))
    engine = create_engine(db_url(name), pool_pre_ping=True)
    try:
        yield db_url(name), engine
    finally:
        engine.dispose()
        with root.begin() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name}"))
        root.dispose()
