"""The Redis store's arbiter (Lua) decides exactly as ``core.arbiter`` on the same state: a
differential property test over random queues, buckets, groups, reservations and shares,
against the Redis on 127.0.0.1:6379 (the probe script only computes; no keys)."""

from __future__ import annotations

import json

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from cross_instance.core.arbiter import Capacity, Holder, Need, arbitrate
from cross_instance.core.limiter import RateSpec
from cross_instance.stores.redis import scripts

US_PER_MINUTE = 60_000_000
NOW = 1_764_000_000_000_000
BUCKETS = ["r:p", "r:p/m", "t:p"]
GROUPS = ["*", "p:p", "m:p/m"]
IDS = ["a", "b", "c"]


@pytest.fixture(scope="module")
def probe(shared_redis):
    script = shared_redis.register_script(scripts.source("arbiter_probe"))
    return script


needs = st.builds(
    lambda iid, rates, slots: (iid, tuple(rates.items()), tuple(slots)),
    st.sampled_from(IDS),
    st.dictionaries(st.sampled_from(BUCKETS), st.integers(1, 4), max_size=3),
    st.lists(st.sampled_from(GROUPS), unique=True, max_size=3).map(lambda g: ["*", *g]
                                                                    if "*" not in g else g))


@st.composite
def states(draw):
    specs = {k: RateSpec(draw(st.integers(1, 600)), draw(st.integers(1, 6)),
                                  US_PER_MINUTE)
             for k in draw(st.lists(st.sampled_from(BUCKETS), unique=True, max_size=3))}
    tats = {k: NOW + draw(st.integers(-20_000_000, 20_000_000)) for k in specs}
    limits = {g: draw(st.integers(1, 6))
              for g in draw(st.lists(st.sampled_from(GROUPS[1:]), unique=True, max_size=2))}
    holders = {i: Holder(draw(st.integers(0, 2)), draw(st.integers(0, 3)),
                         draw(st.integers(1, 4)))
               for i in draw(st.lists(st.sampled_from(IDS), unique=True, max_size=3))}
    used = {g: draw(st.integers(0, 6)) for g in GROUPS}
    # the global group as the store sees it: every holder's slots plus unlisted ones, and a
    # limit near the reservation edge, where the reservation rule decides
    used["*"] = sum(h.used for h in holders.values()) + draw(st.integers(0, 2))
    reserved = sum(max(h.used, h.reserved) for h in holders.values())
    limits["*"] = max(1, reserved + draw(st.integers(-1, 2)))
    raw = draw(st.lists(needs, max_size=6))
    waiters = [Need(i, r, s, ticket=10 + n) for n, (i, r, s) in enumerate(raw)]
    me_raw = draw(needs)
    choice = draw(st.integers(-1, len(waiters)))
    if 0 <= choice < len(waiters):
        me = waiters[choice]  # a waiter asking again
    else:
        me = Need(*me_raw, ticket=None if choice < 0 else 99)
    now = NOW + draw(st.integers(-5_000_000, 5_000_000))
    return me, waiters, Capacity(tats, specs, used, limits, holders), now


def encode(n: Need) -> dict:
    return {"instance_id": n.instance_id, "rates": [list(r) for r in n.rates],
            "slots": list(n.slots), "ticket": n.ticket}


RESERVATION_EDGE = (  # an unreserved waiter's slot uses up the room left beside a reservation
    Need("c", (), ("*",)), [Need("b", (), ("*",), ticket=10)],
    Capacity({}, {}, {"*": 0}, {"*": 3}, {"a": Holder(0, 2, 1)}), NOW)


@settings(max_examples=500, deadline=None)
@given(states())
@example(RESERVATION_EDGE)
def test_lua_arbiter_matches_the_core(probe, state):
    me, waiters, cap, now = state
    expected = arbitrate(me, waiters, cap, now)
    payload = {
        "me": encode(me), "waiters": [encode(w) for w in waiters], "now": now,
        "cap": {"tats": cap.tats,
                "specs": {k: {"burst": s.burst, "t": s.interval_ns} for k, s in cap.specs.items()},
                "group_used": cap.group_used, "group_limit": cap.group_limit,
                "holders": {i: {"used": h.used, "reserved": h.reserved, "share": h.share}
                            for i, h in cap.holders.items()}}}
    got = probe(keys=[], args=[json.dumps(payload)])
    assert got == [int(expected.grant), expected.ready_at, int(expected.slot_blocked),
                   expected.ahead, expected.reason.encode()]
