"""Process tests that run on every store kind take ``store_cfg``: the config entries that
point their instances at one store (nothing for the embedded SQLite, a Redis URL with a key
prefix of the test's own, removed afterwards)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import redis_prefix


@pytest.fixture(params=["sqlite", "redis"])
def store_cfg(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    if request.param == "sqlite":
        yield {}
        return
    with redis_prefix("pi-proc") as url:
        yield {"store": url}
