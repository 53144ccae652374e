"""GCRA properties: never over the bound in any window, exact refill, time going back is safe."""

from hypothesis import given, settings
from hypothesis import strategies as st

from cross_instance.core import limiter
from cross_instance.core.limiter import RateSpec

specs = st.builds(RateSpec, per_minute=st.integers(1, 1_000_000), burst=st.integers(1, 10_000))


def run(spec: RateSpec, arrivals: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Admit greedily; returns (time, cost) of admitted requests."""
    tat, admitted = 0, []
    for now, cost in arrivals:
        if limiter.admits(tat, now, spec, cost):
            tat = limiter.consume(tat, now, spec, cost)
            admitted.append((now, cost))
    return admitted


arrivals = st.lists(st.tuples(st.integers(0, 120_000_000_000), st.integers(1, 5)), max_size=300)


@given(specs, arrivals, st.integers(1, 120_000_000_000))
@settings(max_examples=300, deadline=None)
def test_never_over_the_bound_in_any_window(spec, raw, window_ns):
    admitted = run(spec, sorted(raw))
    for i, (start, _) in enumerate(admitted):
        total = sum(c for t, c in admitted[i:] if t <= start + window_ns)
        # burst + rate * W, with the rate exactly per_minute / 60 s
        assert total * 60_000_000_000 <= spec.burst * 60_000_000_000 + spec.per_minute * window_ns


@given(specs, st.integers(0, 10**12))
def test_full_bucket_admits_exactly_the_burst_at_once(spec, now):
    admitted = run(spec, [(now, 1)] * (spec.burst + 5))
    assert len(admitted) == spec.burst


@given(specs, st.integers(0, 10**12), st.integers(1, 50))
def test_refill_is_exact(spec, start, k):
    """After emptying the bucket, the k-th token is due exactly k*T later, not a ns earlier."""
    t = spec.interval_ns
    tat = start
    for _ in range(spec.burst):
        tat = limiter.consume(tat, start, spec, 1)
    due = start + k * t
    for _ in range(k - 1):
        tat = limiter.consume(tat, max(start, tat - spec.burst * t + t), spec, 1)
    assert not limiter.admits(tat, due - 1, spec, 1)
    assert limiter.admits(tat, due, spec, 1)
    assert limiter.ready_at(tat, start, spec, 1) == due


@given(specs, st.integers(10**9, 10**12), st.integers(1, 10**9), st.integers(1, 5))
def test_a_clock_going_back_never_admits_more(spec, now, back, cost):
    tat = limiter.consume(0, now, spec, min(cost, spec.burst))
    if limiter.admits(tat, now - back, spec, cost):
        assert limiter.admits(tat, now, spec, cost)


@given(specs, st.integers(0, 10**12), st.integers(0, 10**11))
def test_available_matches_admits(spec, tat, now):
    n = limiter.available(tat, now, spec)
    assert 0 <= n <= spec.burst
    if n:
        assert limiter.admits(tat, now, spec, n)
    if n < spec.burst:
        assert not limiter.admits(tat, now, spec, n + 1)


def test_rate_is_rounded_down_never_up():
    spec = RateSpec(7, 1)
    assert spec.interval_ns * 7 >= 60_000_000_000
