"""The shared Redis on 127.0.0.1:6379 for the Redis tests; CI fails clearly without it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis


@pytest.fixture(scope="session")
def shared_redis() -> Iterator[Any]:
    client = redis.Redis(host="127.0.0.1", port=6379, socket_timeout=5)
    try:
        client.ping()
    except redis.ConnectionError as err:
        pytest.fail(f"the tests need a Redis on 127.0.0.1:6379 (.ci/run starts one): {err}")
    yield client
    client.close()


@pytest.fixture
def server(tmp_path: Any) -> Iterator[Any]:
    """A private redis-server (no persistence) that a test may stop and start again."""
    from tests.conftest import declare_empty
    from tests.redis.private_server import Server

    s = Server(tmp_path)
    s.start()
    declare_empty(s.url())  # new: no grace before the first permit (a restart has one)
    yield s
    s.stop()


@pytest.fixture
def redis_store(shared_redis: Any) -> Iterator[Any]:
    """A Redis store on the shared Redis under a key prefix of its own, removed afterwards."""
    from cross_instance.stores.redis.store import RedisStore
    from tests.conftest import redis_prefix

    with redis_prefix() as url:
        s = RedisStore(url)
        yield s
        s.close()
