"""A lock attempt or a workflow claim on Redis reads no instance list: the script names the
one holder whose liveness a pid probe on this host would decide, and the store probes only
that one."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cross_instance.core.liveness import Domain
from cross_instance.core.locking import LockRecord
from cross_instance.core.ownership import Action
from cross_instance.hostfacts import identity as hostinfo
from cross_instance.stores.redis.store import RedisStore
from tests.conftest import record

SEC = 1_000_000_000


@pytest.fixture
def store(redis_store: RedisStore) -> RedisStore:
    return redis_store


def _exited_process() -> tuple[int, int]:
    """The pid and start time of a process that has ended."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    ticks = hostinfo.start_ticks(proc.pid)
    assert ticks is not None
    proc.kill()
    proc.wait()
    return proc.pid, ticks


@pytest.fixture
def others(store, sleeper) -> dict[str, int]:
    """Instances "alive" and "gone" on this host (a live and an ended process), "remote" on
    another host and "me" (this process); the pids of the first two."""
    dead_pid, dead_ticks = _exited_process()
    store.register_instance(record("me"))
    store.register_instance(record("alive", pid=sleeper.pid,
                                   start_ticks=hostinfo.start_ticks(sleeper.pid)))
    store.register_instance(record("gone", pid=dead_pid, start_ticks=dead_ticks))
    store.register_instance(record("remote", pid=1, start_ticks=1,
                                   domain=Domain("elsewhere", "boot-x", "pidns-x")))
    return {"alive": sleeper.pid, "gone": dead_pid}


def _watch(store: RedisStore, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The pids probed from now on; listing every instance fails the test."""
    seen: list[int] = []
    real_probe = hostinfo.probe

    def probe(pid: int, ticks: int) -> hostinfo.Probe:
        seen.append(pid)
        return real_probe(pid, ticks)

    def no_listing() -> None:
        raise AssertionError("every instance was listed")

    monkeypatch.setattr(hostinfo, "probe", probe)
    monkeypatch.setattr(store, "list_instances", no_listing)
    return seen


def test_a_lock_attempt_probes_only_a_holder_on_this_host(store, others, monkeypatch):
    held = {who: store.acquire_lock(f"res-{who}", who, 60 * SEC, None, False)
            for who in ("alive", "gone", "remote")}
    assert all(isinstance(lock, LockRecord) for lock in held.values())
    probed = _watch(store, monkeypatch)

    assert store.acquire_lock("res-free", "me", 60 * SEC, None, False) is not None
    assert probed == []
    assert store.acquire_lock("res-remote", "me", 60 * SEC, None, False) is None
    assert probed == []  # another host: its lease alone decides
    assert store.acquire_lock("res-alive", "me", 60 * SEC, None, False) is None
    assert probed == [others["alive"]]  # alive on this host: it keeps the lock
    taken = store.acquire_lock("res-gone", "me", 60 * SEC, None, False)
    assert probed == [others["alive"], others["gone"]]
    assert isinstance(taken, LockRecord) and taken.token == held["gone"].token + 1
    lost = [e.data for e in store.events() if e.kind == "lock_lost"]
    assert lost == [{"resource": "res-gone", "token": held["gone"].token,
                     "reason": "holder dead"}]


def test_a_claim_probes_only_an_owner_on_this_host(store, others, monkeypatch):
    epochs = {who: store.claim_workflow(f"wf-{who}", who).decision.epoch
              for who in ("alive", "gone", "remote")}
    probed = _watch(store, monkeypatch)

    assert store.claim_workflow("wf-new", "me").decision.action is Action.CLAIMED
    assert store.claim_workflow("wf-remote", "me").decision.action is Action.REFUSED
    assert probed == []  # another host: its lease alone decides
    assert store.claim_workflow("wf-alive", "me").decision.action is Action.REFUSED
    assert probed == [others["alive"]]
    moved = store.claim_workflow("wf-gone", "me").decision
    assert probed == [others["alive"], others["gone"]]
    assert moved.action is Action.AUTO_CLAIMED and moved.epoch == epochs["gone"] + 1
