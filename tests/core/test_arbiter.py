"""The FIFO arbiter: first come first served, no overtaking on shared resources, reservations
and fair shares for global slots."""

from hypothesis import given, settings
from hypothesis import strategies as st

from cross_instance.core.arbiter import GLOBAL_GROUP, Capacity, Holder, Need, arbitrate
from cross_instance.core.limiter import RateSpec

NOW = 10**12
SPEC = RateSpec(60, 2)  # one token per second, burst 2


def cap(tat=0, used=0, limit=6, holders=None, specs=None, tats=None):
    return Capacity(tats or {"r:a": tat, "r:b": tat}, specs or {"r:a": SPEC, "r:b": SPEC},
                    {GLOBAL_GROUP: used}, {GLOBAL_GROUP: limit},
                    holders or {"i1": Holder(0, 0, 3), "i2": Holder(0, 0, 3)})


def need(inst="i1", key="r:a", ticket=None):
    return Need(inst, ((key, 1),), (GLOBAL_GROUP,), ticket)


def test_grants_when_free_and_nobody_waits():
    assert arbitrate(need(), [], cap(), NOW).grant


def test_newcomer_does_not_overtake_an_earlier_waiter_on_the_same_bucket():
    # One token left; ticket 1 (i2) is waiting for it (it polled before the token arrived).
    c = cap(tat=NOW + SPEC.interval_ns)  # exactly one token available now
    assert arbitrate(need("i2", ticket=1), [], c, NOW).grant
    v = arbitrate(need("i1"), [need("i2", ticket=1)], c, NOW)
    assert not v.grant and v.ahead == 1
    assert v.ready_at == NOW + SPEC.interval_ns  # after the waiter's token


def test_waiter_on_another_bucket_does_not_block():
    c = cap(tats={"r:a": NOW + 10 * SPEC.interval_ns, "r:b": 0})
    assert arbitrate(need("i1", "r:b"), [need("i2", "r:a", ticket=1)], c, NOW).grant


def test_rate_blocked_waiter_holds_no_slot():
    c = cap(used=5, tats={"r:a": NOW + 10 * SPEC.interval_ns, "r:b": 0})
    assert arbitrate(need("i1", "r:b"), [need("i2", "r:a", ticket=1)], c, NOW).grant


def test_slot_blocked_waiter_blocks_later_requests_for_slots():
    c = cap(used=6)
    v = arbitrate(need("i1", "r:b"), [need("i2", "r:a", ticket=1)], c, NOW)
    assert not v.grant and v.slot_blocked


def test_reservation_is_always_available_to_its_instance():
    holders = {"i1": Holder(0, 2, 3), "i2": Holder(4, 0, 3)}
    c = cap(used=4, holders=holders)
    assert not arbitrate(need("i2"), [], c, NOW).grant  # 4 + reserved 2 = 6: full for i2
    assert arbitrate(need("i1"), [], c, NOW).grant


def test_reservation_is_not_blocked_by_a_waiter_that_could_not_have_it():
    """i3 waits (ticket 1) for a global slot that i1's reservation keeps from it; i1, asking
    later, still takes its reserved slot: no waiter ahead could have had it."""
    holders = {"i1": Holder(0, 1, 1), "i2": Holder(1, 0, 1), "i3": Holder(0, 0, 1)}
    c = cap(used=1, limit=2, holders=holders)
    assert not arbitrate(need("i3", "r:b", ticket=1), [], c, NOW).grant
    assert arbitrate(need("i1"), [need("i3", "r:b", ticket=1)], c, NOW).grant
    assert not arbitrate(need("i2"), [need("i3", "r:b", ticket=1)], c, NOW).grant


def test_unused_share_is_used_by_others():
    holders = {"i1": Holder(5, 0, 3), "i2": Holder(0, 0, 3)}
    assert arbitrate(need("i1"), [], cap(used=5, holders=holders), NOW).grant


def test_instance_below_its_share_goes_first():
    holders = {"i1": Holder(4, 0, 3), "i2": Holder(1, 0, 3)}
    c = cap(used=6, holders=holders)
    v = arbitrate(need("i2", ticket=9), [need("i1", ticket=1), need("i2", ticket=9)], c, NOW)
    assert v.ahead == 0  # i2 (below share) is ahead of i1's earlier ticket


@given(st.lists(st.tuples(st.sampled_from(["i1", "i2", "i3"]), st.sampled_from(["r:a", "r:b"])),
                min_size=1, max_size=12),
       st.integers(0, 6), st.integers(0, 3 * SPEC.interval_ns))
@settings(max_examples=200, deadline=None)
def test_first_grantable_waiter_in_order_is_granted_never_a_later_conflicting_one(q, used, lag):
    """Serving the queue in ticket order: whenever a later waiter is granted, every earlier
    waiter sharing its bucket would have been granted too (no overtaking)."""
    holders = {i: Holder(0, 0, 2) for i in ("i1", "i2", "i3")}
    c = cap(tat=NOW + lag, used=used, holders=holders)
    waiters = [need(i, k, ticket=n) for n, (i, k) in enumerate(q, start=1)]
    granted = [w for w in waiters if arbitrate(w, waiters, c, NOW).grant]
    for g in granted:
        for earlier in waiters:
            if earlier.ticket < g.ticket and earlier.rates[0][0] == g.rates[0][0]:
                assert arbitrate(earlier, waiters, c, NOW).grant
    total_granted_slots = len(granted)
    assert total_granted_slots <= max(0, 6 - used) + len(granted)  # sanity


@given(st.lists(st.tuples(st.integers(0, 5 * SPEC.interval_ns), st.integers(1, 2)), min_size=1,
                max_size=3),
       st.lists(st.tuples(st.integers(0, 8), st.one_of(st.none(), st.integers(1, 8))),
                min_size=1, max_size=3))
@settings(max_examples=300, deadline=None)
def test_uncontended_shortcut_equals_the_arbiter(rates, groups):
    """fits_now (the store's fast path) decides exactly like arbitrate when nobody is queued
    and nothing is reserved."""
    from cross_instance.core.arbiter import fits_now

    keys = [f"r:{i}" for i in range(len(rates))]
    names = [GLOBAL_GROUP] + [f"p:{i}" for i in range(len(groups) - 1)]
    c = Capacity({k: NOW + lag for k, (lag, _) in zip(keys, rates, strict=False)},
                 {k: SPEC for k in keys},
                 {g: used for g, (used, _) in zip(names, groups, strict=False)},
                 {g: lim for g, (_, lim) in zip(names, groups, strict=False)
                  if lim is not None}, {})
    me = Need("i1", tuple((k, cost) for k, (_, cost) in zip(keys, rates, strict=False)),
              tuple(names))
    quick = fits_now([(NOW + lag, SPEC, cost) for lag, cost in rates], groups, NOW)
    assert quick == arbitrate(me, [], c, NOW).grant
