"""The Redis store's adaptive control (Lua, microseconds) decides exactly as ``core.adaptive``
(nanoseconds) on the same inputs: a differential property test, against the Redis on
127.0.0.1:6379 (the probe script only computes; no keys)."""

from __future__ import annotations

import json

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from cross_instance.core import adaptive
from cross_instance.core.adaptive import Bounds, Learned
from cross_instance.core.limiter import RateSpec
from cross_instance.stores.redis import scripts

US_PER_MINUTE = 60_000_000
NOW = 1_764_000_000_000_000
times = st.integers(NOW - 90_000_000, NOW + 90_000_000)
# provider hints: usual ones, and absurd ones (negative, 99,999,999 s) that the cap must bound
durations = st.none() | st.integers(0, 90_000_000) | st.integers(-10**12, 10**14)


@pytest.fixture(scope="module")
def probe(shared_redis):
    script = shared_redis.register_script(scripts.source("adaptive_probe"))
    return lambda query: script(keys=[], args=[json.dumps(query)])


@st.composite
def learned(draw):
    rate = draw(st.floats(0.5, 2000, allow_nan=False))
    zero_or = st.just(0) | times
    return {"rate": rate, "decreased_at": draw(zero_or), "last_429": draw(zero_or),
            "last_increase": draw(zero_or), "cooldown_until": draw(zero_or),
            "reported_limit": draw(st.none() | st.integers(1, 2000))}


@st.composite
def bounds(draw):
    floor = draw(st.integers(1, 100))
    return {"floor": float(floor), "ceiling": float(draw(st.integers(floor, 1000))),
            "reduction": draw(st.floats(0.05, 0.99)), "recovery": draw(st.floats(1.01, 2.0)),
            "max_cooldown": draw(st.integers(1_000, 86_400) | st.just(300)) * 1_000_000}


def core(b: dict) -> Bounds:  # the µs bounds as the core sees them (ns)
    return Bounds(b["floor"], b["ceiling"], b["reduction"], b["recovery"],
                  b["max_cooldown"] * 1000)


def ns(state: dict) -> Learned:  # the µs state as the core sees it (ns)
    return Learned(state["rate"], state["decreased_at"] * 1000, state["last_429"] * 1000,
                   state["last_increase"] * 1000, state["cooldown_until"] * 1000,
                   state["reported_limit"])


def check(got: list, result: Learned, flag: bool) -> None:
    """Lua's answer (rate as %.17g text, times in µs) against the core's (ns)."""
    assert float(got[0]) == result.rate
    limit = str(result.reported_limit).encode() if result.reported_limit is not None else b"none"
    assert got[1:] == [result.decreased_at_ns // 1000, result.last_429_ns // 1000,
                       result.last_increase_ns // 1000, result.cooldown_until_ns // 1000,
                       limit, int(flag)]


EDGE_STATE = {"rate": 300.0, "decreased_at": 0, "last_429": NOW - 30_000_000,
              "last_increase": 0, "cooldown_until": 0, "reported_limit": None}
EDGE_BOUNDS = {"floor": 1.0, "ceiling": 1000.0, "reduction": 0.9, "recovery": 1.05,
               "max_cooldown": 300_000_000}


@settings(max_examples=300, deadline=None)
@given(learned(), bounds(), times, times, durations)
@example(EDGE_STATE, EDGE_BOUNDS, NOW, NOW, 99_999_999_000_000)  # Retry-After: 99999999
@example(EDGE_STATE, EDGE_BOUNDS, NOW, NOW, -1_000_000)  # a negative one
def test_rate_limited(probe, s, b, now, granted, retry_after):
    got = probe({"op": "rate_limited", "state": s, "b": b, "now": now, "granted": granted,
                 "retry_after": retry_after})
    result, lowered = adaptive.on_rate_limited(
        ns(s), core(b), now * 1000, granted * 1000,
        None if retry_after is None else retry_after * 1000)
    check(got, result, lowered)


@settings(max_examples=300, deadline=None)
@given(learned(), bounds(), times, st.floats(0, 2))
@example(EDGE_STATE, EDGE_BOUNDS, NOW, 0.9)  # exactly QUIET after the last 429
def test_success(probe, s, b, now, utilisation):
    got = probe({"op": "success", "state": s, "b": b, "now": now, "utilisation": utilisation})
    result, raised = adaptive.on_success(ns(s), core(b), now * 1000, utilisation)
    check(got, result, raised)


@settings(max_examples=300, deadline=None)
@given(learned(), bounds(), times, st.none() | st.integers(-5, 3000),
       st.none() | st.integers(0, 5), durations)
@example(EDGE_STATE, EDGE_BOUNDS, NOW, 300, None, None)  # a stated limit equal to the rate
@example(EDGE_STATE, EDGE_BOUNDS, NOW, 299, 0, 1_000_000)
@example(EDGE_STATE, EDGE_BOUNDS, NOW, None, 0, 99_999_999_000_000)  # a reset a century away
@example(EDGE_STATE, EDGE_BOUNDS, NOW, None, 0, -5_000_000)  # a reset in the past
def test_reported(probe, s, b, now, limit, remaining, reset):
    got = probe({"op": "reported", "state": s, "b": b, "now": now, "limit": limit,
                 "remaining": remaining, "reset": reset})
    result = adaptive.on_reported(ns(s), core(b), now * 1000, limit, remaining,
                                  None if reset is None else reset * 1000)
    check(got, result, False)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 10_000), st.integers(1, 500), times, times,
       st.none() | st.floats(0.5, 20_000, allow_nan=False), st.just(0) | times, st.booleans(),
       st.integers(0, 600))
@example(600, 7, NOW, NOW, 300.5, 0, False, 3)  # a scaled burst that is not a whole number
def test_effective_and_synced(probe, per_minute, burst, tat, now, lrate, cooldown, slow,
                              remaining):
    got = probe({"op": "effective", "per_minute": per_minute, "burst": burst, "tat": tat,
                 "learned_rate": lrate, "cooldown_until": cooldown, "slow_start": slow})
    spec, eff_tat = adaptive.effective(RateSpec(per_minute, burst, US_PER_MINUTE), tat, lrate,
                                       cooldown, slow)
    assert got == [spec.per_minute, spec.burst, spec.interval_ns, eff_tat]
    synced = probe({"op": "synced", "tat": tat, "now": now, "burst": burst,
                    "per_minute": per_minute, "remaining": remaining})
    assert synced == adaptive.synced_tat(tat, now, RateSpec(per_minute, burst, US_PER_MINUTE),
                                         remaining)
