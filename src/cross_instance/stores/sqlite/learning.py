"""Adaptive control's shared state in the SQLite store: one transaction applies one call's
outcome to its buckets (decisions by ``core.adaptive``)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from cross_instance.core import adaptive
from cross_instance.core.adaptive import Learned
from cross_instance.core.keys import is_requests
from cross_instance.core.limiter import RateSpec
from cross_instance.core.limits import AdaptiveSettings
from cross_instance.core.records import Adjustment, Outcome
from cross_instance.core.window import windowed

_LOAD = ("SELECT per_minute, lrate, decreased_at, last_429, last_increase, cooldown_until, "
         "reported_limit, win, cur, prev, burst, tat, probed FROM buckets WHERE key=?")
_SAVE = ("UPDATE buckets SET lrate=?, decreased_at=?, last_429=?, last_increase=?, "
         "cooldown_until=?, reported_limit=?, tat=?, probed=1 WHERE key=?")


def record(conn: sqlite3.Connection, now: int, keys: Sequence[str], outcome: Outcome,
           policy: AdaptiveSettings) -> list[Adjustment]:
    reported = {key: rest for key, *rest in outcome.reported}
    changes = []
    for key in keys:
        row = conn.execute(_LOAD, (key,)).fetchone()
        if row is None:
            continue
        per_minute, lrate, decreased, last_429, last_inc, cooldown, reported_limit, win, cur, \
            prev, burst, tat, probed = row
        before = Learned(lrate if lrate is not None else float(per_minute), decreased,
                         last_429, last_inc, cooldown, reported_limit)
        state, reason, new_tat = before, "", tat
        b = adaptive.bounds_for(policy, per_minute)
        if policy.enabled and key in reported:
            limit, remaining, reset_ns = reported[key]
            state = adaptive.on_reported(state, b, now, limit, remaining, reset_ns)
            reason = "limit stated by the provider"
            if remaining is not None:
                spec, eff_tat = adaptive.effective(RateSpec(per_minute, burst), tat, state.rate,
                                                   state.cooldown_until_ns)
                synced = adaptive.synced_tat(eff_tat, now, spec, remaining)
                new_tat = synced if synced > eff_tat else tat
        if outcome.rate_limited and is_requests(key):
            state, lowered = adaptive.on_rate_limited(
                state, b, now, outcome.granted_ns, outcome.retry_after_ns)
            if not policy.enabled:  # cooldowns still apply; the rate stays configured
                state = Learned(before.rate, state.decreased_at_ns, state.last_429_ns,
                                state.last_increase_ns, state.cooldown_until_ns,
                                state.reported_limit)
            reason = "429 error detected" if lowered and policy.enabled else "429 (same epoch)"
        elif policy.enabled and is_requests(key):
            used = windowed(win, cur, prev, now)
            state, raised = adaptive.on_success(state, b, now, used / max(state.rate, 1.0))
            reason = "recovered" if raised else reason
        if state == before and new_tat == tat and probed:
            continue  # nothing new (most plain successes): no write
        learned = None if lrate is None and state.rate == before.rate else state.rate
        conn.execute(_SAVE, (learned, state.decreased_at_ns, state.last_429_ns,
                             state.last_increase_ns, state.cooldown_until_ns,
                             state.reported_limit, new_tat, key))
        if state != before:
            changes.append(Adjustment(key, before.rate, state.rate, state.cooldown_until_ns,
                                      reason))
    return changes
