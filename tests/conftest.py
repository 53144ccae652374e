"""Shared fixtures: a controllable clock and a store factory parametrised by store kind.

Every behaviour test in tests/stores runs once per store kind: SQLite, Redis (the server
on 127.0.0.1:6379, under a key prefix of the test's own, removed afterwards), and the daemon's
client (``remote``: a real ``pi-xi serve`` app on a loopback socket, serving a SQLite store that
runs on the test's clock).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest

from cross_instance.core.liveness import Domain
from cross_instance.core.records import InstanceRecord
from cross_instance.hostfacts import identity as hostinfo
from cross_instance.stores import open_store
from cross_instance.stores.base import Store

# "redis-scripts": the same Redis store with its operations as scripts (EVALSHA) instead of a
# function library (FCALL), as on servers that cannot load one
STORE_KINDS = ["sqlite", "redis", "redis-scripts", "remote"]


class FakeClock:
    """A store clock the test moves by hand (starts at the real boot time, on a whole
    microsecond: the Redis store keeps microseconds)."""

    def __init__(self) -> None:
        self.now = hostinfo.boottime_ns() // 1000 * 1000

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += int(seconds * 1e9)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "store_kind" in metafunc.fixturenames:
        metafunc.parametrize("store_kind", STORE_KINDS)


@contextmanager
def redis_prefix(name: str = "pi-test", options: str = "") -> Iterator[str]:
    """A URL of the shared Redis under a key prefix of its own (``name-<random>:``), and
    everything under that prefix removed afterwards. The prefix is new, so it is declared
    empty: no restart grace before its first permit (tests/redis/test_store_restart.py has
    the grace)."""
    from cross_instance.stores.redis.store import RedisStore

    url = f"redis://127.0.0.1:6379/0?prefix={name}-{uuid.uuid4().hex[:12]}:{options}"
    try:
        declare_empty(url)
        yield url
    finally:
        cleaner = RedisStore(url)
        cleaner.drop_everything()
        cleaner.close()


def declare_empty(url: str) -> None:
    """Declare a new Redis prefix empty (the operator step of the README's "When Redis
    restarts empty")."""
    from cross_instance.stores.redis.store import RedisStore

    store = RedisStore(url)
    try:
        assert store.declare_empty(), f"{url} was used already"
    finally:
        store.close()


@pytest.fixture
def store_url(store_kind: str, tmp_path: Path) -> Iterator[str]:
    if store_kind in ("sqlite", "remote"):  # remote: the state of the daemon's store
        yield f"sqlite://{tmp_path / 'state'}"
        return
    assert store_kind in ("redis", "redis-scripts"), store_kind
    with redis_prefix(options="&lua=scripts" if store_kind == "redis-scripts" else "") as url:
        yield url


@pytest.fixture
def make_store(store_kind: str, store_url: str, clock: FakeClock
               ) -> Iterator[Callable[..., Store]]:
    """Open more connections to the same shared state (as other processes would). On the
    remote kind each set of store ``options`` gets a daemon of its own (as daemons on
    several hosts would share one store), and the options go to the daemon's store."""
    opened: list[Store] = []
    daemons: dict[str, str] = {}
    with ExitStack() as stack:
        def make(**options: object) -> Store:
            options.setdefault("clock", clock)
            if store_kind == "remote":
                key = repr(sorted(options.items()))
                if key not in daemons:
                    daemons[key] = stack.enter_context(
                        serve_store(open_store(store_url, **options)))
                store = open_store(f"http://{daemons[key]}")
            else:
                store = open_store(store_url, **options)
            opened.append(store)
            return store

        yield make
        for s in opened:
            s.close()


@contextmanager
def serve_store(store: Store, **daemon_options: Any) -> Iterator[str]:
    """A daemon serving ``store`` on a loopback port of its own; yields its address."""
    from tests.daemon.served_app import served_app

    with served_app(store, **daemon_options) as run:
        yield run.addr


@pytest.fixture
def store(make_store: Callable[..., Store]) -> Store:
    return make_store()


def record(instance_id: str, *, pid: int | None = None, start_ticks: int | None = None,
           lease_s: float = 10.0, reserved: int = 0, priority: int = 1,
           domain: Domain | None = None) -> InstanceRecord:
    me = hostinfo.self_identity()
    return InstanceRecord(
        instance_id=instance_id, domain=domain or me.domain,
        pid=me.pid if pid is None else pid,
        start_ticks=me.start_ticks if start_ticks is None else start_ticks,
        session_id="test", cwd=os.getcwd(), started_wall_ms=int(time.time() * 1000),
        lease_ns=int(lease_s * 1e9), priority=priority, reserved=reserved)


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A live unrelated process (its pid is real, its start time is not ours)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait()
