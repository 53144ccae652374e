"""The opt-in fallback while the shared store is unreachable: a conservative local share.

Why opt-in: without the store no process can know what the others take, so the default is to
fail closed. A team that prefers slow progress to none sets ``whenStoreDown: "local-share"``:
each process then limits itself to 1/N of every limit and of the concurrency cap, N being the
number of live instances it last saw, so together they stay within the account's limits. It is
never silent: the switch and the return are logged, the runtime's status says so, and a marker
file in the state directory lets ``pi-xi status`` on this host name the degraded instances.
Permits taken locally are released locally; the shared store does not learn of them.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

from cross_instance.core import limiter
from cross_instance.core.keys import Plan
from cross_instance.core.limiter import RateSpec
from cross_instance.errors import RateLimitExceeded
from cross_instance.runtime.acquire import Call, Sleep

POLL_MAX_S = 0.05
MARKER_GLOB = "degraded-*.json"


class LocalShare:
    """Process-local limits: 1/``share`` of each bucket and of the global slots."""

    def __init__(self, total: int, state_dir: Path, instance_id: str,
                 log: Callable[..., None]) -> None:
        self.total, self.state_dir, self.instance_id, self.log = total, state_dir, instance_id, log
        self.share = 1
        self.active = False
        self.reason = ""
        self.since_wall_ms = 0
        self._tats: dict[str, int] = {}
        self._in_use = 0
        self._lock = threading.Lock()

    @property
    def marker(self) -> Path:
        return self.state_dir / f"degraded-{self.instance_id}.json"

    def enter(self, reason: str) -> None:
        with self._lock:
            if self.active:
                return
            self.active, self.reason = True, reason
            self.since_wall_ms = time.time_ns() // 1_000_000
        self.log("Store unavailable (%s): degraded to a local share, 1/%d of every limit, "
                 "until it is back", reason, self.share)
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            self.marker.write_text(json.dumps(self.view()))
        except OSError:
            pass  # the log line is the announcement that always works

    def leave(self) -> None:
        with self._lock:
            if not self.active:
                return
            self.active = False
        self.log("Store is back: shared limits again (instance %s)", self.instance_id)
        try:
            os.unlink(self.marker)
        except OSError:
            pass

    def view(self) -> dict[str, Any]:
        return {"instanceId": self.instance_id, "pid": os.getpid(), "share": self.share,
                "reason": self.reason, "sinceWallMs": self.since_wall_ms,
                "slots": max(1, self.total // self.share)}

    def _spec(self, spec: RateSpec) -> RateSpec:
        return spec.with_rate(max(1, spec.per_minute // self.share),
                              max(1, spec.burst // self.share))

    def try_take(self, plan: Plan, now: int) -> int:
        """0 when the permit was taken, else ns until the tokens could be had (or a poll
        interval when a slot is the obstacle)."""
        with self._lock:
            if self._in_use >= max(1, self.total // self.share):
                return int(POLL_MAX_S * 1e9)
            wait = 0
            costs = []
            for key, cost in plan.request.rates:
                spec = self._spec(plan.rates[key])
                cost = min(cost, spec.burst)
                tat = self._tats.get(key, 0)
                if not limiter.admits(tat, now, spec, cost):
                    wait = max(wait, limiter.ready_at(tat, now, spec, cost) - now)
                costs.append((key, spec, cost, tat))
            if wait:
                return max(1, wait)
            for key, spec, cost, tat in costs:
                self._tats[key] = limiter.consume(tat, now, spec, cost)
            self._in_use += 1
            return 0

    def release(self, permit_id: int = 0) -> None:
        """A local permit's slot back (local permits have no id: ``permit_id`` is 0)."""
        with self._lock:
            self._in_use = max(0, self._in_use - 1)

    async def arelease(self, permit_id: int = 0) -> None:
        self.release(permit_id)


class LocalLoop:
    """A wait for a local permit, as steps for the shared drivers of ``acquire``."""

    def __init__(self, local: LocalShare, plan: Plan, timeout: float | None) -> None:
        self.local, self.plan = local, plan
        self.deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)

    def steps(self) -> Generator[Call | Sleep, Any, None]:
        while True:
            wait_ns = self.local.try_take(self.plan, time.monotonic_ns())
            if wait_ns == 0:
                return
            remaining = (float("inf") if self.deadline is None
                         else self.deadline - time.monotonic())
            if remaining <= 0 or wait_ns / 1e9 > remaining:
                req = self.plan.request
                raise RateLimitExceeded(req.provider, req.model, wait_ns / 1e9,
                                        "the store is unavailable and this instance's local "
                                        "share is used up")
            yield Sleep(min(wait_ns / 1e9, POLL_MAX_S, remaining))

    def abandon(self) -> Call | None:
        return None


def degraded_instances(state_dir: Path) -> list[dict[str, Any]]:
    """What this host's degraded instances announced (for ``pi-xi status``)."""
    out = []
    for path in sorted(state_dir.glob(MARKER_GLOB)):
        try:
            out.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return out
