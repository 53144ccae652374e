"""The embedded store on the systems users run agents on, simulated on Linux: macOS (no
``CLOCK_BOOTTIME``, no ``/proc`` for our reads), a host whose ``/proc`` cannot be read at all,
and native Windows (no ``fcntl``, no ``fork``, no ``clock_gettime``).

These tests only use what existed before host facts did (``hostinfo``, ``SqliteStore``,
``Runtime``), so they also run against that code, to show what failed there: an
``AttributeError`` from the missing clock, a live owner judged dead, a missing-module
traceback on Windows.
"""

from __future__ import annotations

import builtins
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import psutil  # imported before a test pretends to be macOS (psutil picks its OS at import)
import pytest

from cross_instance.core.liveness import Verdict
from cross_instance.hostfacts import identity as hostinfo
from cross_instance.stores.sqlite.store import SqliteStore
from tests.conftest import record, redis_prefix

ROOT = Path(__file__).resolve().parents[2]


def _forget_facts() -> None:
    reset = getattr(hostinfo, "reset", None)
    if reset is not None:
        reset()
        return
    for name in ("boot_id", "pid_namespace", "_self_identity"):  # the code before host facts
        getattr(getattr(hostinfo, name), "cache_clear", lambda: None)()


@pytest.fixture
def forget_facts() -> Iterator[None]:
    _forget_facts()
    yield
    _forget_facts()


def _hide_proc(monkeypatch: pytest.MonkeyPatch, *, keep_pids: bool) -> None:
    """Make ``/proc`` look absent, as on macOS; ``keep_pids`` leaves ``/proc/<pid>`` and
    ``/proc/stat`` (psutil's sources on Linux, standing in for the sysctls it reads on macOS)."""
    real_open, real_access, real_readlink = builtins.open, os.access, os.readlink

    def hidden(path: object) -> bool:
        p = os.fsdecode(path) if isinstance(path, (str, bytes, os.PathLike)) else ""
        if not p.startswith("/proc"):
            return False
        return not (keep_pids and (p[6:7].isdigit() or p == "/proc/stat"))

    def fake_open(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        if hidden(path):
            raise FileNotFoundError(2, "No such file or directory", path)
        return real_open(path, *args, **kwargs)

    def fake_access(path, mode, *args, **kwargs):  # type: ignore[no-untyped-def]
        return False if hidden(path) else real_access(path, mode, *args, **kwargs)

    def fake_readlink(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        if hidden(path):
            raise FileNotFoundError(2, "No such file or directory", path)
        return real_readlink(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(os, "access", fake_access)
    monkeypatch.setattr(os, "readlink", fake_readlink)


def test_macos_facts_the_store_runs_and_judges_pids(monkeypatch, tmp_path, sleeper,
                                                    forget_facts):
    """macOS: no CLOCK_BOOTTIME, no /proc of our own to read. The store keeps time on
    CLOCK_MONOTONIC, a live owner is alive and a reused pid is dead (psutil's create times).
    Before: ``AttributeError: module 'time' has no attribute 'CLOCK_BOOTTIME'``."""
    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.delattr(time, "CLOCK_BOOTTIME")
    monkeypatch.delenv("PI_XI_HOST_FACTS", raising=False)
    _hide_proc(monkeypatch, keep_pids=True)
    _forget_facts()
    store = SqliteStore(tmp_path / "state")
    try:
        assert hostinfo.local_domain().pid_ns.startswith("portable:")
        store.register_instance(record("owner", pid=sleeper.pid,
                                       start_ticks=hostinfo.start_ticks(sleeper.pid)))
        store.register_instance(record("reused", pid=sleeper.pid, start_ticks=1))
        store.register_instance(record("me"))
        assert store.reap() == ["reused"]
        now = store.now_ns()
        assert {r.instance_id: hostinfo.verdict(r, now) for r in store.list_instances()} == {
            "owner": Verdict.ALIVE, "me": Verdict.ALIVE}
        assert hostinfo.clock_name() == "darwin:CLOCK_MONOTONIC"
    finally:
        store.close()


def test_macos_facts_runtime_start_takes_a_permit(monkeypatch, tmp_path, forget_facts):
    """The issue's symptom: on macOS ``Runtime.start()`` failed with ``AttributeError``."""
    from cross_instance.runtime import Runtime

    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.delattr(time, "CLOCK_BOOTTIME")
    monkeypatch.setenv("PI_RUNTIME_DIR", str(tmp_path / "state"))
    _hide_proc(monkeypatch, keep_pids=True)
    _forget_facts()
    with Runtime.start(cwd=tmp_path) as rt:
        with rt.permit("openai", model="gpt-x", tokens=10):
            pass
        assert [r.instance_id for r in rt.store.list_instances()] == [rt.instance_id]


def test_a_database_on_another_clock_is_refused_by_name(tmp_path):
    """A directory shared with another OS (another clock) is refused, naming both clocks;
    a database from before clocks were recorded is adopted."""
    import sqlite3

    from cross_instance.errors import StoreUnavailable
    from cross_instance.stores.sqlite.db import DB_NAME

    state = tmp_path / "state"
    SqliteStore(state).close()
    with sqlite3.connect(state / DB_NAME) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key='clock'").fetchone() == (
            "linux:CLOCK_BOOTTIME",)
        conn.execute("UPDATE meta SET value='darwin:CLOCK_MONOTONIC' WHERE key='clock'")
    with pytest.raises(StoreUnavailable) as err:
        SqliteStore(state)
    assert "darwin:CLOCK_MONOTONIC" in str(err.value) and "linux:CLOCK_BOOTTIME" in str(err.value)
    assert str(state / DB_NAME) in str(err.value)
    with sqlite3.connect(state / DB_NAME) as conn:
        conn.execute("DELETE FROM meta WHERE key='clock'")
    SqliteStore(state).close()
    with sqlite3.connect(state / DB_NAME) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key='clock'").fetchone() == (
            "linux:CLOCK_BOOTTIME",)


def test_without_proc_a_live_owner_is_unknown_never_dead(monkeypatch, tmp_path, sleeper,
                                                         forget_facts):
    """Nothing about processes can be read (no /proc, psutil blind): a live owner with a
    fresh lease stays "unknown" and keeps its record. Before: judged dead and reaped."""
    evidence = hostinfo.start_ticks(sleeper.pid)
    store = SqliteStore(tmp_path / "state")
    try:
        _hide_proc(monkeypatch, keep_pids=False)
        _forget_facts()
        store.register_instance(record("owner", pid=sleeper.pid, start_ticks=evidence))
        (owner,) = store.list_instances()
        assert hostinfo.verdict(owner, store.now_ns()) is Verdict.UNKNOWN
        assert store.reap() == []
        assert [r.instance_id for r in store.list_instances()] == ["owner"]
    finally:
        store.close()


WINDOWS = r"""
import os, sys, time
import psutil, pydantic, redis, rich, typer  # third-party packages, which run on Windows
sys.modules["fcntl"] = None            # no POSIX file locks
del os.register_at_fork                # no fork
del time.clock_gettime, time.clock_gettime_ns
from cross_instance.runtime import Runtime
from cross_instance.stores.sqlite.store import SqliteStore
from cross_instance.stores.redis.store import RedisStore
try:
    SqliteStore(sys.argv[1])
except Exception as err:
    print(type(err).__name__, "::", err)
else:
    print("opened")
rt = Runtime.start(cwd=sys.argv[1], store=RedisStore(sys.argv[2]))
with rt.permit("openai", model="gpt-x", tokens=10):
    pass
print("redis", rt.instance_id, len(rt.store.list_instances()))
rt.close()
"""


def test_windows_says_what_works_and_the_redis_store_runs(tmp_path):
    """Native Windows, simulated (no fcntl, no fork, no clock_gettime): the embedded store
    refuses with a message naming WSL and the Redis store, and the Redis store works.
    Before: ``ModuleNotFoundError: import of fcntl halted`` at import."""
    env = {**os.environ, "PI_XI_HOST_FACTS": "portable",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    with redis_prefix("pi-win") as url:
        done = subprocess.run([sys.executable, "-c", WINDOWS, str(tmp_path), url], env=env,
                              capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    refusal, redis_line = done.stdout.strip().splitlines()
    assert refusal.startswith("UnsupportedPlatform ::"), refusal
    assert "WSL" in refusal and "Redis" in refusal and "fcntl" in refusal
    assert redis_line.split()[0] == "redis" and redis_line.split()[2] == "1"


def test_without_a_mountinfo_file_network_mounts_come_from_psutil(monkeypatch, tmp_path):
    """macOS has no /proc/self/mountinfo: the mount table comes from psutil, so a state
    directory on a network file system is still refused."""
    from cross_instance.errors import UnsupportedLocation
    from cross_instance.stores.sqlite.db import check_location

    share = tmp_path / "my share"
    share.mkdir()
    fake = [SimpleNamespace(device="/dev/disk1s1", mountpoint="/", fstype="apfs"),
            SimpleNamespace(device="//me@nas/team", mountpoint=str(share), fstype="smbfs")]
    monkeypatch.setattr(psutil, "disk_partitions", lambda all=False: fake)
    _hide_proc(monkeypatch, keep_pids=False)
    info = hostinfo.read_mountinfo()
    assert hostinfo.filesystem_type(str(share / "state"), info) == "smbfs"
    assert hostinfo.filesystem_type(str(tmp_path), info) == "apfs"
    with pytest.raises(UnsupportedLocation, match="smbfs"):
        check_location(share / "state")
