"""What the daemon does for clients of the public API (agents in any language): it plans their
permits from the daemon's config, waits for them in the store's queue on the event loop, and
learns from the answers they report, exactly as ``Runtime`` does for a Python process.

Promises:
- A permit request waits first come, first served with every other waiter of the store (other
  HTTP clients, Python runtimes on this store, other daemons on the same Redis): the store's
  queue decides, the daemon only asks again when the store says, or at once when a release
  went through this daemon.
- A request sent again with the same request id is the same wait (its ticket is derived from
  the id), so even across a restart of the daemon it is granted once.
- A client that goes away (its connection closed, or its long-poll timed out) leaves the
  queue; its permits stay held until it releases them or its lease runs out.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cross_instance.config import Config
from cross_instance.core import events as ev
from cross_instance.core.keys import Plan, plan_request
from cross_instance.core.liveness import UNKNOWN_BOOT, Domain
from cross_instance.core.records import Granted, InstanceRecord, PermitRequest, Waiting
from cross_instance.daemon.metrics import metrics_for
from cross_instance.daemon.state import Daemon
from cross_instance.errors import NotRegisteredError, RateLimitExceeded
from cross_instance.runtime.feedback import Feedback
from cross_instance.runtime.permit import Permit
from cross_instance.runtime.session import Session
from cross_instance.runtime.spending import spending_for
from cross_instance.stores.permit_ids import new_ticket

if TYPE_CHECKING:
    from cross_instance.core.pricing import TokenUsage
    from cross_instance.runtime.spending import Reservation

MAX_WAIT_S = 300.0
POLL_S = 0.05  # a slot may be freed where this daemon cannot see it: ask again this often,
POLL_SHARERS = 5  # ... while at most this many wait (then each asks proportionally less)
WAKE_AHEAD = 4  # a release here wakes the waiters this near the head of the queue at once


class HostedSession(Session):
    """The ``Session`` of a client instance the daemon acts for: the parts of ``rt`` (locks,
    workflows) run on it unchanged. Its lease is the client's to keep (heartbeats over HTTP),
    so there is nothing to confirm here: the store refuses an instance it no longer knows."""

    def confirm_lease(self) -> None:
        return None


@dataclass(frozen=True, slots=True)
class Grant:
    request: PermitRequest
    granted_ns: int


def ticket_of(instance_id: str, request_id: str) -> int:
    """The wait ticket a request id stands for (62 bits, never 0), the same in every daemon."""
    digest = hashlib.blake2b(f"{instance_id}\x00{request_id}".encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") >> 2) + 1


class Hosted:
    """The daemon's permits for API clients: plans, published limits, grants, wake-ups."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self._plans: dict[tuple[str, str | None, int | None, bool], Plan] = {}
        self._instance_plans: dict[tuple[str, str, str | None, int | None, bool], Plan] = {}
        self._published: dict[str, set[str]] = {}  # instance id -> keys published for it
        self._grants: OrderedDict[int, Grant] = OrderedDict()
        self._freed = asyncio.Event()
        self._waiting = 0  # permit requests waiting in this daemon now
        self.metrics = metrics_for(daemon)  # the counters GET /metrics shows
        self.spending = spending_for(daemon.store, daemon.config, self._announce, daemon.log)
        self.feedback = Feedback(daemon.store, Session(daemon.store, "coordinator"),
                                 daemon.config.adaptive, daemon.log, daemon.announcer,
                                 self.spending)
        self.warnings = ev.WarningGate(daemon.config.rate_limit_warning_share)

    def _announce(self, kind: str, data: dict[str, Any], instance_id: str | None) -> None:
        """A budget event: announced, and counted in the metrics."""
        self.metrics.budget_event(kind, data)
        self.daemon.announcer.emit(kind, data, instance_id)

    def freed(self) -> None:
        """A slot was freed through this daemon: every long-poll asks again now."""
        self._freed.set()
        self._freed = asyncio.Event()

    def plan(self, instance_id: str, provider: str, model: str | None, tokens: int | None,
             reports: bool = False) -> Plan:
        mine = self._instance_plans.get((instance_id, provider, model, tokens, reports))
        if mine is not None:
            return mine
        cfg = self.daemon.config
        key = (provider, model, tokens, reports)
        base = self._plans.get(key)
        if base is None:
            base = plan_request("-", cfg.resolve(provider, model), tokens, cfg.total_max_llm,
                                reports)
            if len(self._plans) < 4096:
                self._plans[key] = base
        req = base.request
        request = PermitRequest(instance_id, req.provider, req.model, req.rates, req.slots,
                                req.tokens, req.reports)
        plan = Plan(request, base.rates, base.groups)
        if len(self._instance_plans) >= 4096:
            self._instance_plans.clear()  # cheaper than an LRU, and rare
        self._instance_plans[(instance_id, provider, model, tokens, reports)] = plan
        return plan

    def forget(self, instance_id: str) -> None:
        self._published.pop(instance_id, None)

    async def _publish(self, plan: Plan) -> None:
        iid = plan.request.instance_id
        done = self._published.setdefault(iid, set())
        if done.issuperset(plan.rates) and done.issuperset(plan.groups):
            return
        await self.daemon.call(self.daemon.store.publish_limits, iid, plan.rates, plan.groups)
        done.update(plan.rates)
        done.update(plan.groups)

    async def acquire(self, plan: Plan, timeout_s: float, request_id: str | None,
                      release: list[int]) -> tuple[Granted, float]:
        """Wait for the permit (at most ``timeout_s``): the grant and the seconds waited, or
        ``RateLimitExceeded`` with the store's estimate of when it could be had."""
        store, req = self.daemon.store, plan.request
        await self._publish(plan)
        ticket = (ticket_of(req.instance_id, request_id) if request_id is not None
                  else new_ticket())
        started = time.monotonic()
        deadline = started + min(timeout_s, MAX_WAIT_S)
        queued = False
        self.metrics.wait_began(req.provider, req.model)
        self._waiting += 1
        try:
            while True:
                freed = self._freed
                answer = await self.daemon.call(store.acquire, req, ticket, release)
                if release:
                    release = []
                    self.freed()
                if isinstance(answer, Granted):
                    queued = False
                    waited = time.monotonic() - started
                    self._remember(answer.permit_id, Grant(req, answer.granted_ns))
                    self._warn(req, answer)
                    self.metrics.permit_granted(req.provider, req.model, waited)
                    return answer, waited
                queued = True
                left = deadline - time.monotonic()
                wait_s = _wait_s(answer)
                if left <= 0 or (not answer.slot_blocked and wait_s > left):
                    raise RateLimitExceeded(req.provider, req.model, max(wait_s, 0.0),
                                            answer.reason)
                # ask again at least every third of the waiter TTL, or the queue forgets us
                pause = min(left, self.daemon.config.heartbeat_timeout_ms / 3000)
                if answer.slot_blocked:
                    # a slot freed elsewhere is found by asking again (the rate tokens are
                    # there: ready_ns says nothing of slots), each waiter less often when many
                    # wait, so the store's load stays about the same
                    pause = min(pause, POLL_S * max(1.0, self._waiting / POLL_SHARERS))
                    if answer.ahead > WAKE_AHEAD:
                        await asyncio.sleep(pause)  # a release here cannot be ours yet
                        continue
                else:
                    pause = min(pause, wait_s)
                try:
                    await asyncio.wait_for(freed.wait(), pause)
                except TimeoutError:
                    pass
        except NotRegisteredError:
            self.forget(req.instance_id)
            raise
        finally:
            self._waiting -= 1
            self.metrics.wait_ended(req.provider, req.model)
            if queued:  # the caller left (timeout, disconnect): give its place back
                await self.daemon.call(store.cancel_wait, ticket)

    def _warn(self, req: PermitRequest, granted: Granted) -> None:
        """A usage warning (``rateLimitWarningShare``) for the client's instance, as a
        runtime announces its own: at most once a minute per bucket for this daemon."""
        bucket = req.rates[0][0]
        if self.warnings.passes(bucket, granted.usage, granted.limit, time.monotonic()):
            self.daemon.announcer.emit(ev.RATE_LIMIT_WARNING, ev.usage_warning(
                bucket, granted.usage, granted.limit, self.warnings.share), req.instance_id)

    async def release(self, instance_id: str, permit_ids: list[int]) -> int:
        count = await self.daemon.call(self.daemon.store.release, instance_id, permit_ids)
        self.freed()
        return count

    def _remember(self, permit_id: int, grant: Grant) -> None:
        self._grants[permit_id] = grant
        if len(self._grants) > 100_000:
            self._grants.popitem(last=False)

    async def report(self, instance_id: str, permit_id: int, status: int | None,
                     headers: dict[str, str] | None, usage_tokens: int | None,
                     body: str | None, detail: TokenUsage | None = None,
                     spend: Reservation | None = None) -> bool:
        """Learn from a permit's answer; False when the permit is not known to this daemon
        (granted by another one, or before a restart, and released since). ``detail``: the
        usage by kind and ``spend`` the budgets' reservation (the gateway knows both)."""
        grant = self._grants.get(permit_id)
        if grant is None:
            grant = await self._recall(permit_id)
            if grant is None:
                return False
        if grant.request.instance_id != instance_id:
            return False
        permit = Permit(grant.request.provider, grant.request.model, grant.request.tokens,
                        permit_id, 0.0, None, grant.granted_ns, self.feedback, grant.request,
                        spend)
        await self.daemon.call(self.feedback.report, permit, status, headers, body, None,
                               usage_tokens, detail)
        if status == 429:
            self.metrics.rate_limited(grant.request.provider, grant.request.model)
        return True

    async def _recall(self, permit_id: int) -> Grant | None:
        """A permit this daemon did not grant (or forgot), from the store's snapshot."""
        snap = await self.daemon.run(self.daemon.store.snapshot)
        for p in snap.permits:
            if p.permit_id == permit_id:
                plan = self.plan(p.instance_id, p.provider, p.model, p.tokens or None)
                return Grant(plan.request, p.granted_ns)
        return None


def http_instance(config: Config, instance_id: str, client: str, lease_ms: int, *,
                  host: str | None = None, pid: int = 0, session_id: str = "",
                  cwd: str = "") -> InstanceRecord:
    """The record of an instance the daemon registers for a client over HTTP (the API's
    register, the gateway's first request): judged by its lease alone, with the config's
    policy for its id."""
    policy = config.policy_for(instance_id)
    return InstanceRecord(
        instance_id=instance_id, domain=Domain(host or client, UNKNOWN_BOOT, f"http:{client}"),
        pid=pid, start_ticks=0, session_id=session_id, cwd=cwd,
        started_wall_ms=time.time_ns() // 10**6, lease_ns=lease_ms * 10**6,
        priority=policy.priority, reserved=policy.reserved_capacity)


def hosted_of(daemon: Daemon) -> Hosted:
    """The daemon's one ``Hosted`` (made on first use, on the event loop)."""
    hosted: Hosted | None = getattr(daemon, "_pi_xi_hosted", None)
    if hosted is None:
        hosted = Hosted(daemon)
        daemon._pi_xi_hosted = hosted  # type: ignore[attr-defined]
    return hosted


def _wait_s(answer: Waiting) -> float:
    return max(0.0, (answer.ready_ns - answer.now_ns) / 1e9)


def grant_json(granted: Granted, plan: Plan, waited_s: float) -> dict[str, Any]:
    req = plan.request
    return {"permitId": granted.permit_id, "instanceId": req.instance_id,
            "provider": req.provider, "model": req.model, "tokens": req.tokens,
            "usage": granted.usage, "limit": granted.limit,
            "waitedMs": round(waited_s * 1000, 3)}
