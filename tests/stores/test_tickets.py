"""A wait is known by the ticket its caller chose and sends with every attempt (issue 14,
item 8): an attempt sent twice, as after a lost reply, queues once and is granted once, on
every store."""

from __future__ import annotations

from cross_instance.core.limiter import RateSpec
from cross_instance.core.locking import LockRecord, LockWaiting
from cross_instance.core.records import Granted, PermitRequest, Waiting
from cross_instance.stores.permit_ids import new_ticket
from tests.conftest import record

SEC = 1_000_000_000


def req(iid: str) -> PermitRequest:
    return PermitRequest(iid, "p", None, (("r:p", 1),), ("*",))


def setup(store, *ids):
    for iid in ids:
        store.register_instance(record(iid, lease_s=600))
        store.publish_limits(iid, {"r:p": RateSpec(6000, 100)}, {"*": 1})


def test_a_permit_wait_sent_twice_queues_once_and_is_granted_once(store):
    setup(store, "a", "b", "c")
    held = store.acquire(req("a"), None)
    assert isinstance(held, Granted)
    tb, tc = new_ticket(), new_ticket()
    first, again = store.acquire(req("b"), tb), store.acquire(req("b"), tb)
    assert isinstance(first, Waiting) and isinstance(again, Waiting)
    assert first.ticket == again.ticket == tb and again.ahead == 0
    behind = store.acquire(req("c"), tc)
    assert isinstance(behind, Waiting) and behind.ahead == 1  # one entry ahead, not two
    assert store.snapshot().waiting == 2
    store.release("a", [held.permit_id])
    assert store.acquire(req("c"), tc).ticket == tc  # b is first
    got = store.acquire(req("b"), tb)
    assert isinstance(got, Granted) and got.permit_id == tb
    resent = store.acquire(req("b"), tb)  # the reply of the grant was lost: asked again
    assert isinstance(resent, Granted) and resent.permit_id == tb
    assert store.try_acquire(req("a")) is None  # the only slot is b's, counted once
    snap = store.snapshot()
    assert [(p.permit_id, p.instance_id) for p in snap.permits] == [(tb, "b")]
    assert [(g.key, g.used) for g in snap.groups] == [("*", 1)]
    assert snap.waiting == 1
    assert store.release("b", [tb]) == 1
    assert isinstance(store.acquire(req("c"), tc), Granted)
    assert store.snapshot().waiting == 0


def test_a_cancelled_ticket_stops_blocking_even_if_no_reply_ever_came(store):
    setup(store, "a", "b", "c")
    held = store.acquire(req("a"), None)
    tb = new_ticket()
    store.acquire(req("b"), tb)  # queued; suppose its reply was lost
    store.cancel_wait(tb)  # the caller still knows its ticket: it leaves
    store.release("a", [held.permit_id])
    assert isinstance(store.acquire(req("c"), new_ticket()), Granted)


def test_a_lock_wait_sent_twice_queues_once_and_is_granted_once(store):
    setup(store, "a", "b", "c")
    held = store.acquire_lock("res", "a", 60 * SEC, None, False)
    tb, tc = new_ticket(), new_ticket()
    first = store.acquire_lock("res", "b", 60 * SEC, tb, True)
    again = store.acquire_lock("res", "b", 60 * SEC, tb, True)
    assert isinstance(first, LockWaiting) and isinstance(again, LockWaiting)
    assert first.ticket == again.ticket == tb
    assert store.acquire_lock("res", "c", 60 * SEC, tc, True).ticket == tc
    store.release_lock("res", held.lock_id)
    assert isinstance(store.acquire_lock("res", "c", 60 * SEC, tc, True), LockWaiting)
    got = store.acquire_lock("res", "b", 60 * SEC, tb, True)
    assert isinstance(got, LockRecord) and got.holder == "b"
    resent = store.acquire_lock("res", "b", 60 * SEC, tb, True)  # the grant's reply lost
    assert resent == got  # the same grant, not a wait behind itself nor a second token
    assert [x.lock_id for x in store.list_locks()] == [got.lock_id]
    assert store.release_lock("res", got.lock_id)
    nxt = store.acquire_lock("res", "c", 60 * SEC, tc, True)  # nobody left ahead of c
    assert isinstance(nxt, LockRecord) and nxt.token == got.token + 1
    store.release_lock("res", nxt.lock_id)
    # a ticket the caller cancelled without ever hearing back leaves nothing queued
    store.acquire_lock("res", "a", 60 * SEC, None, False)
    lost = new_ticket()
    store.acquire_lock("res", "b", 60 * SEC, lost, True)
    store.cancel_lock_wait(lost)
    store.release_lock("res", store.list_locks()[0].lock_id)
    assert isinstance(store.acquire_lock("res", "c", 60 * SEC, None, False), LockRecord)


def test_a_permit_without_a_model_is_in_no_model_group(store):
    # it was counted in "m:p/None", the group of a model named "None"
    setup(store, "a")
    store.publish_limits("a", {}, {"m:p/None": 1, "p:p": 5, "*": 5})
    nameless = store.acquire(PermitRequest("a", "p", None, (("r:p", 1),), ("*", "p:p")), None)
    assert isinstance(nameless, Granted)
    used = {g.key: g.used for g in store.snapshot().groups}
    assert used == {"*": 1, "p:p": 1, "m:p/None": 0}
    named = PermitRequest("a", "p", "None", (("r:p", 1),), ("*", "p:p", "m:p/None"))
    assert isinstance(store.acquire(named, None), Granted)
    assert {g.key: g.used for g in store.snapshot().groups}["m:p/None"] == 1


def test_a_wait_is_told_its_place_in_the_queue_whatever_its_ticket(store):
    """Tickets are random, so they do not show who queued first; a process wakes its own
    waiters in the store's queue order (acquire.Wake), which Waiting.place carries."""
    setup(store, "a", "b")
    held = store.acquire(req("a"), None)
    assert isinstance(held, Granted)
    tickets = sorted((new_ticket() for _ in range(3)), reverse=True)  # later waits, smaller ids
    places = [store.acquire(req("b"), t).place for t in tickets]
    assert places[0] < places[1] < places[2]
    again = [store.acquire(req("b"), t).place for t in tickets]  # asked again: places kept
    assert again == places
