"""Any name the API accepts round-trips through every store (issue 14, item 4): separators,
control characters, non-ASCII text and names at the API's length limits, in every place a
store keeps a name (keys, hash fields, queue entries, events)."""

from __future__ import annotations

import pytest

from cross_instance.core.limiter import RateSpec
from cross_instance.core.locking import (
    MAX_RESOURCE,
    LockRecord,
    LockWaiting,
    check_resource,
)
from cross_instance.core.modelmatch import MAX_PATTERN_LENGTH, pattern_problem
from cross_instance.core.ownership import MAX_WORKFLOW_ID, check_workflow_id
from cross_instance.core.records import Granted, PermitRequest
from cross_instance.errors import LockRequestError, WorkflowRequestError
from cross_instance.stores.permit_ids import new_ticket
from tests.conftest import record

SEC = 1_000_000_000


def test_active_models_keep_any_provider_and_model_text(store):
    # set_active_model (seed API) takes any text; Redis once split "provider<TAB>model"
    store.register_instance(record("m"))
    pairs = [("a\tb", "c"), ("a", "b\tc"), ("", ""), ("p", "x/y"), ("é", "中\n"), (" ", "a b"),
             ("p:q", "[\"x\"]"), ("p", "\\t")]
    for provider, model in pairs:
        store.set_active_model("m", provider, model, 2)
        store.set_active_model("m", provider, model, -1)
    assert sorted(store.list_instances()[0].active_models) == sorted(
        (p, m, 1) for p, m in pairs)
    for provider, model in pairs:
        store.set_active_model("m", provider, model, -1)
    assert store.list_instances()[0].active_models == ()


def test_names_at_the_apis_limits_round_trip(store, clock):
    a, b = "a" + "@:._-9" * 21 + "z", "b" * 128  # 128 characters each
    provider = "p" + "-._0" * 15 + "xyz"  # 64
    model = ("模型/\u00e9 " * 40)[:MAX_PATTERN_LENGTH]
    workflow = ("\U0001f600/工作:" * 103)[:MAX_WORKFLOW_ID]
    resource = ("\U0001f512\t\n" * 342)[:MAX_RESOURCE]
    for iid in (a, b):
        store.register_instance(record(iid, lease_s=600))
        store.publish_limits(iid, {f"r:{provider}/{model}": RateSpec(600, 10)},
                             {"*": 5, f"m:{provider}/{model}": 1})
    slots = ("*", f"m:{provider}/{model}")
    req = PermitRequest(a, provider, model, ((f"r:{provider}/{model}", 1),), slots)
    held = store.acquire(req, None)
    assert isinstance(held, Granted)
    snap = store.snapshot()
    assert [(p.instance_id, p.provider, p.model) for p in snap.permits] == [(a, provider, model)]
    assert {g.key: g.used for g in snap.groups} == {"*": 1, f"m:{provider}/{model}": 1}
    assert [k.key for k in snap.buckets] == [f"r:{provider}/{model}"]
    other = PermitRequest(b, provider, model, ((f"r:{provider}/{model}", 1),), slots)
    waiting = store.acquire(other, new_ticket())
    assert store.snapshot().waiting == 1
    store.cancel_wait(waiting.ticket)
    assert store.release(a, [held.permit_id]) == 1

    claim = store.claim_workflow(workflow, a)
    assert claim.allowed and claim.after.workflow_id == workflow
    store.write_workflow_state(workflow, a, claim.epoch, {workflow: [resource]})
    assert store.read_workflow_state(workflow) == {workflow: [resource]}
    assert [w.workflow_id for w in store.list_workflows()] == [workflow]

    lock = store.acquire_lock(resource, a, 2 * SEC, None, False)
    assert isinstance(lock, LockRecord) and lock.resource == resource
    wait = store.acquire_lock(resource, b, 60 * SEC, new_ticket(), True)
    assert isinstance(wait, LockWaiting) and wait.holder == a
    clock.advance(3)
    assert [x.resource for x in store.cleanup_expired_locks()] == [resource]
    got = store.acquire_lock(resource, b, 60 * SEC, wait.ticket, True)
    assert isinstance(got, LockRecord) and got.holder == b and got.token == lock.token + 1
    lost = [e.data for e in store.events(limit=1000) if e.kind == "lock_lost"]
    assert lost == [{"resource": resource, "token": lock.token, "reason": "expired"}]
    store.unregister_instance(b)  # frees its lock under the name as given
    assert store.list_locks() == []
    assert store.acquire_lock(resource, a, SEC, None, False).token == got.token + 1


def test_a_lone_surrogate_is_refused_by_name_at_the_api():
    # not text a store can encode: it used to reach the store and fail there with a bare
    # UnicodeEncodeError (found by the model test's arbitrary names)
    with pytest.raises(LockRequestError, match="lone surrogate"):
        check_resource("a\ud800")
    with pytest.raises(WorkflowRequestError, match="lone surrogate"):
        check_workflow_id("\udfffwf")
    assert "lone surrogates" in (pattern_problem("gpt-\ud83d") or "")
    assert check_resource("\U0001f512 ok") == "\U0001f512 ok"  # a pair written as one is fine
