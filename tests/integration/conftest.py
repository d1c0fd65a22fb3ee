from collections.abc import Iterator

import pytest
import redis

from tests.integration.stack import REDIS_URL, Stack, drop_stack, make_stack


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
