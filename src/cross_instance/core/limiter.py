"""GCRA (generic cell rate algorithm): the exact shared rate limit, in integer nanoseconds.

A bucket is one integer, the theoretical arrival time ``tat``. A request of ``cost`` tokens at
``now`` is admitted iff ``max(tat, now) + cost*T - now <= burst*T`` where ``T`` is the emission
interval (ns per token). Promise: in every closed window of length W, the tokens admitted are at
most ``burst + W/T <= burst + rate*W`` (T is rounded *up*, so the real rate never exceeds the
configured one), and a caller that arrives when tokens are due is admitted (no lost capacity).

All functions are pure: the clock is an argument. A ``now`` that goes backwards can only make a
decision more conservative, never admit more.
"""

from __future__ import annotations

from dataclasses import dataclass, field

NS_PER_MINUTE = 60_000_000_000


@dataclass(frozen=True, slots=True)
class RateSpec:
    """``per_minute`` tokens per minute with a bucket of ``burst`` tokens (both >= 1).

    Times are nanoseconds unless ``ticks_per_minute`` says otherwise: a store whose arithmetic
    is exact only below 2**53 (Redis's Lua) keeps microseconds, and every function here then
    takes and returns times in those ticks."""

    per_minute: int
    burst: int
    ticks_per_minute: int = field(default=NS_PER_MINUTE, repr=False, compare=False)
    #: Emission interval T in ticks (ns by default), rounded up so the admitted rate never
    #: exceeds the spec.
    interval_ns: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.per_minute < 1 or self.burst < 1:
            raise ValueError(f"rate spec needs per_minute >= 1 and burst >= 1, got {self}")
        object.__setattr__(self, "interval_ns", -(-self.ticks_per_minute // self.per_minute))

    def with_rate(self, per_minute: int, burst: int) -> RateSpec:
        """Another rate on the same clock."""
        return RateSpec(per_minute, burst, self.ticks_per_minute)


def admits(tat: int, now: int, spec: RateSpec, cost: int) -> bool:
    """True iff ``cost`` tokens may be taken at ``now`` from a bucket at ``tat``."""
    t = spec.interval_ns
    return max(tat, now) + cost * t - now <= spec.burst * t


def consume(tat: int, now: int, spec: RateSpec, cost: int) -> int:
    """The bucket's new ``tat`` after taking ``cost`` tokens (whether or not it admits)."""
    return max(tat, now) + cost * spec.interval_ns


def ready_at(tat: int, now: int, spec: RateSpec, cost: int) -> int:
    """The earliest instant >= ``now`` at which ``cost`` tokens are admitted."""
    t = spec.interval_ns
    return max(now, tat + (cost - spec.burst) * t)


def available(tat: int, now: int, spec: RateSpec) -> int:
    """Whole tokens that could be taken at ``now`` (0..burst)."""
    t = spec.interval_ns
    return max(0, (spec.burst * t - max(0, tat - now)) // t)


def refund(tat: int, now: int, spec: RateSpec, tokens: int) -> int:
    """Give back ``tokens`` (never below ``now``: unused time is not banked past the burst)."""
    return max(now, tat - tokens * spec.interval_ns)
