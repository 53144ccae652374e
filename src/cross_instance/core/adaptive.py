"""Learning a provider's real limit from its answers (AIMD), pure: the clock is an argument.

State per bucket is shared by every instance (the store keeps it), so all instances learn from
every instance's responses. Rules:

- **One decrease per congestion epoch.** A 429 lowers the rate (× ``reduction_factor``) only if
  the call it answers was *granted after* the last decrease. Calls already in flight when the
  limit was lowered were admitted under the old rate; their 429s are the same congestion, and a
  burst of them from several processes counts once, not ×N (TCP's rule, with no timer to tune).
- **Cooldown.** A ``Retry-After`` (or remaining = 0 with a reset time) sets ``cooldown_until``;
  nobody is admitted before it. It only ever moves later, and never further than
  ``max_cooldown_ns`` from the answer that set it (a hint of a day, or of 99,999,999 s, is a
  provider's bug or a hostile proxy, and would stop every instance; ``clamp_hint`` is the
  same bound applied, and logged, before the hint reaches the store).
- **Recovery** (× ``recovery_factor``) only while the limit is really used (``utilisation`` of
  the last minute ≥ ``RECOVER_WHEN_USED``), no 429 came for ``QUIET_NS``, and at most once per
  ``RECOVER_EVERY_NS``.
- **Headers win.** A response that states the limit sets the rate to it at once (clamped to the
  bounds); AIMD remains the fallback for providers that state nothing.
- The rate never leaves ``[floor, ceiling]``: the configured min and max (max defaults to the
  configured requests per minute).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from cross_instance.core.keys import is_requests
from cross_instance.core.limiter import RateSpec
from cross_instance.core.limits import DEFAULT_MAX_COOLDOWN_MS, AdaptiveSettings

QUIET_NS = 30_000_000_000
RECOVER_EVERY_NS = 5_000_000_000
RECOVER_WHEN_USED = 0.8


@dataclass(frozen=True, slots=True)
class Bounds:
    floor: float
    ceiling: float
    reduction: float
    recovery: float
    max_cooldown_ns: int = DEFAULT_MAX_COOLDOWN_MS * 1_000_000

    def clamp(self, rate: float) -> float:
        return min(self.ceiling, max(self.floor, rate))


@dataclass(frozen=True, slots=True)
class Learned:
    """The shared learned state of one bucket (times on the store clock, ns)."""

    rate: float
    decreased_at_ns: int = 0
    last_429_ns: int = 0
    last_increase_ns: int = 0
    cooldown_until_ns: int = 0
    reported_limit: int | None = None


def bounds(configured_rpm: int, reduction: float, recovery: float, min_rpm: int,
           max_rpm: int | None, max_cooldown_ms: int = DEFAULT_MAX_COOLDOWN_MS) -> Bounds:
    ceiling = float(max_rpm if max_rpm is not None else configured_rpm)
    return Bounds(min(float(min_rpm), ceiling), ceiling, reduction, recovery,
                  max_cooldown_ms * 1_000_000)


def bounds_for(settings: AdaptiveSettings, configured_rpm: int) -> Bounds:
    """The bounds the ``adaptiveRateControl`` settings give a bucket configured for
    ``configured_rpm``."""
    return bounds(configured_rpm, settings.reduction_factor, settings.recovery_factor,
                  settings.min_requests_per_minute, settings.max_requests_per_minute,
                  settings.max_cooldown_ms)


def clamp_hint(wait_ns: int | None, max_cooldown_ns: int) -> int | None:
    """A provider's wait hint as a cooldown may use it: within ``[0, max_cooldown_ns]``."""
    return None if wait_ns is None else min(max(0, wait_ns), max_cooldown_ns)


def on_rate_limited(state: Learned, b: Bounds, now_ns: int, granted_ns: int,
                    retry_after_ns: int | None) -> tuple[Learned, bool]:
    """A 429 for a call granted at ``granted_ns``; returns the new state and whether the
    rate was lowered (False: same congestion epoch as an earlier decrease)."""
    cooldown = state.cooldown_until_ns
    if retry_after_ns is not None:
        cooldown = max(cooldown, now_ns + min(max(0, retry_after_ns), b.max_cooldown_ns))
    new = replace(state, last_429_ns=max(state.last_429_ns, now_ns), cooldown_until_ns=cooldown)
    if state.decreased_at_ns and granted_ns <= state.decreased_at_ns:
        return new, False
    lowered = b.clamp(state.rate * b.reduction)
    return replace(new, rate=lowered, decreased_at_ns=now_ns), lowered < state.rate


def on_success(state: Learned, b: Bounds, now_ns: int, utilisation: float) -> tuple[Learned, bool]:
    """A successful call; returns the new state and whether the rate was raised."""
    if (utilisation < RECOVER_WHEN_USED or now_ns - state.last_429_ns < QUIET_NS
            or now_ns - state.last_increase_ns < RECOVER_EVERY_NS
            or state.reported_limit is not None):
        return state, False
    raised = b.clamp(state.rate * b.recovery)
    if raised <= state.rate:
        return state, False
    return replace(state, rate=raised, last_increase_ns=now_ns), True


def on_reported(state: Learned, b: Bounds, now_ns: int, limit_per_minute: int | None,
                remaining: int | None, reset_ns: int | None) -> Learned:
    """Headers stated the limit (per minute) and/or that nothing remains until a reset."""
    new = state
    if limit_per_minute is not None and limit_per_minute > 0:
        rate = b.clamp(float(limit_per_minute))
        # Lowering to a stated limit opens a congestion epoch like a decrease does: 429s for
        # calls granted under the old rate must not cut it again.
        decreased = now_ns if rate < state.rate else state.decreased_at_ns
        new = replace(new, rate=rate, reported_limit=limit_per_minute, decreased_at_ns=decreased)
    if remaining == 0 and reset_ns is not None:
        until = now_ns + min(max(0, reset_ns), b.max_cooldown_ns)
        new = replace(new, cooldown_until_ns=max(new.cooldown_until_ns, until))
    return new


def synced_tat(tat: int, now_ns: int, spec: RateSpec, remaining: int) -> int:
    """A TAT that leaves at most ``remaining`` tokens available now: the provider said that is
    all it has left, whatever our own bucket believed."""
    return max(tat, now_ns + max(0, spec.burst - remaining) * spec.interval_ns)


def slow_starts(key: str, reports: bool, probed: bool) -> bool:
    """Whether ``effective`` runs bucket ``key`` in slow start for a caller: only request
    buckets (pacing *calls*; a token bucket with burst 1 could not admit a real call), only
    for callers that will report, only until the provider's first answer."""
    return reports and not probed and is_requests(key)


def effective(spec: RateSpec, tat: int, learned_rate: float | None, cooldown_until_ns: int,
              slow_start: bool = False) -> tuple[RateSpec, int]:
    """The spec and TAT the limiter uses: the learned rate (never above the configured one),
    its burst scaled down with it, and a TAT that admits nothing before the cooldown ends and
    then one call per interval (waiters resume in order and paced, not all at once).

    ``slow_start``: nothing has been heard from the provider about this bucket yet and the
    caller will report, so calls go one interval apart (burst 1) until the first answer says
    what the provider allows, instead of a configured burst the provider may not honour."""
    if learned_rate is not None and learned_rate < spec.per_minute:
        per_minute = max(1, int(learned_rate))
        spec = spec.with_rate(per_minute, max(1, spec.burst * per_minute // spec.per_minute))
    if slow_start and spec.burst > 1:
        spec = spec.with_rate(spec.per_minute, 1)
    if cooldown_until_ns:
        tat = max(tat, cooldown_until_ns + (spec.burst - 1) * spec.interval_ns)
    return spec, tat
