"""Workflows, the delegation guard and locks through the facade (two runtimes, one process)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from cross_instance.compat.delegation import guard, guarded
from cross_instance.errors import (
    Cancelled,
    LockLostError,
    LockRequestError,
    LockTimeoutError,
    StaleEpochError,
    WorkflowOwnedError,
    WorkflowRequestError,
)
from cross_instance.runtime import Runtime
from tests.helpers_runtime import make_config


@pytest.fixture
def pair(tmp_path):
    cfg = make_config(tmp_path / "state", timeout_ms=30_000)  # leases never lapse under load
    a = Runtime.start(cwd=tmp_path, config=cfg, instance_id="a")
    b = Runtime.start(cwd=tmp_path, config=cfg, instance_id="b")
    yield a, b
    b.close()
    a.close()


def test_workflow_context_claims_writes_and_releases(pair):
    a, b = pair
    with a.workflows.hold("2026-02-25T18-44-58--edb94a81") as wf:
        assert wf.epoch == 1 and wf.action == "claimed"
        wf.write(step=1, plan={"files": ["x.py"]})
        wf.ensure()
        with pytest.raises(WorkflowOwnedError) as err:
            b.workflows.hold(wf.workflow_id)
        assert err.value.code == "workflow_owned_by_other"
        assert err.value.payload() == {
            "error": "workflow_owned_by_other", "ulTaskId": wf.workflow_id,
            "ownerInstanceId": "a", "ownerPid": a.session.membership.record.pid,
            "outcomeCode": "NONRETRYABLE_FAILURE", "retryRecommended": False}
    with b.workflows.hold(wf.workflow_id) as again:  # released on exit: b gets the next epoch
        assert again.epoch == 2 and again.read() == {"plan": {"files": ["x.py"]}, "step": 1}


def test_guard_returns_the_seed_payload_and_decorates_tools(pair):
    a, b = pair
    assert guard(a, None) is None  # no ulTaskId: no check
    assert guard(a, "wf") is None  # free: a claims it (auto-claim)
    refused = guard(b, "wf")
    assert refused["content"] == [{"type": "text", "text":
                                   "error: UL workflow wf is owned by another instance (a)."}]
    assert refused["details"] == {
        "error": "ul_workflow_not_owned", "ulTaskId": "wf", "ownerInstanceId": "a",
        "ownerPid": a.session.membership.record.pid, "outcomeCode": "NONRETRYABLE_FAILURE",
        "retryRecommended": False}
    calls = []

    @guarded(b)
    def subagent_run(task, ulTaskId=None):
        calls.append(task)
        return {"content": [{"type": "text", "text": "done"}]}

    assert subagent_run("x", ulTaskId="wf")["details"]["error"] == "ul_workflow_not_owned"
    assert subagent_run("y")["content"][0]["text"] == "done"
    assert subagent_run("z", ulTaskId="other-wf")["content"][0]["text"] == "done"
    assert calls == ["y", "z"]
    check = b.workflows.check("wf")
    assert check["owned"] is False and check["ownerInstanceId"] == "a"


def test_force_claim_against_a_live_owner_needs_the_flag(pair):
    a, b = pair
    held = a.workflows.claim("wf")
    with pytest.raises(WorkflowOwnedError, match="allow_live"):
        b.workflows.force_claim("wf")
    taken = b.workflows.force_claim("wf", allow_live=True)
    assert taken.epoch == held.epoch + 1 and taken.action == "force_claimed"
    with pytest.raises(StaleEpochError) as err:
        held.write(step=2)
    assert err.value.code == "stale_epoch" and err.value.current_owner == "b"
    with pytest.raises(StaleEpochError):
        held.ensure()
    assert not held.release()  # no longer ours: nothing changes
    assert b.workflows.get("wf").owner.instance_id == "b"
    assert b.workflows.release("wf") and b.workflows.get("wf").owner is None


def test_bad_input_is_named(pair):
    a, _ = pair
    with pytest.raises(WorkflowRequestError, match="non-empty"):
        a.workflows.hold("")
    with a.workflows.hold("wf") as wf:
        with pytest.raises(WorkflowRequestError, match="not JSON"):
            wf.write(step=object())
    with pytest.raises(LockRequestError, match="ttl"):
        a.locks.try_acquire("r", ttl=0)
    with pytest.raises(LockRequestError, match="resource"):
        a.locks.try_acquire("", ttl=1)


def test_locks_try_wait_timeout_cancel(pair):
    a, b = pair
    held = a.locks.try_acquire("repo:main", ttl=5)
    assert held.token == 1 and held.resource == "repo:main" and held.lock_id
    assert held.expires_at - held.acquired_at == 5000
    assert b.locks.try_acquire("repo:main", ttl=5) is None
    with pytest.raises(LockTimeoutError) as err:
        b.locks.acquire("repo:main", ttl=5, timeout=0.2)
    assert err.value.holder == "a" and err.value.code == "lock_timeout"
    cancel = threading.Event()
    threading.Timer(0.2, cancel.set).start()
    with pytest.raises(Cancelled):
        b.locks.acquire("repo:main", ttl=5, cancel=cancel)
    threading.Timer(0.3, held.release).start()
    got = b.locks.acquire("repo:main", ttl=5, timeout=10)
    assert got.token == 2 and not a.locks.release(held)
    assert b.locks.release(got)


def test_lock_context_renews_past_its_ttl_and_releases(pair):
    a, b = pair
    with a.locks.hold("r", ttl=0.3) as held:
        time.sleep(1.0)  # three TTLs: renewed in the background
        held.ensure()
        assert b.locks.try_acquire("r", ttl=1) is None
    assert held.released and b.locks.try_acquire("r", ttl=1).token == 2


def test_a_lost_lock_is_reported_not_ignored(pair):
    a, b = pair
    seen = []
    with pytest.raises(LockLostError) as err:
        with a.locks.hold("r", ttl=0.3, on_lost=lambda h, e: seen.append(e.reason)) as held:
            b.store.release_lock("r", held.lock_id)  # as if it expired and was taken
            b.locks.try_acquire("r", ttl=5)
            time.sleep(0.5)  # the next renewal finds out
            with pytest.raises(LockLostError):
                held.ensure()
    assert err.value.code == "lock_lost" and seen == [err.value.reason]
    assert any(e.kind == "lock_lost" and e.data.get("noticedBy") == "holder"
               for e in a.store.events())


def test_async_lock(pair):
    a, b = pair

    async def main():
        async with a.locks.ahold("r", ttl=0.3) as held:
            await asyncio.sleep(0.8)
            held.ensure()
            assert b.locks.try_acquire("r", ttl=1) is None
        waiter = asyncio.create_task(b.locks.aacquire("r", ttl=1, timeout=5))
        return await waiter

    got = asyncio.run(main())
    assert got.token == 2
    assert a.locks.cleanup_expired() == 0 and [x.holder for x in a.locks.list()] == ["b"]


def test_cancelling_an_async_lock_wait_gives_the_place_back(pair):
    a, b = pair
    held = a.locks.try_acquire("r", ttl=30)

    async def main():
        waiting = asyncio.create_task(b.locks.aacquire("r", ttl=5))
        await asyncio.sleep(0.2)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting

    asyncio.run(main())
    held.release()
    # b's cancelled wait left the queue: a new caller is not held behind it
    assert a.locks.try_acquire("r", ttl=5).token == 2
