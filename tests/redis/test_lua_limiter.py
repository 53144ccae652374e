"""The Redis store's limiter (Lua, microseconds, doubles) makes exactly the decisions of the
Python core (``core.limiter``) for the same inputs: a differential property test against the
Redis on 127.0.0.1:6379 (no keys are touched: the probe script only computes)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cross_instance.core import limiter
from cross_instance.core.limiter import RateSpec
from cross_instance.stores.redis import scripts

US_PER_MINUTE = 60_000_000
NOW = 1_764_000_000_000_000  # µs since the epoch, late 2025: the magnitude TIME gives


@pytest.fixture(scope="module")
def probe(shared_redis):
    script = shared_redis.register_script(scripts.source("limiter_probe"))
    return script


@settings(max_examples=400, deadline=None)
@given(per_minute=st.integers(1, 10_000_000), burst=st.integers(1, 1_000_000),
       tat_offset=st.integers(-10**12, 10**12), now_offset=st.integers(-10**12, 10**12),
       cost=st.integers(1, 2_000_000), tokens=st.integers(0, 2_000_000))
def test_lua_limiter_matches_the_core(probe, per_minute, burst, tat_offset, now_offset, cost,
                                      tokens):
    tat, now = NOW + tat_offset, NOW + now_offset
    spec = RateSpec(per_minute, burst, US_PER_MINUTE)
    got = probe(keys=[], args=[per_minute, burst, tat, now, cost, tokens])
    assert got == [spec.interval_ns, int(limiter.admits(tat, now, spec, cost)),
                   limiter.consume(tat, now, spec, cost),
                   limiter.ready_at(tat, now, spec, cost), limiter.available(tat, now, spec),
                   limiter.refund(tat, now, spec, tokens)]
