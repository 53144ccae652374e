"""``Runtime.start(clock=...)``: the store's clock injected, so a test moves time by hand
instead of sleeping or timing. The waits themselves are made impossible (``no_sleep``): a
call that would sleep fails the test instead of slowing it."""

from __future__ import annotations

import pytest

from cross_instance import InvalidArgument, RateLimitExceeded
from cross_instance.core.limits import AdaptiveSettings
from cross_instance.core.records import Outcome
from cross_instance.runtime import Runtime
from cross_instance.stores.sqlite.store import SqliteStore
from tests.helpers_runtime import make_config


def start(tmp_path, clock, **limits):
    return Runtime.start(cwd=tmp_path, config=make_config(tmp_path / "state", **limits),
                         instance_id="a", clock=clock)


def test_rate_tokens_come_back_when_the_clock_moves(tmp_path, clock, no_sleep):
    with start(tmp_path, clock, rpm=60, burst=1) as rt:
        with rt.permit("p"):
            pass
        assert rt.try_permit("p") is None  # the one token is spent; no wait, no sleep
        clock.advance(0.999)
        assert rt.try_permit("p") is None
        clock.advance(0.001)  # exactly one emission interval later
        permit = rt.try_permit("p")
        assert permit is not None
        permit.release()


def test_a_timeout_the_limit_makes_certain_fails_at_once(tmp_path, clock, no_sleep):
    with start(tmp_path, clock) as rt:
        p = rt.permit("p")
        rt.store.record_outcome(["r:p"], Outcome(p.granted_ns, True, 30 * 10**9),
                                AdaptiveSettings())
        with pytest.raises(RateLimitExceeded) as err:
            rt.permit("p", timeout=1.0)  # sleeping into a certain failure would fail here
        assert err.value.retry_after == pytest.approx(30.0)
        clock.advance(30.0)
        rt.permit("p", timeout=1.0).release()  # the cooldown is over on the store's clock
        p.release()


def test_a_lock_expires_on_the_store_clock(tmp_path, clock, no_sleep):
    with start(tmp_path, clock) as rt:
        held = rt.locks.try_acquire("res", ttl=5)
        assert held is not None and rt.locks.try_acquire("res", ttl=5) is None
        clock.advance(5.0)
        again = rt.locks.try_acquire("res", ttl=5)
        assert again is not None and again.token == held.token + 1


def test_the_clock_argument_is_checked(tmp_path, clock):
    with pytest.raises(InvalidArgument, match="clock must be a callable"):
        Runtime.start(cwd=tmp_path, config=make_config(tmp_path / "s"), clock=5)
    store = SqliteStore(tmp_path / "other")
    try:
        with pytest.raises(InvalidArgument, match="not with store="):
            Runtime.start(cwd=tmp_path, config=make_config(tmp_path / "s"), store=store,
                          clock=clock)
    finally:
        store.close()
