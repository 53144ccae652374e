"""The shared event log's vocabulary, pure: every kind, the callback each is delivered to, the
data each runtime-emitted kind carries, the JSON form of an event, and the rule that keeps
usage warnings rare.

Events are written by the stores (registry, ownership, locks: in the same atomic step as the
change they describe) and by the runtime (what a provider's answer taught, usage warnings:
``runtime.announcer`` writes them off the caller's thread). Every event's ``data`` is a flat
JSON object with camelCase keys; names (providers, models, buckets, instances, workflows,
resources) are kept exactly as given, whatever characters they hold.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from cross_instance.core.keys import parse_key
from cross_instance.core.records import Adjustment, Event

# --- kinds written by the stores ---------------------------------------------------------
INSTANCE_UP = "instance_up"
INSTANCE_DOWN = "instance_down"  # unregistered, judged dead, or taken over with a workflow
INSTANCE_REPLACED = "instance_replaced"  # a dead record replaced by a new one of the same id
PERMITS_REDECLARED = "permits_redeclared"  # a rejoin kept its permits (store restart grace)
WORKFLOW_CLAIMED = "workflow_claimed"
WORKFLOW_AUTO_CLAIMED = "workflow_auto_claimed"
WORKFLOW_FORCE_CLAIMED = "workflow_force_claimed"
WORKFLOW_RELEASED = "workflow_released"
LOCK_LOST = "lock_lost"
TASK_LOST = "task_lost"  # a queued task's run lost its lease: queued again, or failed
# --- kinds written by the runtime --------------------------------------------------------
RATE_LIMITED = "rate_limited"
COOLDOWN_STARTED = "cooldown_started"
COOLDOWN_ENDED = "cooldown_ended"
LIMIT_LEARNED = "limit_learned"
RATE_LIMIT_WARNING = "rate_limit_warning"
BUDGET_WARNING = "budget_warning"  # a spend budget reached its warnShare
BUDGET_EXCEEDED = "budget_exceeded"  # a call waited or was refused for a spend budget

#: The subscriber callback (keyword of ``rt.events.subscribe``) each kind is delivered to;
#: every event, of these kinds or any other, also goes to ``on_event``.
CALLBACKS: Mapping[str, str] = {
    INSTANCE_UP: "on_instance_connected",
    INSTANCE_DOWN: "on_instance_disconnected",
    INSTANCE_REPLACED: "on_instance_disconnected",
    RATE_LIMIT_WARNING: "on_rate_limit_warning",
    BUDGET_WARNING: "on_budget_warning",
    BUDGET_EXCEEDED: "on_budget_exceeded",
    RATE_LIMITED: "on_rate_limited",
    COOLDOWN_STARTED: "on_cooldown_started",
    COOLDOWN_ENDED: "on_cooldown_ended",
    LIMIT_LEARNED: "on_limit_learned",
    WORKFLOW_CLAIMED: "on_workflow_claimed",
    WORKFLOW_AUTO_CLAIMED: "on_workflow_auto_claimed",
    WORKFLOW_FORCE_CLAIMED: "on_workflow_force_claimed",
    WORKFLOW_RELEASED: "on_workflow_released",
    LOCK_LOST: "on_lock_lost",
    TASK_LOST: "on_task_lost",
}

#: Default share of a limit above which usage is worth a warning (the guide's 80 %).
DEFAULT_WARNING_SHARE = 0.8
#: At most one usage warning per bucket per this many seconds per process: the usage it
#: compares is the last minute's, so a warning a minute says all there is to say.
WARNING_EVERY_S = 60.0


def event_json(event: Event) -> dict[str, Any]:
    """The JSON form programs read (``pi-xi events --json``, the daemon's event stream)."""
    return {"eventId": event.event_id, "kind": event.kind, "instanceId": event.instance_id,
            "wallMs": event.wall_ms, "data": event.data}


def _target(bucket: str) -> dict[str, Any]:
    key = parse_key(bucket)
    return {"provider": key.provider, "model": key.model, "bucket": bucket}


def rate_limited(bucket: str, retry_after_s: float | None) -> dict[str, Any]:
    """A 429 answered a call counted on ``bucket`` (its most specific request bucket);
    ``retryAfterSeconds`` as the provider said it (None when it said nothing)."""
    return {**_target(bucket), "status": 429, "retryAfterSeconds": retry_after_s}


def cooldown_started(change: Adjustment, seconds: float, until_wall_ms: int) -> dict[str, Any]:
    """``change`` moved the end of a cooldown later: nobody is admitted for ``seconds``."""
    return {**_target(change.key), "seconds": round(seconds, 3), "untilWallMs": until_wall_ms,
            "reason": change.reason}


def cooldown_ended(bucket: str, reason: str) -> dict[str, Any]:
    """``reason``: ``"expired"`` (its end passed) or ``"reset"`` (``pi-xi limits reset``)."""
    return {**_target(bucket), "reason": reason}


def limit_learned(change: Adjustment, stated: int | None) -> dict[str, Any]:
    """Adaptive control moved ``change.key``'s rate; ``statedLimit``: what the provider's
    headers said, when they did (the reason then names them: the store's reason is that of
    the last rule applied, a 429 of the same answer for instance)."""
    reason = ("limit stated by the provider" if stated is not None
              and change.new_rate == float(stated) else change.reason)
    return {**_target(change.key), "oldRate": change.old_rate, "newRate": change.new_rate,
            "statedLimit": stated, "reason": reason}


def usage_warning(bucket: str, used: int, limit: int, threshold: float) -> dict[str, Any]:
    return {**_target(bucket), "used": used, "limit": limit,
            "share": round(used / limit, 4), "threshold": threshold}


class WarningGate:
    """Whether a grant's usage is worth a ``rate_limit_warning``: at or above ``share`` of the
    limit, and no warning for the same bucket in this process for ``every_s`` seconds (times
    are the caller's monotonic seconds). Thread-safe; the common case (usage below the share)
    takes no lock."""

    def __init__(self, share: float = DEFAULT_WARNING_SHARE,
                 every_s: float = WARNING_EVERY_S) -> None:
        self.share = share
        self.every_s = every_s
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def passes(self, bucket: str, used: int, limit: int, now_s: float) -> bool:
        if limit <= 0 or used < self.share * limit:
            return False
        with self._lock:
            last = self._last.get(bucket)
            if last is not None and now_s - last < self.every_s:
                return False
            self._last[bucket] = now_s
            return True
