"""Daemon tests that run on both stores a daemon can serve take ``any_store``: an open SQLite
store in the test's directory, or the shared Redis under a prefix of the test's own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cross_instance.stores import open_store
from cross_instance.stores.base import Store
from tests.conftest import redis_prefix


@pytest.fixture(params=["sqlite", "redis"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        yield open_store(f"sqlite://{tmp_path / 'state'}")
        return
    with redis_prefix() as url:
        yield open_store(url)
