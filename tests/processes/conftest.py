"""Process tests that run on every store kind take ``store_cfg``: the config entries that
point their instances at one store (nothing for the embedded SQLite, a Redis URL with a key
prefix of the test's own, removed afterwards, or the address of a real ``pi-xi serve`` process
serving a SQLite store of the test's own)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import redis_prefix
from tests.daemon_process import daemon_process


@pytest.fixture(params=["sqlite", "redis", "remote"])
def store_cfg(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[dict[str, str]]:
    if request.param == "sqlite":
        yield {}
        return
    if request.param == "remote":
        with daemon_process(tmp_path_factory.mktemp("daemon")) as daemon:
            yield {"store": f"http://{daemon.addr}"}
        return
    with redis_prefix("pi-proc") as url:
        yield {"store": url}
