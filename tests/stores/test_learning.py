"""Adaptive control's shared state, on every store: one decrease per epoch whoever reports
it, cooldowns honoured by every acquirer, stated limits taken at once."""

from __future__ import annotations

from cross_instance.core.limiter import RateSpec
from cross_instance.core.limits import AdaptiveSettings
from cross_instance.core.records import Granted, Outcome, PermitRequest, Waiting
from tests.conftest import record

POLICY = AdaptiveSettings(reduction_factor=0.9, recovery_factor=1.05, min_requests_per_minute=6)
SPEC = RateSpec(600, 10)


def req(iid: str) -> PermitRequest:
    return PermitRequest(iid, "p", None, (("r:p", 1),), ("*",))


def setup(make_store):
    stores = [make_store(), make_store()]  # two connections, as two processes
    for s, iid in zip(stores, ("a", "b"), strict=False):
        s.register_instance(record(iid))
        s.publish_limits(iid, {"r:p": SPEC}, {"*": 50})
    return stores


def bucket(store):
    return {b.key: b for b in store.snapshot().buckets}["r:p"]


def test_a_burst_of_429s_from_several_processes_lowers_the_rate_once(make_store, clock):
    a, b = setup(make_store)
    grants = [s.acquire(req(i), None) for s, i in ((a, "a"), (b, "b"), (a, "a"))]
    assert all(isinstance(g, Granted) for g in grants)
    changes = []
    for s, g in zip((a, b, a), grants, strict=False):
        changes += s.record_outcome(["r:p"], Outcome(g.granted_ns, True), POLICY)
    assert [c.reason for c in changes].count("429 error detected") == 1
    assert bucket(a).learned_rate == 540.0
    clock.advance(0.5)
    late = a.acquire(req("a"), None)  # granted after the decrease: a new epoch if it fails
    a.record_outcome(["r:p"], Outcome(late.granted_ns, True), POLICY)
    assert bucket(b).learned_rate == 486.0


def test_cooldown_is_honoured_by_every_acquirer_and_ends_paced(make_store, clock):
    a, b = setup(make_store)
    g = a.acquire(req("a"), None)
    a.record_outcome(["r:p"], Outcome(g.granted_ns, True, retry_after_ns=2_000_000_000), POLICY)
    waiting = b.acquire(req("b"), None)
    assert isinstance(waiting, Waiting) and waiting.ready_ns >= clock.now + 2_000_000_000
    clock.advance(2.0)
    assert isinstance(b.acquire(req("b"), waiting.ticket), Granted)
    assert isinstance(a.acquire(req("a"), None), Waiting)  # paced: one at a time after it


def test_a_stated_limit_is_taken_at_once_and_bounded(make_store):
    a, _ = setup(make_store)
    g = a.acquire(req("a"), None)
    a.record_outcome(["r:p"], Outcome(g.granted_ns, False, reported=(("r:p", 120, 100, None),)),
                     POLICY)
    assert bucket(a).learned_rate == 120.0 and bucket(a).reported_limit == 120
    a.record_outcome(["r:p"], Outcome(g.granted_ns, False, reported=(("r:p", 5000, 1, None),)),
                     POLICY)
    assert bucket(a).learned_rate == 600.0  # never above the configured limit


def test_disabled_adaptive_control_keeps_the_rate_but_honours_cooldowns(make_store):
    a, _ = setup(make_store)
    g = a.acquire(req("a"), None)
    off = AdaptiveSettings(enabled=False)
    a.record_outcome(["r:p"], Outcome(g.granted_ns, True, retry_after_ns=10**9), off)
    assert bucket(a).learned_rate is None and bucket(a).cooldown_until_ns > 0


def test_reset_forgets_what_was_learned_but_not_the_rate_state(make_store):
    a, b = setup(make_store)
    g = a.acquire(req("a"), None)
    a.record_outcome(["r:p"], Outcome(g.granted_ns, True, retry_after_ns=10**10), POLICY)
    tat_before = bucket(a).tat_ns
    assert b.reset_learned(["r:p"]) == 1
    after = bucket(a)
    assert after.learned_rate is None and after.cooldown_until_ns == 0
    assert after.tat_ns == tat_before
    assert a.reset_learned() == 1


def test_slow_start_for_reporting_callers_until_the_first_answer(make_store):
    a, _ = setup(make_store)
    slow = PermitRequest("a", "p", None, (("r:p", 1),), ("*",), reports=True)
    first = a.acquire(slow, None)
    assert isinstance(first, Granted)
    assert isinstance(a.acquire(slow, None), Waiting)  # burst 1 while nothing is known
    assert isinstance(a.acquire(req("a"), None), Granted)  # non-reporting callers: no change
    a.record_outcome(["r:p"], Outcome(first.granted_ns, False, reported=(("r:p", 600, 9, None),)),
                     POLICY)
    assert isinstance(a.acquire(slow, None), Granted)  # the answer ended the slow start


def test_reported_remaining_caps_what_is_available(make_store):
    a, _ = setup(make_store)
    g = a.acquire(req("a"), None)
    a.record_outcome(["r:p"], Outcome(g.granted_ns, False, reported=(("r:p", None, 2, None),)),
                     POLICY)
    grants = [a.acquire(req("a"), None) for _ in range(3)]
    assert [isinstance(x, Granted) for x in grants] == [True, True, False]


def test_a_cooldown_never_exceeds_the_maximum_whatever_the_hint(make_store, clock):
    """A Retry-After of 99,999,999 s (or a reset a century away) would stop every instance
    for years; the store bounds it by ``max_cooldown_ms`` even if a caller sends it raw."""
    a, b = setup(make_store)
    policy = AdaptiveSettings(max_cooldown_ms=60_000)
    g = a.acquire(req("a"), None)
    a.record_outcome(["r:p"], Outcome(g.granted_ns, True, 99_999_999 * 10**9), policy)
    a.record_outcome(["r:p"], Outcome(g.granted_ns, False,
                                      reported=(("r:p", None, 0, 10**20),)), policy)
    a.record_outcome(["r:p"], Outcome(g.granted_ns, True, -10**18), policy)  # changes nothing
    until = bucket(b).cooldown_until_ns
    assert clock.now + 59 * 10**9 <= until <= clock.now + 60 * 10**9
    clock.advance(61.0)
    assert isinstance(b.acquire(req("b"), None), Granted)
