"""The host-facts backends (``linux``: /proc; ``portable``: psutil) on real processes: a live
`sleep` child, a pid with another start time, a zombie, a finished process; the F8 row on
each backend; a fact that cannot be read is unknown, never dead; and processes on different
backends sharing one SQLite database never compare their evidence."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cross_instance import hostfacts
from cross_instance.core.liveness import Domain, Probe, Verdict
from cross_instance.errors import ConfigError
from cross_instance.hostfacts import identity as hostinfo
from cross_instance.hostfacts import portable
from cross_instance.stores.sqlite.store import SqliteStore
from tests.conftest import FakeClock, record

SRC = str(Path(__file__).resolve().parents[2] / "src")
ROOT = str(Path(__file__).resolve().parents[2])


@pytest.fixture(params=["linux", "portable"])
def facts(request: pytest.FixtureRequest,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[hostfacts.ProcessFacts]:
    """This process on one backend, as ``PI_XI_HOST_FACTS`` would choose it."""
    monkeypatch.setenv(hostfacts.ENV, request.param)
    hostinfo.reset()
    yield hostinfo.backend()
    monkeypatch.undo()
    hostinfo.reset()


@pytest.fixture
def sleep_child() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    proc.kill()
    proc.wait()


def test_the_environment_picks_the_backend(facts):
    assert facts.name == os.environ[hostfacts.ENV]
    assert hostinfo.local_domain().pid_ns.startswith(f"{facts.name}:")
    assert hostinfo.self_identity().start_ticks > 0


@pytest.mark.parametrize("value", ["bogus", "Linux-ish", "portable\n; rm -rf", "0"])
def test_a_bad_backend_name_is_refused_by_name(value):
    with pytest.raises(ConfigError) as err:
        hostfacts.select(value)
    assert hostfacts.ENV in str(err.value) and repr(value) in str(err.value)
    assert "auto, linux, portable" in str(err.value)


def test_auto_is_linux_where_proc_is_readable_else_portable(monkeypatch):
    assert hostfacts.select("auto").name == "linux"
    assert hostfacts.select(" PORTABLE ").name == "portable"
    monkeypatch.setattr(hostfacts.LinuxFacts, "available", staticmethod(lambda: False))
    assert hostfacts.select("").name == "portable"
    with pytest.raises(ConfigError, match="reads /proc"):
        hostfacts.select("linux")


def test_a_live_child_is_the_same_process_and_its_pid_with_an_earlier_start_is_reused(
        facts, sleep_child):
    seen = facts.start_evidence(sleep_child.pid)
    assert seen is not None and seen > 0
    assert facts.probe(sleep_child.pid, seen) is Probe.SAME
    # a record of a process that started right after boot, naming the child's pid: reused
    assert facts.probe(sleep_child.pid, 1) is Probe.REUSED
    # a record that says its process started after the one running now contradicts itself
    later = seen + facts.tolerance + 1_000
    assert facts.probe(sleep_child.pid, later) is Probe.UNREADABLE
    # no evidence recorded (the owner could not read its own): nothing can be told
    assert facts.probe(sleep_child.pid, 0) is Probe.UNREADABLE
    sleep_child.kill()
    sleep_child.wait()
    assert facts.probe(sleep_child.pid, seen) is Probe.MISSING


def test_both_backends_see_the_same_start_in_their_own_units(sleep_child):
    ticks = hostfacts.LinuxFacts().start_evidence(sleep_child.pid)
    ms = hostfacts.PortableFacts().start_evidence(sleep_child.pid)
    assert ticks is not None and ms is not None
    hz = os.sysconf("SC_CLK_TCK")
    assert abs(ticks * 1000 // hz - ms) <= 1000 // hz + 1


def test_a_zombie_is_unreadable_never_dead(facts):
    child = subprocess.Popen(["true"])
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # exited, not reaped: a zombie
            with open(f"/proc/{child.pid}/stat", "rb") as f:
                if f.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                    break
            time.sleep(0.01)
        assert facts.probe(child.pid, 1) is Probe.UNREADABLE
        zombie = record("z", pid=child.pid, start_ticks=1)
        assert hostinfo.verdict(zombie, zombie.heartbeat_ns) is Verdict.UNKNOWN
    finally:
        child.wait()


def test_access_denied_and_a_missing_psutil_are_unreadable(monkeypatch, sleep_child):
    import psutil

    facts = hostfacts.PortableFacts()
    seen = facts.start_evidence(sleep_child.pid)
    assert seen is not None

    class Denied:
        def __init__(self, pid: int) -> None:
            raise psutil.AccessDenied(pid)

    monkeypatch.setattr(psutil, "Process", Denied)
    assert facts.probe(sleep_child.pid, seen) is Probe.UNREADABLE
    monkeypatch.undo()

    class Vanishing:  # psutil says "no such process" about a pid that is there
        def __init__(self, pid: int) -> None:
            raise psutil.NoSuchProcess(pid)

    monkeypatch.setattr(psutil, "Process", Vanishing)
    assert facts.probe(sleep_child.pid, seen) is Probe.UNREADABLE
    monkeypatch.undo()

    monkeypatch.setattr(portable, "_psutil", lambda: None)
    assert facts.probe(sleep_child.pid, seen) is Probe.UNREADABLE
    assert facts.own_evidence(os.getpid()) == 0


def test_an_unreadable_proc_entry_is_unknown_on_the_linux_backend(monkeypatch, sleep_child):
    facts = hostfacts.LinuxFacts()
    seen = facts.start_evidence(sleep_child.pid)
    assert seen is not None
    real_open = open

    def denied(path, *args, **kwargs):
        if str(path) == f"/proc/{sleep_child.pid}/stat":
            raise PermissionError(13, "Permission denied", path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", denied)
    assert facts.probe(sleep_child.pid, seen) is Probe.UNREADABLE
    monkeypatch.undo()
    # no /proc at all: a pid that cannot be found there is not a dead process
    monkeypatch.setattr(hostfacts.LinuxFacts, "available", staticmethod(lambda: False))
    assert facts.probe(2**22 + 12345, seen) is Probe.UNREADABLE


def test_f8_pid_reuse_and_another_boot_are_dead_unreadable_is_not(facts, tmp_path,
                                                                  sleep_child):
    """F8 on each backend: a record with the pid of a live `sleep` child but another start,
    and one from another boot, are dead; an unreadable one is not (its lease decides)."""
    store = SqliteStore(tmp_path / "state", clock=FakeClock())
    try:
        me = hostinfo.local_domain()
        store.register_instance(record("reused", pid=sleep_child.pid, start_ticks=1))
        store.register_instance(record(
            "old-boot", pid=sleep_child.pid,
            start_ticks=hostinfo.start_ticks(sleep_child.pid) or 0,
            domain=Domain(me.host, "another-boot", me.pid_ns)))
        store.register_instance(record(
            "alive", pid=sleep_child.pid, start_ticks=hostinfo.start_ticks(sleep_child.pid)))
        store.register_instance(record("no-evidence", pid=sleep_child.pid, start_ticks=0))
        store.register_instance(record("me"))
        assert sorted(store.reap()) == ["old-boot", "reused"]
        left = {r.instance_id: hostinfo.verdict(r, store.now_ns())
                for r in store.list_instances()}
        assert left == {"alive": Verdict.ALIVE, "no-evidence": Verdict.UNKNOWN,
                        "me": Verdict.ALIVE}
    finally:
        store.close()


def test_evidence_of_another_backend_is_never_compared(facts, sleep_child):
    """A record written by a process on the other backend holds evidence in other units:
    compared as if equal it would read as reused; it is judged by its lease alone."""
    other = "portable" if facts.name == "linux" else "linux"
    theirs = hostfacts.select(other)
    here = hostinfo.local_domain()
    domain = Domain(here.host, here.boot_id, f"{other}:{here.pid_ns.split(':', 1)[1]}")
    rec = record("other-backend", pid=sleep_child.pid,
                 start_ticks=theirs.start_evidence(sleep_child.pid), domain=domain)
    assert facts.probe(rec.pid, rec.start_ticks) is not Probe.SAME  # units differ
    assert hostinfo.verdict(rec, rec.heartbeat_ns) is Verdict.ALIVE
    assert hostinfo.verdict(rec, rec.heartbeat_ns + rec.lease_ns + 1) is Verdict.DEAD


CHILD = """
import sys, time
from cross_instance.hostfacts import identity as hostinfo
from cross_instance.core.records import InstanceRecord
from cross_instance.stores.sqlite.store import SqliteStore
store = SqliteStore(sys.argv[1])
me = hostinfo.self_identity()
store.register_instance(InstanceRecord(
    instance_id="child", domain=me.domain, pid=me.pid, start_ticks=me.start_ticks,
    session_id="s", cwd="/", started_wall_ms=0, lease_ns=3_000_000_000))
print(hostinfo.clock_name(), me.domain.pid_ns, flush=True)
time.sleep(60)
"""


def test_processes_on_two_backends_share_one_database(facts, tmp_path):
    """Real processes: a child on the other backend registers in the database this process
    uses. Same clock and boot for both; the child is alive to us while its lease runs, even
    killed (we cannot probe its evidence), and dead after it."""
    other = "portable" if facts.name == "linux" else "linux"
    state = tmp_path / "state"
    env = {**os.environ, hostfacts.ENV: other, "PYTHONPATH": os.pathsep.join([SRC, ROOT])}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(state)], env=env,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        clock_name, pid_ns = child.stdout.readline().split()
        assert clock_name == hostinfo.clock_name() and pid_ns.startswith(f"{other}:")
        clock = FakeClock()
        store = SqliteStore(state, clock=clock)
        try:
            assert store.reap() == []
            (rec,) = store.list_instances()
            assert rec.pid == child.pid
            assert hostinfo.verdict(rec, clock()) is Verdict.ALIVE
            child.kill()
            child.wait()
            assert store.reap() == []  # its lease still runs: no probe across backends
            clock.advance(3.5)
            assert store.reap() == ["child"]
        finally:
            store.close()
    finally:
        child.kill()
        child.wait()


def test_the_boot_id_is_per_system_and_unknown_when_nothing_tells(monkeypatch):
    system = hostfacts.system
    try:
        assert system.boot_id() == Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        monkeypatch.setattr(sys, "platform", "darwin")
        monkeypatch.setitem(system.BOOT_ID_SOURCES, "darwin",
                            (lambda: None, lambda: "5E1F2A4B-macos-session"))
        system.reset()
        assert system.boot_id() == "5E1F2A4B-macos-session"
        monkeypatch.setitem(system.BOOT_ID_SOURCES, "darwin", (system._psutil_boot_id,))
        system.reset()
        assert system.boot_id().startswith("boottime-")
        monkeypatch.setitem(system.BOOT_ID_SOURCES, "darwin", (lambda: None,))
        system.reset()
        assert system.boot_id() == "unknown-boot"
        assert system._darwin_boot_id() is None  # no such sysctl here: no identity, no crash
    finally:
        monkeypatch.undo()
        system.reset()


def test_a_process_that_cannot_tell_its_boot_erases_nothing(monkeypatch, tmp_path):
    """The boot check erases state from an earlier boot; a process whose system tells no boot
    id must not take the live instances' state for an earlier boot's."""
    system = hostfacts.system
    store = SqliteStore(tmp_path / "state")
    store.register_instance(record("live"))
    store.close()
    try:
        monkeypatch.setitem(system.BOOT_ID_SOURCES, "linux", (lambda: None,))
        hostinfo.reset()
        assert hostinfo.boot_id() == "unknown-boot"
        store = SqliteStore(tmp_path / "state")
        assert [r.instance_id for r in store.list_instances()] == ["live"]
        store.close()
    finally:
        monkeypatch.undo()
        hostinfo.reset()
