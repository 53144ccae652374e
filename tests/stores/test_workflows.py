"""Workflow ownership (seed 002's check flow) and fenced state, on every store."""

from __future__ import annotations

import pytest

from cross_instance.core.liveness import Domain
from cross_instance.core.ownership import Action, Force
from cross_instance.errors import NotRegisteredError, StaleEpochError
from cross_instance.hostfacts import identity as hostinfo
from tests.conftest import record


def kinds(store):
    return [e.kind for e in store.events()]


def test_claim_same_owner_other_owner(store):
    store.register_instance(record("a"))
    store.register_instance(record("b"))
    first = store.claim_workflow("wf", "a")
    e1 = first.epoch  # 1 on a new SQLite store; above the incarnation floor on Redis
    assert first.decision.action is Action.CLAIMED and e1 >= 1
    assert first.after.owner.instance_id == "a" and first.after.owner.pid > 0
    again = store.claim_workflow("wf", "a")
    assert again.decision.action is Action.OWNED and again.epoch == e1
    other = store.claim_workflow("wf", "b")
    assert other.decision.action is Action.REFUSED and not other.allowed
    assert other.before.owner.instance_id == "a" and other.epoch == e1
    assert store.get_workflow("wf").epoch == e1
    assert kinds(store).count("workflow_claimed") == 1


def test_check_without_claim_changes_nothing(store):
    store.register_instance(record("a"))
    look = store.claim_workflow("wf", "a", take=False)
    assert look.decision.action is Action.UNOWNED and look.allowed
    assert store.get_workflow("wf") is None


def test_dead_owner_is_auto_claimed_with_the_next_epoch(store, clock):
    store.register_instance(record("a", lease_s=5))
    store.register_instance(record("b", lease_s=5))
    e1 = store.claim_workflow("wf", "a").epoch
    clock.advance(6)
    store.heartbeat("b")  # b is alive, a's lease ran out
    refused = store.claim_workflow("wf", "b", auto_claim=False)
    assert refused.decision.action is Action.REFUSED and "auto-claim" in refused.decision.reason
    moved = store.claim_workflow("wf", "b")
    assert moved.decision.action is Action.AUTO_CLAIMED and moved.epoch == e1 + 1
    assert moved.before.owner.instance_id == "a" and moved.after.owner.instance_id == "b"
    assert "a" not in [r.instance_id for r in store.list_instances()]  # judged dead: reaped
    assert not store.heartbeat("a")  # so a learns it on its next heartbeat
    event = [e for e in store.events() if e.kind == "workflow_auto_claimed"][-1]
    assert event.data["previousOwner"] == "a" and event.data["epoch"] == e1 + 1


def test_pid_reuse_and_another_boot_are_dead_owners(store, sleeper):
    # the recorded process started right after boot; the live one at its pid started later
    reused = record("r", pid=sleeper.pid, start_ticks=1)
    me = hostinfo.self_identity().domain
    rebooted = record("o", domain=Domain(me.host, "another-boot", me.pid_ns))
    store.register_instance(reused)
    store.register_instance(rebooted)
    store.register_instance(record("b"))
    # claims made directly as those owners (their records are what a claim checks)
    firsts = [store.claim_workflow(w, who) for w, who in (("w1", "r"), ("w2", "o"))]
    assert all(f.allowed for f in firsts)
    for wid, first in zip(("w1", "w2"), firsts, strict=False):
        taken = store.claim_workflow(wid, "b")
        assert taken.decision.action is Action.AUTO_CLAIMED and taken.epoch == first.epoch + 1


def test_live_unrelated_owner_with_its_real_start_time_is_alive(store, sleeper):
    live = record("s", pid=sleeper.pid, start_ticks=hostinfo.start_ticks(sleeper.pid))
    store.register_instance(live)
    store.register_instance(record("b"))
    store.claim_workflow("wf", "s")
    assert store.claim_workflow("wf", "b").decision.action is Action.REFUSED


def test_force_claim_dead_and_live(store, clock):
    store.register_instance(record("a", lease_s=5))
    store.register_instance(record("b", lease_s=5))
    e1 = store.claim_workflow("wf", "a").epoch
    live = store.claim_workflow("wf", "b", force=Force.DEAD)
    assert live.decision.action is Action.REFUSED  # a is alive: a dead-only force refuses
    taken = store.claim_workflow("wf", "b", force=Force.LIVE)
    assert taken.decision.action is Action.FORCE_CLAIMED and taken.epoch == e1 + 1
    with pytest.raises(StaleEpochError) as err:
        store.write_workflow_state("wf", "a", e1, {"step": 9})
    assert err.value.current_epoch == e1 + 1 and err.value.current_owner == "b"
    assert kinds(store).count("workflow_force_claimed") == 1
    clock.advance(6)
    store.heartbeat("a")
    again = store.claim_workflow("wf", "a", force=Force.DEAD)  # b is dead now
    assert again.decision.action is Action.FORCE_CLAIMED and again.epoch == e1 + 2


def test_fenced_writes_accept_only_the_current_epoch(store):
    store.register_instance(record("a"))
    store.register_instance(record("b"))
    epoch = store.claim_workflow("wf", "a").epoch
    store.write_workflow_state("wf", "a", epoch, {"step": 1, "plan": ["x", "y"]})
    assert store.read_workflow_state("wf") == {"plan": ["x", "y"], "step": 1}
    for who, at in (("a", epoch + 1), ("a", epoch - 1), ("b", epoch)):
        with pytest.raises(StaleEpochError):
            store.write_workflow_state("wf", who, at, {"step": 666})
    with pytest.raises(StaleEpochError):
        store.write_workflow_state("nope", "a", epoch, {"step": 1})
    assert store.read_workflow_state("wf")["step"] == 1  # nothing written by a refused write
    store.validate_epoch("wf", "a", epoch)
    with pytest.raises(StaleEpochError):
        store.validate_epoch("wf", "b", epoch)


def test_release_keeps_the_epoch_counting(store):
    store.register_instance(record("a"))
    store.register_instance(record("b"))
    e1 = store.claim_workflow("wf", "a").epoch
    assert not store.release_workflow("wf", "b")  # not the owner: nothing changes
    assert not store.release_workflow("wf", "a", epoch=e1 + 6)  # not at that epoch
    assert store.release_workflow("wf", "a", epoch=e1)
    assert store.get_workflow("wf").owner is None and store.get_workflow("wf").epoch == e1
    with pytest.raises(StaleEpochError):  # released: its epoch no longer writes
        store.write_workflow_state("wf", "a", e1, {"x": 1})
    nxt = store.claim_workflow("wf", "b")
    assert nxt.decision.action is Action.CLAIMED and nxt.epoch == e1 + 1


def test_a_restarted_process_with_the_same_id_is_a_new_owner(store, sleeper):
    old = record("a", pid=sleeper.pid, start_ticks=hostinfo.start_ticks(sleeper.pid))
    store.register_instance(old)
    e1 = store.claim_workflow("wf", "a").epoch
    store.unregister_instance("a")
    store.register_instance(record("a"))  # the same id, this process now
    moved = store.claim_workflow("wf", "a")
    assert moved.decision.action is Action.AUTO_CLAIMED and moved.epoch == e1 + 1
    with pytest.raises(StaleEpochError):
        store.write_workflow_state("wf", "a", e1, {"x": 1})


def test_unregistered_callers_cannot_claim(store):
    with pytest.raises(NotRegisteredError):
        store.claim_workflow("wf", "ghost")


def test_epochs_survive_reopening_the_store(make_store):
    first = make_store()
    first.register_instance(record("a"))
    e1 = first.claim_workflow("wf", "a").epoch
    first.release_workflow("wf", "a")
    first.close()
    second = make_store()
    assert second.claim_workflow("wf", "a").epoch == e1 + 1
    assert [w.workflow_id for w in second.list_workflows()] == ["wf"]


def test_a_release_made_for_the_owner_names_who_made_it(store):
    store.register_instance(record("a"))
    epoch = store.claim_workflow("wf-1", "a").epoch
    assert not store.release_workflow("wf-1", "a", epoch + 1, "pi-xi (pid 1 on h) for a")
    assert store.release_workflow("wf-1", "a", epoch, "pi-xi (pid 1 on h) for a")
    store.claim_workflow("wf2", "a")
    assert store.release_workflow("wf2", "a")  # the owner itself: no "by"
    released = [e for e in store.events() if e.kind == "workflow_released"]
    assert [e.data for e in released] == [
        {"workflow": "wf-1", "by": "pi-xi (pid 1 on h) for a"}, {"workflow": "wf2"}]
    assert all(e.instance_id == "a" for e in released)
