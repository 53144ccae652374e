"""AIMD on shared state: one decrease per congestion epoch, bounded, recovery only when used."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from cross_instance.core.adaptive import (
    QUIET_NS,
    RECOVER_EVERY_NS,
    Learned,
    bounds,
    on_rate_limited,
    on_reported,
    on_success,
    slow_starts,
)

B = bounds(500, 0.9, 1.05, 100, 1000)
S = 1_000_000_000


def test_a_burst_of_429s_from_calls_in_flight_decreases_once():
    state = Learned(rate=500.0)
    granted = [10 * S + i for i in range(8)]  # eight calls in flight, granted before the 429s
    decreases = 0
    for k, g in enumerate(granted):
        state, lowered = on_rate_limited(state, B, 11 * S + k, g, None)
        decreases += lowered
    assert decreases == 1 and state.rate == 450.0
    # a call granted after the decrease that still gets a 429: a new epoch
    state, lowered = on_rate_limited(state, B, 13 * S, 12 * S, None)
    assert lowered and state.rate == 405.0


def test_retry_after_sets_a_cooldown_that_only_moves_later():
    state, _ = on_rate_limited(Learned(rate=500.0), B, 10 * S, 9 * S, 5 * S)
    assert state.cooldown_until_ns == 15 * S
    state, _ = on_rate_limited(state, B, 11 * S, 9 * S, 1 * S)
    assert state.cooldown_until_ns == 15 * S


def test_recovery_needs_use_quiet_and_spacing():
    state = Learned(rate=400.0, last_429_ns=100 * S)
    assert on_success(state, B, 100 * S + QUIET_NS - 1, 1.0) == (state, False)  # too soon
    assert on_success(state, B, 100 * S + QUIET_NS, 0.5) == (state, False)  # not used
    state, raised = on_success(state, B, 100 * S + QUIET_NS, 0.9)
    assert raised and state.rate == 420.0
    assert not on_success(state, B, 100 * S + QUIET_NS + RECOVER_EVERY_NS - 1, 1.0)[1]


def test_headers_state_the_limit_at_once_and_remaining_zero_cools_down():
    state = on_reported(Learned(rate=500.0), B, 10 * S, 300, 0, 2 * S)
    assert state.rate == 300.0 and state.cooldown_until_ns == 12 * S
    assert on_reported(Learned(rate=500.0), B, 0, 5000, None, None).rate == 1000.0  # clamped
    # calls granted before the stated limit lowered the rate: their 429s are the same epoch
    assert not on_rate_limited(state, B, 11 * S, 9 * S, None)[1]


@given(st.lists(st.tuples(st.sampled_from(["429", "ok", "hdr"]), st.integers(0, 10**12),
                          st.integers(0, 10**12), st.floats(0, 1), st.integers(0, 5000)),
                max_size=60))
@settings(max_examples=300)
def test_rate_never_leaves_its_bounds(events):
    state = Learned(rate=500.0)
    for kind, now, granted, used, limit in sorted(events, key=lambda e: e[1]):
        if kind == "429":
            state, _ = on_rate_limited(state, B, now, granted, None)
        elif kind == "ok":
            state, _ = on_success(state, B, now, used)
        else:
            state = on_reported(state, B, now, limit, None, None)
        assert B.floor <= state.rate <= B.ceiling


def test_slow_start_paces_calls_but_never_token_buckets():
    assert slow_starts("r:openai", reports=True, probed=False)
    assert slow_starts("r:openai/gpt-4o", reports=True, probed=False)
    assert not slow_starts("t:openai", reports=True, probed=False)
    assert not slow_starts("r:openai", reports=False, probed=False)
    assert not slow_starts("r:openai", reports=True, probed=True)
