"""The facade an agent process uses: ``Runtime.start()``, permits, status, and the parts
``rt.locks``, ``rt.workflows``, ``rt.instances`` and ``rt.events``.

    with Runtime.start() as rt:
        with rt.permit("anthropic", model="claude-sonnet", tokens=1200):
            call_the_provider()
        with rt.locks.hold("repo:main", ttl=30):
            push()

The original coordinator's method names (``rt.claim_workflow``, ``rt.update_heartbeat`` ...)
are forwarded to the parts by :mod:`cross_instance.compat.seed`.

With ``enabled: false`` (or ``PI_CROSS_INSTANCE_ENABLED=false``) nothing is shared: permits
are granted at once and nothing is registered.
"""

from __future__ import annotations

import functools
import os
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cross_instance.coordination.events import Events
    from cross_instance.coordination.instances import Instances
    from cross_instance.coordination.locks import Locks
    from cross_instance.coordination.queue import Queue
    from cross_instance.coordination.workflows import Workflows
    from cross_instance.runtime.spending import Reservation, Spending

from cross_instance.config import Config, load_config
from cross_instance.config.rules import instance_id_problem
from cross_instance.core import events as ev
from cross_instance.core.arguments import (
    check_bool,
    check_cancel,
    check_name,
    check_report,
    check_seconds,
    show,
)
from cross_instance.core.ids import generate_instance_id
from cross_instance.core.keys import Plan, plan_request
from cross_instance.core.records import (
    Granted,
    InstanceRecord,
    PermitRequest,
    PermitState,
    Waiting,
)
from cross_instance.core.window import SlidingCount
from cross_instance.errors import (
    InvalidArgument,
    NotRegisteredError,
    PermitRequestError,
    RateLimitExceeded,
    StoreUnavailable,
)
from cross_instance.hostfacts import identity as hostinfo
from cross_instance.runtime.acquire import (
    run_async,
    run_sync,
)
from cross_instance.runtime.announcer import Announcer
from cross_instance.runtime.degraded import LocalShare
from cross_instance.runtime.feedback import Feedback
from cross_instance.runtime.logs import LineLog, log_path
from cross_instance.runtime.membership import Membership
from cross_instance.runtime.permit import Permit
from cross_instance.runtime.permit_flow import DENIED, Outcome, PermitFlow
from cross_instance.runtime.session import Session
from cross_instance.runtime.slots import Slots
from cross_instance.stores import open_store
from cross_instance.stores.base import Store


class Runtime:
    """One registered instance. Thread-safe; use ``start()`` rather than the constructor.

    ``locks``, ``workflows``, ``instances`` and ``events`` are its parts; each sees only the
    ``session`` (store, instance id, membership, thread pool), never the runtime."""

    def __init__(self, config: Config, store: Store | None, *, cwd: Path,
                 instance_id: str, session_id: str) -> None:
        self.config = config
        self.store = store
        self.cwd = cwd
        self.instance_id = instance_id
        self.session_id = session_id
        self.session = Session(store, instance_id)
        self.log = LineLog(log_path(cwd, "coordinator") if store is not None else None,
                           "coordinator")
        self.adaptive_log = LineLog(
            log_path(cwd, "adaptive-rate-controller") if store is not None else None,
            "adaptive-rate-controller")
        # with coordination disabled (no store) there are no slots and nothing to learn
        self._slots = Slots(store, self.session, self.log) if store is not None else None
        self._announcer = (Announcer(store, instance_id, self.log) if store is not None
                           else None)
        # spend budgets: only with a budget configured (else a permit makes no extra call)
        self._spending: Spending | None = None
        if store is not None and self._announcer is not None and config.budgets is not None:
            from cross_instance.runtime.spending import spending_for  # only with budgets

            self._spending = spending_for(store, config, self._announcer.emit, self.log)
        self._feedback = (Feedback(store, self.session, config.adaptive, self.adaptive_log,
                                   self._announcer, self._spending)
                          if store is not None else None)
        self._warnings = ev.WarningGate(config.rate_limit_warning_share)
        self._published: set[str] = set()
        self._usage: dict[str, SlidingCount] = {}
        self._plans: dict[tuple[str, str | None, int | None, bool], Plan] = {}
        self._local = (LocalShare(config.total_max_llm, config.runtime_dir, instance_id,
                                  self.log)
                       if config.when_store_down == "local-share" else None)

    @property
    def closed(self) -> bool:
        return self.session.closed

    # The parts load on first use: a process that only asks for permits never imports lock,
    # workflow or registry code (``benchmarks/bench_import.py``).
    @functools.cached_property
    def locks(self) -> Locks:
        """TTL locks with fencing tokens (``cross_instance.coordination.locks``)."""
        from cross_instance.coordination.locks import Locks

        return Locks(self.session)

    @functools.cached_property
    def workflows(self) -> Workflows:
        """Workflow ownership with epochs (``cross_instance.coordination.workflows``)."""
        from cross_instance.coordination.workflows import Workflows

        return Workflows(self.session)

    @functools.cached_property
    def queue(self) -> Queue:
        """The shared work queue with work stealing (``cross_instance.coordination.queue``)."""
        from cross_instance.coordination.queue import Queue

        return Queue(self.session, self.config.queue_settings())

    @functools.cached_property
    def instances(self) -> Instances:
        """The live instances and the parallel shares (``coordination.instances``)."""
        from cross_instance.coordination.instances import Instances

        return Instances(self.session, self.config.total_max_llm)

    @functools.cached_property
    def events(self) -> Events:
        """The shared event log: ``subscribe`` to it, read it (``coordination.events``)."""
        from cross_instance.coordination.events import Events

        return Events(self.session, self.log)

    @property
    def _membership(self) -> Membership | None:
        return self.session.membership

    if not TYPE_CHECKING:  # type checkers see the parts; ported code gets the old names
        def __getattr__(self, name: str) -> Any:
            from cross_instance.compat import seed as compat_names

            if name in compat_names.NAMES:
                return compat_names.resolve(self, name)
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # --- life cycle -----------------------------------------------------------------------
    @classmethod
    def start(cls, *, cwd: str | os.PathLike[str] | None = None, config: Config | None = None,
              store: Store | None = None, instance_id: str | None = None,
              session_id: str | None = None,
              clock: Callable[[], int] | None = None) -> Runtime:
        """Load config (``.pi/config.json`` + env), open the store, register, heartbeat.
        ``instance_id`` is checked as ``PI_INSTANCE_ID`` is (``InvalidArgument`` otherwise).

        ``clock`` (nanoseconds, for tests) replaces the clock of the store this call opens:
        the time every shared decision is made at (rate limits, leases, lock TTLs,
        cooldowns), so a test moves time by hand instead of sleeping. Not with ``store=``
        (give that store its own clock)."""
        _check_start_args(cwd, config, store, instance_id, session_id)
        if clock is not None and (store is not None or not callable(clock)):
            raise InvalidArgument(
                "clock must be a callable returning nanoseconds, and goes to the store "
                f"Runtime.start opens (not with store=; got {show(clock)})")
        where = Path(cwd if cwd is not None else os.getcwd()).absolute()
        cfg = config if config is not None else load_config(where)
        if instance_id is None and cfg.instance_id is not None:  # a Config built in code
            _check_start_args(None, None, None, cfg.instance_id, None)
        me = hostinfo.self_identity()
        iid = instance_id or cfg.instance_id or generate_instance_id(
            hostinfo.hostname(), me.pid, time.time_ns() // 1_000_000)
        if not cfg.enabled:
            return cls(cfg, None, cwd=where, instance_id=iid, session_id=session_id or "")
        if store is None:
            ttl = cfg.heartbeat_timeout_ms * 10**6
            timing: dict[str, Any] = {"waiter_ttl_ns": ttl}
            if clock is not None:
                timing["clock"] = clock
            if cfg.coordinator_addr:  # the daemon's store: timing is the daemon's own
                store = _open_coordinator(cfg.coordinator_addr, clock)
            elif cfg.store:
                store = open_store(cfg.store, **timing)
            else:  # imported here: Redis users never load the SQLite store's code
                from cross_instance.stores.sqlite.store import SqliteStore

                store = SqliteStore(cfg.runtime_dir, **timing)
        rt = cls(cfg, store, cwd=where, instance_id=iid,
                 session_id=session_id or secrets.token_hex(6))
        for warning in store.warnings:
            rt.log("Store warning: %s", warning)
        freed = rt._slots.freed if rt._slots is not None else None
        if freed is not None and freed.check() is not None:
            rt.log("Store warning: %s", freed.refused)
        policy = cfg.policy_for(iid)
        record = InstanceRecord(
            instance_id=iid, domain=me.domain, pid=me.pid, start_ticks=me.start_ticks,
            session_id=rt.session_id, cwd=str(where), started_wall_ms=time.time_ns() // 10**6,
            lease_ns=cfg.heartbeat_timeout_ms * 10**6, priority=policy.priority,
            reserved=policy.reserved_capacity)
        membership = Membership(store, record, cfg.heartbeat_interval_ms / 1000, rt.log,
                                rt._republish, rt._usage_snapshot,
                                rt._local_share_of if rt._local is not None else None,
                                rt._holding)
        rt.session.membership = membership
        try:
            membership.join()
        except BaseException:
            rt.log.close()
            raise
        return rt

    def close(self) -> None:
        """Unregister (freeing every permit still held) and stop the heartbeat. Idempotent."""
        if self.closed:
            return
        self.session.closed = True
        events: Events | None = self.__dict__.get("events")  # only if a caller used it
        if events is not None:
            events.close()
        if self._slots is not None:
            self._slots.close()
        if self._announcer is not None:
            self._announcer.close()  # what this instance announced, written before it leaves
        queue: Queue | None = self.__dict__.get("queue")
        if queue is not None:
            queue.close()  # its runs are lost: the instance leaves, the store hands them on
        if self._membership is not None:
            self._membership.leave()
        self.session.close()
        self.log.close()
        self.adaptive_log.close()
        if self.store is not None:
            self.store.close()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    async def __aenter__(self) -> Runtime:
        return self

    async def __aexit__(self, et: type[BaseException] | None, ev: BaseException | None,
                        tb: TracebackType | None) -> None:
        if not self.closed:  # (closed in the block already: nothing left to do)
            await self.session.call(self.close)

    # --- permits --------------------------------------------------------------------------
    def permit(self, provider: str, *, model: str | None = None, tokens: int | None = None,
               timeout: float | None = None, cancel: threading.Event | None = None,
               reports: bool = False) -> Permit:
        """Wait (first come, first served across processes) and return a held ``Permit``.

        ``timeout`` (s) raises ``RateLimitExceeded`` (with ``retry_after``) when it ends, or at
        once when the rate limit makes it certain to end first. Setting ``cancel`` ends the
        wait with ``Cancelled``. ``reports=True`` promises ``permit.report(...)`` (the
        integrations do): a bucket nobody has heard about yet then starts slowly, one call
        per interval, until the first answer says what the provider allows. Use the result
        as a context manager."""
        _check_wait_args(timeout, cancel, reports)
        flow = self._flow(provider, model, tokens, reports, timeout)
        if isinstance(flow, Permit):
            return flow
        started = time.monotonic()
        outcome = run_sync(flow, flow.slots.wake, cancel)
        return self._granted(flow.plan, outcome, time.monotonic() - started, flow.reservation)

    def try_permit(self, provider: str, *, model: str | None = None,
                   tokens: int | None = None, reports: bool = False) -> Permit | None:
        """A permit if one is free now (and nobody queued earlier needs it), else None.
        ``reports`` as for ``permit``."""
        check_bool("reports", reports, PermitRequestError)
        flow = self._flow(provider, model, tokens, reports, None, wait=False)
        if isinstance(flow, Permit):
            return flow
        outcome = run_sync(flow)
        if outcome == DENIED:
            self.log("Denied: instance %s, %s: no capacity free now", self.instance_id,
                     _target(flow.plan.request))
            return None
        return self._granted(flow.plan, outcome, 0.0, flow.reservation)

    def apermit(self, provider: str, *, model: str | None = None, tokens: int | None = None,
                timeout: float | None = None, reports: bool = False) -> _AsyncPermit:
        """``async with rt.apermit(...)``: the asyncio twin of ``permit`` (same wait loop);
        cancel the task to stop waiting. Also awaitable: ``p = await rt.apermit(...)``."""
        _check_wait_args(timeout, None, reports)
        return _AsyncPermit(self, provider, model, tokens, timeout, reports)

    async def _aacquire(self, provider: str, model: str | None, tokens: int | None,
                        timeout: float | None, reports: bool = False) -> Permit:
        flow = self._flow(provider, model, tokens, reports, timeout)
        if isinstance(flow, Permit):
            return flow
        started = time.monotonic()
        outcome = await run_async(flow, self.session.call, flow.slots.wake,
                                  self.session.submit)
        return self._granted(flow.plan, outcome, time.monotonic() - started, flow.reservation)

    def _flow(self, provider: str, model: str | None, tokens: int | None, reports: bool,
              timeout: float | None, wait: bool = True) -> PermitFlow | Permit:
        """The steps of one permit (for any driver), or at once the permit of a runtime with
        coordination disabled."""
        store = self.session.store_or_none()
        if store is None or self._slots is None:
            return Permit(provider, model, tokens or 0, 0, 0.0, None)
        plan = self._cached_plan(provider, model, tokens, reports)
        if wait:
            self._log_request(plan)
        return PermitFlow(self, store, self._slots, plan, timeout, wait)

    def _granted(self, plan: Plan, outcome: Outcome, waited: float,
                 spend: Reservation | None = None) -> Permit:
        """The permit a ``PermitFlow`` ended with: the store's grant, or the local share's."""
        if not isinstance(outcome, Granted):
            return self._local_permit(plan, waited)
        self._recovered()
        return self._permit(plan, outcome, waited, spend)

    # --- the shared store unreachable (see ``degraded``) ----------------------------------
    def _degrade(self, err: StoreUnavailable) -> LocalShare:
        """The local share when ``whenStoreDown`` allows it; otherwise fail closed."""
        if self._local is None:
            raise err
        self._local.enter(str(err))
        return self._local

    def _recovered(self) -> None:
        if self._local is not None and self._local.active:
            self._local.leave()

    def _local_share_of(self, live: int) -> None:
        """After each heartbeat that got through: the share to use if the store goes away,
        and the end of a degraded period."""
        if self._local is not None:
            self._local.share = max(1, live)
            self._recovered()

    def _local_permit(self, plan: Plan, waited: float) -> Permit:
        req = plan.request
        local = self._local
        assert local is not None
        self.log("Approved locally (store unavailable): %s, 1/%d share", _target(plan.request),
                 local.share)
        return Permit(req.provider, req.model, req.tokens, 0, waited, local)

    # --- internals ------------------------------------------------------------------------
    def _refresh_s(self) -> float:
        return self.config.heartbeat_timeout_ms / 3000

    def _cached_plan(self, provider: str, model: str | None, tokens: int | None,
                     reports: bool = False) -> Plan:
        key = (provider, model, tokens, reports)
        try:
            plan = self._plans.get(key)
        except TypeError:  # an unhashable argument: plan_request names it
            plan = None
        if plan is None:
            limits = self.config.resolve(provider, model)
            plan = plan_request(self.instance_id, limits, tokens, self.config.total_max_llm,
                                reports)
            if len(self._plans) < 4096:
                self._plans[key] = plan
        return plan

    def _published_all(self, plan: Plan) -> bool:
        return self._published.issuperset(plan.rates) and self._published.issuperset(plan.groups)

    def _publish(self, plan: Plan) -> None:
        """Declare the plan's limits to the store once (again after a rejoin)."""
        if self._published_all(plan):
            return
        assert self.store is not None
        self.store.publish_limits(self.instance_id, plan.rates, plan.groups)
        self._published.update(plan.rates, plan.groups)

    def _republish(self) -> None:
        """Declare again every limit this process published: the store forgot them (this
        instance was judged dead, or the store came back empty)."""
        published = set(self._published)
        self._published.clear()
        for plan in list(self._plans.values()):
            if published.intersection(plan.rates) or published.intersection(plan.groups):
                self._publish(plan)

    def _rejoin(self) -> None:
        if self._membership is None or self.closed:
            raise NotRegisteredError(f"runtime of instance {self.instance_id} is closed")
        self._membership.rejoin()  # its on_rejoin publishes this process's limits again

    def _permit(self, plan: Plan, granted: Granted, waited: float,
                spend: Reservation | None = None) -> Permit:
        self.log("Approved: %d/%d requests used", granted.usage, granted.limit)
        req = plan.request
        for key, cost in req.rates:
            counter = self._usage.get(key)
            if counter is None:
                counter = self._usage[key] = SlidingCount()
            counter.add(granted.granted_ns, cost)
        assert self._slots is not None
        self._slots.granted(granted, req)
        if self._warnings.passes(req.rates[0][0], granted.usage, granted.limit,
                                 time.monotonic()):
            self._warn(req, granted)
        return Permit(req.provider, req.model, req.tokens, granted.permit_id, waited,
                      self._slots, granted.granted_ns, self._feedback, req, spend)

    def _warn(self, req: PermitRequest, granted: Granted) -> None:
        """Usage of ``req``'s first bucket (the provider's requests, which a grant reports) is
        at or above ``rateLimitWarningShare``: announced, at most once a minute per bucket."""
        bucket = req.rates[0][0]
        self.log("Warning: %s at %d/%d requests (%d%%) in the last minute", _target(req),
                 granted.usage, granted.limit, 100 * granted.usage // granted.limit)
        if self._announcer is not None:
            self._announcer.emit(ev.RATE_LIMIT_WARNING, ev.usage_warning(
                bucket, granted.usage, granted.limit, self._warnings.share))

    def _holding(self) -> list[PermitState]:
        """The permits this process holds now, as the store knows them."""
        return [] if self._slots is None else self._slots.holding()

    def _usage_snapshot(self) -> dict[str, int]:
        """This instance's admissions per bucket over the last minute (sent with heartbeats)."""
        if self.store is None:
            return {}
        now = self.store.now_ns()
        return {key: c.value(now) for key, c in list(self._usage.items())}

    async def areport(self, permit: Permit, status: int | None = None, headers: Any = None,
                      usage_tokens: int | None = None, *, body: bytes | str | None = None,
                      error: BaseException | None = None) -> None:
        """``permit.report(...)`` without blocking the event loop."""
        if not isinstance(permit, Permit):
            raise PermitRequestError(
                f"permit must be a Permit of this runtime (got {show(permit)})")
        check_report(status, headers, body, error, usage_tokens, PermitRequestError)
        if self._feedback is not None:
            await self.session.call(self._feedback.report, permit, status, headers, body, error,
                                    usage_tokens)

    def _log_request(self, plan: Plan) -> None:
        self.log(_request_line(plan.request))  # formatted once per request shape

    def _log_denied(self, plan: Plan, err: RateLimitExceeded) -> None:
        self.log("Denied: instance %s, %s: %s, retry after %.3fs", self.instance_id,
                 _target(plan.request), err.reason, err.retry_after)

    def _wait_logger(self, plan: Plan) -> Callable[[Waiting], None]:
        def log_wait(waiting: Waiting) -> None:
            self.log("Waiting: instance %s, %s: %s (%d ahead), ready in %.3fs",
                     self.instance_id, _target(plan.request), waiting.reason, waiting.ahead,
                     max(0, waiting.ready_ns - waiting.now_ns) / 1e9)

        return log_wait

    # --- observation ----------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """What ``pi-xi status --json`` prints, plus this instance's own view."""
        if self._slots is not None:
            self._slots.flush()
        from cross_instance.views.status import build_status

        view: dict[str, Any] = (
            build_status(self.store, self.config) if self.store is not None
            else {"enabled": False, "instances": [], "providers": {}})
        view["instanceId"] = self.instance_id
        view["coordinatorConnected"] = self.store is not None and not self.closed
        mine = [i for i in view["instances"] if i["instanceId"] == self.instance_id]
        view["activeRequests"] = mine[0]["activeRequests"] if mine else 0
        return view


class _AsyncPermit:
    """Returned by ``apermit``: an async context manager, and awaitable for the permit."""

    def __init__(self, rt: Runtime, provider: str, model: str | None, tokens: int | None,
                 timeout: float | None, reports: bool = False) -> None:
        self._args = (provider, model, tokens, timeout, reports)
        self._rt = rt
        self._permit: Permit | None = None

    def __await__(self) -> Any:
        return self._rt._aacquire(*self._args).__await__()

    async def __aenter__(self) -> Permit:
        self._permit = await self._rt._aacquire(*self._args)
        return self._permit

    async def __aexit__(self, et: type[BaseException] | None, ev: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._permit is not None:
            await self._permit.arelease()


def _check_start_args(cwd: object, config: object, store: object, instance_id: object,
                      session_id: object) -> None:
    if cwd is not None and not isinstance(cwd, str | os.PathLike):
        raise InvalidArgument(f"cwd must be a path or None (got {show(cwd)})")
    if config is not None and not isinstance(config, Config):
        raise InvalidArgument(f"config must be a cross_instance.config.Config or None "
                              f"(got {show(config)})")
    if instance_id is not None:
        problem = (instance_id_problem(instance_id) if isinstance(instance_id, str)
                   else f"must be a string (got {show(instance_id)})")
        if problem is not None:
            raise InvalidArgument(f"instance_id: {problem}")
    if session_id is not None:
        check_name("session_id", session_id, limit=128)


def _check_wait_args(timeout: object, cancel: object, reports: object) -> None:
    check_seconds("timeout", timeout, PermitRequestError)
    check_cancel(cancel, PermitRequestError)
    check_bool("reports", reports, PermitRequestError)


def _open_coordinator(addr: str, clock: Callable[[], int] | None) -> Store:
    if clock is not None:
        raise InvalidArgument("clock= cannot go to a coordinator daemon (coordinatorAddr is "
                              "set): the daemon's store keeps the time")
    return open_store(f"http://{addr}")


def _target(req: PermitRequest) -> str:
    return req.provider if req.model is None else f"{req.provider}/{req.model}"


@functools.lru_cache(maxsize=1024)
def _request_line(req: PermitRequest) -> str:
    extra = f", {req.tokens} tokens" if req.tokens else ""
    return f"Instance {req.instance_id} requested 1 request ({_target(req)}{extra})"

