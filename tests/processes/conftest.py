"""Process tests that run on every store kind take ``store_cfg``: the config entries that
point their instances at one store (nothing for the embedded SQLite, a Redis URL with a key
prefix of the test's own, removed afterwards)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest


@pytest.fixture(params=["sqlite", "redis"])
def store_cfg(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    if request.param == "sqlite":
        yield {}
        return
    from cross_instance.stores.redis.store import RedisStore

    url = f"redis://127.0.0.1:6379/0?prefix=pi-proc-{uuid.uuid4().hex[:12]}:"
    yield {"store": url}
    cleaner = RedisStore(url)
    cleaner.drop_everything()
    cleaner.close()
