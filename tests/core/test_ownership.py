"""Seed 002's check flow as a pure decision, and the lock rules."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cross_instance.core.liveness import Domain, Verdict
from cross_instance.core.locking import LockRecord, can_renew, check_resource, check_ttl, why_free
from cross_instance.core.ownership import (
    Action,
    Force,
    Owner,
    WorkflowRecord,
    check_workflow_id,
    decide,
)
from cross_instance.errors import LockRequestError, WorkflowRequestError

HOST = Domain("h", "boot", "ns")
owners = st.builds(Owner, st.sampled_from(["a", "b"]), st.sampled_from([10, 11]), st.just(HOST),
                   st.sampled_from([1, 2]))
records = st.none() | st.builds(WorkflowRecord, st.just("wf"), st.none() | owners,
                                st.integers(0, 100), st.just(0), st.just(0))


@given(records, owners, st.sampled_from(list(Verdict)), st.booleans(), st.booleans(),
       st.sampled_from(list(Force)))
def test_decisions_keep_the_promises(current, caller, verdict, claim, auto, force):
    d = decide(current, caller, verdict, claim, auto, force)
    epoch = current.epoch if current else 0
    owner = current.owner if current else None
    assert d.epoch == (epoch + 1 if d.action.moves else epoch)  # +1 per change, never else
    if owner is not None and not owner.same_process(caller) and verdict is not Verdict.DEAD:
        assert d.action in (Action.REFUSED, Action.FORCE_CLAIMED)
        assert d.action is not Action.FORCE_CLAIMED or force is Force.LIVE
    if owner is not None and owner.same_process(caller):
        assert d.action is Action.OWNED
    if d.action is Action.AUTO_CLAIMED:
        assert verdict is Verdict.DEAD and claim and auto


def test_seed_flow_table():
    a, b = Owner("a", 1, HOST, 1), Owner("b", 2, HOST, 1)
    held = WorkflowRecord("wf", a, 3, 0, 0)
    assert decide(held, a, None, True).action is Action.OWNED
    assert decide(held, b, Verdict.ALIVE, True).action is Action.REFUSED
    assert decide(held, b, Verdict.UNKNOWN, True).action is Action.REFUSED  # never on a guess
    assert decide(held, b, Verdict.DEAD, True).action is Action.AUTO_CLAIMED
    assert decide(held, b, Verdict.DEAD, True, auto_claim=False).action is Action.REFUSED
    assert decide(held, b, Verdict.ALIVE, True, force=Force.LIVE).epoch == 4
    restarted = Owner("a", 1, HOST, 2)  # same id and pid, another start time
    assert decide(held, restarted, Verdict.DEAD, True).action is Action.AUTO_CLAIMED
    assert decide(None, a, None, False).action is Action.UNOWNED


def test_bad_ids_resources_and_ttls_are_named():
    for bad in ("", "  ", None, 5, "a\nb", "x" * 600):
        with pytest.raises(WorkflowRequestError):
            check_workflow_id(bad)
    assert check_workflow_id("2026-02-25T18-44-58--edb94a81")
    for bad in ("", None, "x" * 2000, "a\x00b"):
        with pytest.raises(LockRequestError):
            check_resource(bad)
    for bad in (0, -1, float("nan"), "5", True, 10**9):
        with pytest.raises(LockRequestError):
            check_ttl(bad)
    assert check_ttl(1.5) == 1_500_000_000


def test_lock_rules():
    lock = LockRecord("r", "id", "a", 1, 0, 100, 0, 0)
    assert why_free(None, 50, None) == "free"
    assert why_free(lock, 50, Verdict.ALIVE) == ""
    assert why_free(lock, 50, Verdict.UNKNOWN) == ""
    assert why_free(lock, 50, Verdict.DEAD) == "holder dead"
    assert why_free(lock, 100, Verdict.ALIVE) == "expired"
    assert can_renew(lock, "id", 99) and not can_renew(lock, "id", 100)
    assert not can_renew(lock, "other", 50) and not can_renew(None, "id", 0)
