"""Registry behaviour, on every store."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cross_instance.core.liveness import Domain
from cross_instance.core.records import Workload
from cross_instance.errors import DuplicateInstanceError
from cross_instance.hostfacts import identity as hostinfo
from tests.conftest import record


def test_register_list_unregister(store):
    store.register_instance(record("a"))
    store.register_instance(record("b"))
    assert [r.instance_id for r in store.list_instances()] == ["a", "b"]
    store.unregister_instance("a")
    store.unregister_instance("a")  # idempotent
    assert [r.instance_id for r in store.list_instances()] == ["b"]
    kinds = [e.kind for e in store.events()]
    assert kinds.count("instance_up") == 2 and "instance_down" in kinds


def test_duplicate_live_id_is_refused_naming_the_holder(store, sleeper):
    holder = record("dup", pid=sleeper.pid, start_ticks=hostinfo.start_ticks(sleeper.pid))
    store.register_instance(holder)
    with pytest.raises(DuplicateInstanceError) as err:
        store.register_instance(record("dup"))
    assert err.value.holder_pid == sleeper.pid
    assert str(sleeper.pid) in str(err.value) and "dup" in str(err.value)


def test_dead_holder_of_an_id_is_replaced(store):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    store.register_instance(record("x", pid=gone.pid, start_ticks=1))
    store.register_instance(record("x"))
    assert store.list_instances()[0].pid == hostinfo.self_identity().pid


def test_pid_reuse_is_not_life(store, sleeper):
    # A record naming a live process with another start time is a dead instance.
    store.register_instance(record("reused", pid=sleeper.pid, start_ticks=1))
    other_boot = Domain(hostinfo.hostname(), "another-boot", hostinfo.pid_namespace())
    store.register_instance(record("old-boot", pid=sleeper.pid,
                                   start_ticks=hostinfo.start_ticks(sleeper.pid),
                                   domain=other_boot))
    store.register_instance(record("me"))
    assert sorted(store.reap()) == ["old-boot", "reused"]
    assert [r.instance_id for r in store.list_instances()] == ["me"]


def test_remote_host_is_judged_by_its_lease_alone(store, clock):
    far = Domain("another-host", "b", "n")
    store.register_instance(record("far", pid=1, start_ticks=1, domain=far, lease_s=2))
    assert store.reap() == []
    clock.advance(2.5)
    assert store.reap() == ["far"]


def test_heartbeat_renews_the_lease_and_reports_loss(store, clock, sleeper):
    ticks = hostinfo.start_ticks(sleeper.pid)
    store.register_instance(record("hb", pid=sleeper.pid, start_ticks=ticks, lease_s=1))
    clock.advance(0.8)
    assert store.heartbeat("hb", Workload(pending_tasks=3))
    clock.advance(0.8)
    assert store.reap() == []
    assert store.list_instances()[0].workload.pending_tasks == 3
    clock.advance(1.1)
    assert store.reap() == ["hb"]
    assert store.heartbeat("hb") is False


def test_active_models_are_counters(store):
    store.register_instance(record("m"))
    for _ in range(2):
        store.set_active_model("m", "openai", "gpt-4o", 1)
    store.set_active_model("m", "openai", "gpt-4o", -1)
    assert store.list_instances()[0].active_models == (("openai", "gpt-4o", 1),)
    store.set_active_model("m", "openai", "gpt-4o", -5)
    assert store.list_instances()[0].active_models == ()
    store.set_active_model("m", "openai", "o1", 1)
    store.clear_active_models("m")
    assert store.list_instances()[0].active_models == ()
