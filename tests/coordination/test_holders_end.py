"""Locks and workflows always end as their holder left them, and say so (the queue's rules,
for the other things an instance holds): a lock held across ``rt.close()`` is reported lost,
never a raw error of the closed store; a cancellation landing twice on ``async with ahold``
still releases; a renewal answered after the holder's own release is not a loss; a hold of a
workflow this instance already owned leaves it owned; arguments no store could use are
refused by name when the call is made."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from cross_instance.errors import (
    CrossInstanceError,
    LockLostError,
    LockRequestError,
    StoreUnavailable,
    TaskLostError,
    WorkflowRequestError,
)
from cross_instance.runtime import Runtime
from tests.helpers_runtime import make_config


@pytest.fixture
def pair(tmp_path):
    cfg = make_config(tmp_path / "state", timeout_ms=30_000)
    rts = [Runtime.start(cwd=tmp_path, config=cfg, instance_id=i) for i in ("a", "b")]
    yield rts
    for rt in reversed(rts):
        rt.close()


def test_a_lock_held_across_close_is_reported_lost_not_a_raw_error(pair):
    a, b = pair
    told = []
    with pytest.raises(RuntimeError, match="mine"):  # the block's own error stays the one
        with a.locks.hold("r1", ttl=30, on_lost=lambda held, err: told.append(err)):
            a.close()
            raise RuntimeError("mine")
    assert len(told) == 1 and "closed" in told[0].reason
    assert b.locks.try_acquire("r1", ttl=5) is not None  # its instance left: the lock is free


def test_a_clean_exit_and_ensure_after_close_raise_lock_lost(tmp_path):
    cfg = make_config(tmp_path / "state")
    rt = Runtime.start(cwd=tmp_path, config=cfg, instance_id="c")
    held = rt.locks.try_acquire("r2", ttl=30)
    with pytest.raises(LockLostError, match="closed"), rt.locks.hold("r3", ttl=30):
        rt.close()
    with pytest.raises(LockLostError, match="closed"):
        held.ensure()
    assert held.release() is False or held.released  # no raw error either way
    with pytest.raises(StoreUnavailable, match="closed"):  # not "damaged: run recover"
        rt.store.list_locks()


def test_a_lock_waiter_across_close_ends_with_a_clear_error(pair):
    a, b = pair
    b.locks.try_acquire("busy", ttl=30)
    ended = []

    def wait():
        try:
            a.locks.acquire("busy", ttl=30, timeout=10)
        except BaseException as err:  # noqa: BLE001 - what ended it is the point
            ended.append(err)

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.3)
    a.close()
    waiter.join(15)
    assert len(ended) == 1 and isinstance(ended[0], CrossInstanceError), ended


def test_a_second_cancellation_during_the_exit_still_releases(pair):
    a, b = pair

    async def body():
        async with a.locks.ahold("twice", ttl=30):
            await asyncio.sleep(10)

    async def main():
        task = asyncio.create_task(body())
        await asyncio.sleep(0.2)
        task.cancel()
        await asyncio.sleep(0)
        task.cancel()  # lands while __aexit__ waits
        await asyncio.gather(task, return_exceptions=True)
        for _ in range(100):
            if not b.locks.list():
                return
            await asyncio.sleep(0.02)

    asyncio.run(main())
    assert b.locks.list() == []


def test_a_renewal_answered_after_the_release_is_not_a_loss(pair):
    """The renewal task is cancelled on exit, but a renewal already sent goes on in its
    thread; answered (None) after the release, it must not call ``on_lost``."""
    a, _ = pair
    store = a.store
    renew = store.renew_lock

    def slow_renew(*args):  # a renewal still on its way when the block ends
        time.sleep(0.2)
        return renew(*args)

    store.renew_lock = slow_renew
    told = []

    async def main():
        async with a.locks.ahold("d", ttl=0.9, on_lost=lambda h, e: told.append(e)):
            await asyncio.sleep(0.4)  # a renewal (every 0.3 s) is on its way at the exit
        await asyncio.sleep(0.3)

    try:
        asyncio.run(main())
    finally:
        store.renew_lock = renew
    assert told == []
    assert not [e for e in a.events.last(20) if e.kind == "lock_lost"]


def test_a_hold_releases_only_what_it_claimed_itself(pair):
    a, b = pair
    with a.workflows.hold("W") as outer:
        with a.workflows.hold("W") as inner:
            assert inner.action == "owned"
        outer.write(step=2)  # still owned: the inner hold did not release it
        assert b.workflows.check("W")["owned"] is False
    assert b.workflows.check("W")["owned"] is True  # the outer hold did
    claimed = a.workflows.claim("K")
    with a.workflows.hold("K"):
        pass
    claimed.write(step=1)  # kept by the claim, as documented


def test_bad_ttls_state_keys_and_ahold_arguments_are_refused_by_name(pair):
    a, _ = pair
    for ttl in (float("inf"), 1e400, 10**400, -1.0, float("nan")):
        with pytest.raises(LockRequestError, match="ttl"):
            a.locks.try_acquire("x", ttl=ttl)
        with pytest.raises(LockRequestError, match="ttl"):
            a.locks.ahold("x", ttl=ttl)  # at the call, as hold
    held = a.locks.try_acquire("y", ttl=5)
    with pytest.raises(LockRequestError, match="ttl"):
        held.renew(1e400)
    with pytest.raises(LockRequestError):
        a.locks.ahold(123)  # type: ignore[arg-type]
    with pytest.raises(LockRequestError, match="on_lost"):
        a.locks.ahold("z", on_lost=5)  # type: ignore[arg-type]
    wf = a.workflows.claim("S")
    with pytest.raises(WorkflowRequestError, match="surrogate"):
        wf.write({"\ud800": 1})
    wf.write({"ключ\tkey 🎉": 1})
    assert wf.read() == {"ключ\tkey 🎉": 1}


def test_closing_a_store_while_threads_use_it_ends_their_calls_cleanly(tmp_path):
    """close() waits for a call in progress; every later call says the store is closed (a
    closed connection used by another thread could crash the process)."""
    from cross_instance.stores.sqlite.store import SqliteStore

    store = SqliteStore(tmp_path / "state")
    errors: list[BaseException] = []
    stop = threading.Event()

    def use():
        while not stop.is_set():
            try:
                store.list_locks()
                store.now_ns()
            except BaseException as err:  # noqa: BLE001 - what ended it is the point
                errors.append(err)
                return

    threads = [threading.Thread(target=use) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.1)
    store.close()
    stop.set()
    for t in threads:
        t.join(10)
    assert errors and all(isinstance(e, StoreUnavailable) and "closed" in str(e)
                          for e in errors), errors


def test_ensure_after_the_ttl_ended_without_a_renewal_says_lost_at_once(pair):
    """Past its TTL with no renewal (nobody renewed it here), the store would refuse a
    renewal anyway: ``ensure()`` says lost without asking a store that may be down."""
    a, _ = pair
    held = a.locks.try_acquire("t", ttl=0.2)  # try_acquire starts no renewal
    time.sleep(0.3)
    with pytest.raises(LockLostError, match="TTL ended before a renewal"):
        held.ensure()
    a.queue.put(1, task_id="run")
    run = a.queue.take(lease=0.2)
    a.queue._forget(run)  # no renewal from here on (as a stalled process)
    time.sleep(0.3)
    with pytest.raises(TaskLostError, match="lease ended before a renewal"):
        run.ensure()
