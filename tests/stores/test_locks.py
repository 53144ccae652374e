"""TTL locks with fencing tokens (seed 001), on every store."""

from __future__ import annotations

from cross_instance.core.locking import LockRecord, LockWaiting
from tests.conftest import record

SEC = 1_000_000_000


def setup(store, *ids, lease_s=10.0):
    for i in ids:
        store.register_instance(record(i, lease_s=lease_s))


def test_one_holder_tokens_grow_forged_release_changes_nothing(store):
    setup(store, "a", "b")
    lock = store.acquire_lock("res", "a", 5 * SEC, None, False)
    # the first token: 1 on a new SQLite store, above the incarnation floor on Redis
    assert isinstance(lock, LockRecord) and lock.token >= 1 and lock.holder == "a"
    assert lock.expires_ns - lock.acquired_ns == 5 * SEC
    assert store.acquire_lock("res", "b", 5 * SEC, None, False) is None
    assert store.acquire_lock("res", "a", 5 * SEC, None, False) is None  # not re-entrant
    assert not store.release_lock("res", "forged-" + lock.lock_id)
    assert [x.lock_id for x in store.list_locks()] == [lock.lock_id]
    assert store.release_lock("res", lock.lock_id)
    assert store.release_lock("res", lock.lock_id)  # sent again (reply lost): the same answer
    assert store.list_locks() == []
    nxt = store.acquire_lock("res", "b", 5 * SEC, None, False)
    assert nxt.token == lock.token + 1 and nxt.lock_id != lock.lock_id
    # sent again only after a waiter took the lock (a woken waiter is quick): still the same
    # answer, and the new holder keeps it
    assert store.release_lock("res", lock.lock_id)
    assert [x.lock_id for x in store.list_locks()] == [nxt.lock_id]


def test_expiry_hands_over_and_the_stale_holder_can_do_nothing(store, clock):
    setup(store, "a", "b", lease_s=60)
    old = store.acquire_lock("res", "a", 2 * SEC, None, False)
    assert store.renew_lock("res", old.lock_id, 2 * SEC).expires_ns == clock.now + 2 * SEC
    clock.advance(2.5)
    assert store.renew_lock("res", old.lock_id, 2 * SEC) is None  # past its TTL: lost
    new = store.acquire_lock("res", "b", 2 * SEC, None, False)
    assert new.token == old.token + 1
    assert not store.release_lock("res", old.lock_id)  # a stale release
    assert store.renew_lock("res", old.lock_id, 2 * SEC) is None
    assert [x.holder for x in store.list_locks()] == ["b"]
    lost = [e for e in store.events() if e.kind == "lock_lost"]
    assert lost and lost[-1].data == {"resource": "res", "token": old.token,
                                      "reason": "expired"}


def test_a_dead_holder_frees_its_lock_before_the_ttl(store, clock):
    setup(store, "a", "b", lease_s=3)
    first = store.acquire_lock("res", "a", 60 * SEC, None, False)
    clock.advance(4)
    store.heartbeat("b")
    taken = store.acquire_lock("res", "b", 60 * SEC, None, False)
    assert taken is not None and taken.token == first.token + 1
    assert [e.data["reason"] for e in store.events() if e.kind == "lock_lost"] == ["holder dead"]


def test_leaving_frees_the_instances_locks(store):
    setup(store, "a", "b")
    first = store.acquire_lock("res", "a", 60 * SEC, None, False)
    store.unregister_instance("a")
    assert store.acquire_lock("res", "b", 60 * SEC, None, False).token == first.token + 1


def test_waiters_are_served_in_arrival_order(store):
    setup(store, "a", "b", "c")
    held = store.acquire_lock("res", "a", 60 * SEC, None, False)
    wb = store.acquire_lock("res", "b", 60 * SEC, None, True)
    wc = store.acquire_lock("res", "c", 60 * SEC, None, True)
    assert isinstance(wb, LockWaiting) and isinstance(wc, LockWaiting)
    assert wb.ticket != wc.ticket and wb.holder == "a" and wb.retry_ns == held.expires_ns
    store.release_lock("res", held.lock_id)
    assert store.acquire_lock("res", "c", 60 * SEC, wc.ticket, True).ticket == wc.ticket
    assert store.acquire_lock("res", "a", 60 * SEC, None, False) is None  # b is first
    got = store.acquire_lock("res", "b", 60 * SEC, wb.ticket, True)
    assert isinstance(got, LockRecord) and got.holder == "b"
    store.release_lock("res", got.lock_id)
    assert isinstance(store.acquire_lock("res", "c", 60 * SEC, wc.ticket, True), LockRecord)


def test_a_cancelled_or_silent_waiter_stops_blocking(store, clock):
    setup(store, "a", "b", "c", lease_s=600)
    held = store.acquire_lock("res", "a", 600 * SEC, None, False)
    wb = store.acquire_lock("res", "b", 600 * SEC, None, True)
    wc = store.acquire_lock("res", "c", 600 * SEC, None, True)
    store.release_lock("res", held.lock_id)
    store.cancel_lock_wait(wb.ticket)
    assert isinstance(store.acquire_lock("res", "c", 600 * SEC, wc.ticket, True), LockRecord)
    store.acquire_lock("res", "b", 1 * SEC, None, True)  # queues, then goes silent
    clock.advance(30)
    for i in "ac":
        store.heartbeat(i)
    assert store.release_lock("res", store.list_locks()[0].lock_id)
    assert isinstance(store.acquire_lock("res", "a", SEC, None, False), LockRecord)


def test_cleanup_frees_expired_locks_only(store, clock):
    setup(store, "a", lease_s=600)
    short = store.acquire_lock("short", "a", 1 * SEC, None, False)
    store.acquire_lock("long", "a", 100 * SEC, None, False)
    clock.advance(2)
    freed = store.cleanup_expired_locks()
    assert [x.resource for x in freed] == ["short"]
    assert [x.resource for x in store.list_locks()] == ["long"]
    assert store.acquire_lock("short", "a", SEC, None, False).token == short.token + 1


def test_any_resource_string_is_its_own_lock(store):
    setup(store, "a")
    names = ["a/b", "a_b", "a:b", "a b", "ä/b", "../etc/passwd", "x" * 1024, "A/B"]
    tokens = [store.acquire_lock(n, "a", SEC * 60, None, False) for n in names]
    assert all(t is not None and t.token == tokens[0].token for t in tokens)  # each its first
    assert sorted(x.resource for x in store.list_locks()) == sorted(names)


def test_separators_and_control_characters_in_a_name_queue_and_clean_up(store, clock):
    # a tab once split a Redis queue entry in two: the waiter could not be dropped, later
    # waiters stayed queued behind it for good, and cleanup freed nothing
    setup(store, "a", "b", "c", lease_s=600)
    for name in ["a\tb", "x\n\ny", "\t", "a\tb\tc", "sp ace", ":", "a/b\t::\r\n", "é\t中"]:
        held = store.acquire_lock(name, "a", 2 * SEC, None, False)
        assert isinstance(held, LockRecord) and held.resource == name
        wb = store.acquire_lock(name, "b", 60 * SEC, None, True)
        wc = store.acquire_lock(name, "c", 60 * SEC, None, True)
        assert isinstance(wb, LockWaiting) and isinstance(wc, LockWaiting)
        store.cancel_lock_wait(wb.ticket)  # the first waiter leaves: c is first now
        clock.advance(3)
        assert [x.resource for x in store.cleanup_expired_locks()] == [name]
        got = store.acquire_lock(name, "c", 60 * SEC, wc.ticket, True)
        assert isinstance(got, LockRecord) and got.holder == "c" and got.resource == name
        assert got.token == held.token + 1
        store.unregister_instance("c")  # frees its lock with the name as given
        again = store.acquire_lock(name, "b", 60 * SEC, None, False)
        assert isinstance(again, LockRecord) and again.token == got.token + 1
        assert store.release_lock(name, again.lock_id)
        store.register_instance(record("c", lease_s=600))
    assert store.list_locks() == []
