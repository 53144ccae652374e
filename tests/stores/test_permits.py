"""Permit behaviour (limits, FIFO queue, slots, leases), on every store."""

from __future__ import annotations

import pytest

from cross_instance.core.limiter import RateSpec
from cross_instance.core.records import Granted, PermitRequest, Waiting
from cross_instance.errors import NotRegisteredError, PermitRequestError
from tests.conftest import record

RATE = RateSpec(60, 2)  # 1 per second, burst 2


def req(iid: str = "a", cost: int = 1, provider: str = "p") -> PermitRequest:
    return PermitRequest(iid, provider, None, ((f"r:{provider}", cost),), ("*",))


@pytest.fixture
def two(store):
    for iid in ("a", "b"):
        store.register_instance(record(iid))
        store.publish_limits(iid, {"r:p": RATE}, {"*": 3})
    return store


def test_burst_then_exact_wait(two, clock):
    assert isinstance(two.acquire(req(), None), Granted)
    assert isinstance(two.acquire(req(), None), Granted)
    waiting = two.acquire(req(), None)
    assert isinstance(waiting, Waiting) and not waiting.slot_blocked
    assert waiting.ready_ns - waiting.now_ns == RATE.interval_ns
    clock.advance(RATE.interval_ns / 1e9)
    assert isinstance(two.acquire(req(), waiting.ticket), Granted)


def test_first_come_first_served_across_instances(two, clock):
    for g in (two.acquire(req("a"), None), two.acquire(req("a"), None)):
        two.release("a", [g.permit_id])  # slots back; the rate tokens stay spent
    first = two.acquire(req("b"), None)
    assert isinstance(first, Waiting)
    clock.advance(RATE.interval_ns / 1e9)
    # a newcomer from "a" must not take the token "b" has been waiting for
    late = two.acquire(req("a"), None)
    assert isinstance(late, Waiting) and late.ahead == 1
    assert isinstance(two.acquire(req("b"), first.ticket), Granted)
    assert two.try_acquire(req("a")) is None  # try never jumps the queue either
    clock.advance(RATE.interval_ns / 1e9)
    assert isinstance(two.acquire(req("a"), late.ticket), Granted)


def test_queue_place_lapses_when_the_waiter_stops_asking(make_store, clock):
    store = make_store(waiter_ttl_ns=1_000_000_000)
    for iid in ("a", "b"):
        store.register_instance(record(iid))
        store.publish_limits(iid, {"r:p": RATE}, {"*": 3})
    store.acquire(req("a"), None), store.acquire(req("a"), None)
    gone = store.acquire(req("b"), None)
    assert isinstance(gone, Waiting)
    clock.advance(1.5)  # "b" never came back
    assert isinstance(store.acquire(req("a"), None), Granted)


def test_global_slots_are_capped_and_released(two):
    fast = RateSpec(6000, 100)
    two.publish_limits("a", {"r:q": fast}, {"*": 3})
    two.publish_limits("b", {"r:q": fast}, {"*": 3})
    held = [two.try_acquire(req("a", provider="q")) for _ in range(3)]
    assert all(isinstance(g, Granted) for g in held)
    assert two.try_acquire(req("b", provider="q")) is None
    blocked = two.acquire(req("b", provider="q"), None)
    assert isinstance(blocked, Waiting) and blocked.slot_blocked
    assert two.release("b", [held[0].permit_id]) == 0  # not b's
    assert two.release("a", [held[0].permit_id]) == 1
    assert two.release("a", [held[0].permit_id]) == 0  # idempotent, no double free
    assert isinstance(two.acquire(req("b", provider="q"), blocked.ticket), Granted)


def test_provider_max_concurrency(two):
    two.publish_limits("a", {"r:q": RateSpec(6000, 100)}, {"*": 3, "p:q": 1})
    r = PermitRequest("a", "q", None, (("r:q", 1),), ("*", "p:q"))
    assert isinstance(two.try_acquire(r), Granted)
    assert two.try_acquire(r) is None


def test_slot_counts_follow_releases_of_any_kind(two, make_store):
    """A release carried by an acquire of another provider, and one sent through another
    handle of the store (which never saw the permit), both give the slot back."""
    two.publish_limits("a", {"r:q": RateSpec(6000, 100)}, {"*": 3, "p:q": 1})
    q = PermitRequest("a", "q", None, (("r:q", 1),), ("*", "p:q"))
    held = two.try_acquire(q)
    assert isinstance(held, Granted) and two.try_acquire(q) is None
    other = two.try_acquire(req("a"), release=[held.permit_id])  # freed by a "p" acquire
    assert isinstance(other, Granted)
    again = two.try_acquire(q)
    assert isinstance(again, Granted)
    assert make_store().release("a", [again.permit_id]) == 1
    assert isinstance(two.try_acquire(q, release=[other.permit_id]), Granted)
    groups = {g.key: g.used for g in two.snapshot().groups}
    assert groups["*"] == 1 and groups["p:q"] == 1


def test_reserved_capacity_is_kept_for_its_instance(store):
    store.register_instance(record("vip", reserved=2))
    store.register_instance(record("bulk"))
    for iid in ("vip", "bulk"):
        store.publish_limits(iid, {"r:q": RateSpec(6000, 100)}, {"*": 3})
    assert isinstance(store.try_acquire(req("bulk", provider="q")), Granted)
    assert store.try_acquire(req("bulk", provider="q")) is None  # 1 used + 2 reserved = 3
    assert isinstance(store.try_acquire(req("vip", provider="q")), Granted)
    assert isinstance(store.try_acquire(req("vip", provider="q")), Granted)
    assert store.try_acquire(req("vip", provider="q")) is None


def test_strictest_published_limit_applies_while_its_instance_lives(two):
    two.publish_limits("b", {"r:p": RateSpec(30, 1)}, {"*": 2})
    snap = {b.key: b.spec for b in two.snapshot().buckets}
    assert snap["r:p"] == RateSpec(30, 1)
    two.unregister_instance("b")
    assert {b.key: b.spec for b in two.snapshot().buckets}["r:p"] == RATE


def test_impossible_and_unregistered_requests_are_refused(two):
    with pytest.raises(PermitRequestError, match="burst is 2"):
        two.acquire(req(cost=3), None)
    with pytest.raises(NotRegisteredError):
        two.acquire(req("ghost"), None)


def test_unregister_and_death_free_permits(two, clock):
    g = two.acquire(req("a"), None)
    assert isinstance(g, Granted)
    assert len(two.snapshot().permits) == 1
    two.unregister_instance("a")
    assert two.snapshot().permits == ()
    assert two.release("a", [g.permit_id]) == 0
    with pytest.raises(NotRegisteredError):  # carrying the release of what it held changes
        two.acquire(req("a"), None, release=[g.permit_id])  # nothing either
    assert two.snapshot().permits == ()
    assert {s.key: s.used for s in two.snapshot().groups}.get("*", 0) == 0


def test_snapshot_and_reset(two):
    two.acquire(req("a"), None)
    snap = two.snapshot()
    bucket = {b.key: b for b in snap.buckets}["r:p"]
    assert bucket.used_last_minute == 1
    assert {g.key: g.used for g in snap.groups}["*"] == 1


def test_releases_carried_by_the_next_acquire(two):
    fast = RateSpec(6000, 100)
    two.publish_limits("a", {"r:q": fast}, {"*": 3})
    held = [two.try_acquire(req("a", provider="q")) for _ in range(3)]
    assert two.try_acquire(req("a", provider="q")) is None
    again = two.acquire(req("a", provider="q"), None, release=[held[0].permit_id])
    assert isinstance(again, Granted)  # the slot released in the same step was reused
    with pytest.raises(PermitRequestError):  # a failing step releases nothing
        two.acquire(req("a", cost=50), None, release=[held[1].permit_id])
    assert len(two.snapshot().permits) == 3
