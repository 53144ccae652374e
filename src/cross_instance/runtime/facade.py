"""The facade an agent process uses: ``Runtime.start()``, permits, status, and the parts
``rt.locks``, ``rt.workflows`` and ``rt.instances``.

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
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from cross_instance.coordination.instances import Instances
    from cross_instance.coordination.locks import Locks
    from cross_instance.coordination.workflows import Workflows

from cross_instance.config import Config, load_config
from cross_instance.config.rules import instance_id_problem
from cross_instance.core.arguments import (
    check_bool,
    check_cancel,
    check_name,
    check_report,
    check_seconds,
    show,
)
from cross_instance.core.ids import generate_instance_id
from cross_instance.core.keys import Plan, is_tokens, plan_request
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
    SlotWaiter,
    Wake,
    run_async,
    run_sync,
)
from cross_instance.runtime.degraded import LocalShare
from cross_instance.runtime.feedback import Feedback, from_error
from cross_instance.runtime.handover import Doorbell, directory_for
from cross_instance.runtime.logs import LineLog, log_path
from cross_instance.runtime.membership import Membership
from cross_instance.runtime.permit import Permit
from cross_instance.runtime.permit_flow import PermitFlow
from cross_instance.runtime.releases import ReleaseQueue
from cross_instance.runtime.session import Session
from cross_instance.stores import open_store
from cross_instance.stores.base import FreedSlots, Store

T = TypeVar("T")
ONE_HOST_S = 5.0  # how long a runtime trusts "every instance runs on this host"
RECENT_WAIT_S = 1.0  # a process that waited this recently sends its releases at once (Redis)


class Runtime:
    """One registered instance. Thread-safe; use ``start()`` rather than the constructor.

    ``locks``, ``workflows`` and ``instances`` are its parts; each sees only the ``session``
    (store, instance id, membership, thread pool), never the runtime."""

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
        self._feedback = Feedback(
            store.record_outcome if store is not None else (lambda *args: []),
            config.adaptive, self.adaptive_log,
            store.now_ns if store is not None else (lambda: 0))
        self._published: set[str] = set()
        self._usage: dict[str, SlidingCount] = {}
        # permits granted by the store and not released: re-declared if the store restarts
        self._live_permits: dict[int, tuple[PermitRequest, int]] = {}
        self._plans: dict[tuple[str, str | None, int | None, bool], Plan] = {}
        self._wake = Wake(self._waiting_changed)
        self._doorbell = _open_doorbell(store, self._wake)
        # on Redis, freed slots announced to the waiters of every host (``stores.redis.freed``)
        self._freed: FreedSlots | None = (
            None if store is None
            else store.freed_channel(instance_id, self._wake.wake, self._wake.wake))
        self._one_host = (-ONE_HOST_S, False)  # (checked at, every instance on this host)
        self._releases = ReleaseQueue(self._send_releases, self._handed_over,
                                      self._release_failed)
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
    def instances(self) -> Instances:
        """The live instances and the parallel shares (``coordination.instances``)."""
        from cross_instance.coordination.instances import Instances

        return Instances(self.session, self.config.total_max_llm)

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
              session_id: str | None = None) -> Runtime:
        """Load config (``.pi/config.json`` + env), open the store, register, heartbeat.
        ``instance_id`` is checked as ``PI_INSTANCE_ID`` is (``InvalidArgument`` otherwise)."""
        _check_start_args(cwd, config, store, instance_id, session_id)
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
            if cfg.store:
                store = open_store(cfg.store, waiter_ttl_ns=ttl)
            else:  # imported here: Redis users never load the SQLite store's code
                from cross_instance.stores.sqlite.store import SqliteStore

                store = SqliteStore(cfg.runtime_dir, waiter_ttl_ns=ttl)
        rt = cls(cfg, store, cwd=where, instance_id=iid,
                 session_id=session_id or secrets.token_hex(6))
        for warning in store.warnings:
            rt.log("Store warning: %s", warning)
        if rt._freed is not None and rt._freed.check() is not None:
            rt.log("Store warning: %s", rt._freed.refused)
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
        self._releases.close()
        if self._doorbell is not None:
            self._doorbell.close()
        if self._freed is not None:
            self._freed.close()
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
        store = self._store_or_none()
        if store is None:
            return Permit(provider, model, tokens or 0, 0, 0.0, None)
        plan = self._cached_plan(provider, model, tokens, reports)
        started = time.monotonic()
        self._log_request(plan)
        granted = run_sync(PermitFlow(self, store, plan, timeout), self._wake, cancel)
        return self._granted(plan, granted, time.monotonic() - started)

    def try_permit(self, provider: str, *, model: str | None = None,
                   tokens: int | None = None, reports: bool = False) -> Permit | None:
        """A permit if one is free now (and nobody queued earlier needs it), else None.
        ``reports`` as for ``permit``."""
        check_bool("reports", reports, PermitRequestError)
        store = self._store_or_none()
        if store is None:
            return Permit(provider, model, tokens or 0, 0, 0.0, None)
        plan = self._cached_plan(provider, model, tokens, reports)
        if self._local is not None and self._local.active:  # until a heartbeat gets through
            return self._local_try(self._local, plan)
        try:
            self._publish(plan)
            granted = self._retry_unregistered(
                lambda: self._with_releases(store.try_acquire, plan.request))
        except StoreUnavailable as err:
            return self._local_try(self._degrade(err), plan)
        self._recovered()
        if granted is None:
            self.log("Denied: instance %s, %s: no capacity free now", self.instance_id,
                     _target(plan.request))
            return None
        return self._permit(plan, granted, 0.0)

    def apermit(self, provider: str, *, model: str | None = None, tokens: int | None = None,
                timeout: float | None = None, reports: bool = False) -> _AsyncPermit:
        """``async with rt.apermit(...)``: the asyncio twin of ``permit`` (same wait loop);
        cancel the task to stop waiting. Also awaitable: ``p = await rt.apermit(...)``."""
        _check_wait_args(timeout, None, reports)
        return _AsyncPermit(self, provider, model, tokens, timeout, reports)

    async def _aacquire(self, provider: str, model: str | None, tokens: int | None,
                        timeout: float | None, reports: bool = False) -> Permit:
        store = self._store_or_none()
        if store is None:
            return Permit(provider, model, tokens or 0, 0, 0.0, None)
        plan = self._cached_plan(provider, model, tokens, reports)
        started = time.monotonic()
        self._log_request(plan)
        granted = await run_async(PermitFlow(self, store, plan, timeout), self.session.call,
                                  self._wake, self.session.submit)
        return self._granted(plan, granted, time.monotonic() - started)

    def _granted(self, plan: Plan, granted: Granted | None, waited: float) -> Permit:
        """The permit a ``PermitFlow`` ended with: the store's grant, or (None) the local
        share's."""
        if granted is None:
            return self._local_permit(plan, waited)
        self._recovered()
        return self._permit(plan, granted, waited)

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

    def _local_try(self, local: LocalShare, plan: Plan) -> Permit | None:
        if local.try_take(plan, time.monotonic_ns()):
            return None
        return self._local_permit(plan, 0.0)

    def _local_permit(self, plan: Plan, waited: float) -> Permit:
        req = plan.request
        local = self._local
        assert local is not None
        self.log("Approved locally (store unavailable): %s, 1/%d share", _target(plan.request),
                 local.share)
        return Permit(req.provider, req.model, req.tokens, 0, waited,
                      lambda _id: local.release())

    # --- internals ------------------------------------------------------------------------
    def _store_or_none(self) -> Store | None:
        return self.session.store_or_none()

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

    def _retry_unregistered(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except NotRegisteredError:
            self._rejoin()
            return fn()

    def _rejoin(self) -> None:
        if self._membership is None or self.closed:
            raise NotRegisteredError(f"runtime of instance {self.instance_id} is closed")
        self._membership.rejoin()  # its on_rejoin publishes this process's limits again

    def _permit(self, plan: Plan, granted: Granted, waited: float) -> Permit:
        self.log("Approved: %d/%d requests used", granted.usage, granted.limit)
        req = plan.request
        for key, cost in req.rates:
            counter = self._usage.get(key)
            if counter is None:
                counter = self._usage[key] = SlidingCount()
            counter.add(granted.granted_ns, cost)
        self._live_permits[granted.permit_id] = (req, granted.granted_ns)
        return Permit(req.provider, req.model, req.tokens, granted.permit_id, waited,
                      self._release, self._arelease, granted.granted_ns, self._report, req)

    def _holding(self) -> list[PermitState]:
        """The permits this process holds now, as the store knows them."""
        return [PermitState(pid, self.instance_id, req.provider, req.model, req.tokens, ns)
                for pid, (req, ns) in list(self._live_permits.items())]

    def _usage_snapshot(self) -> dict[str, int]:
        """This instance's admissions per bucket over the last minute (sent with heartbeats)."""
        if self.store is None:
            return {}
        now = self.store.now_ns()
        return {key: c.value(now) for key, c in list(self._usage.items())}

    def _report(self, permit: Permit, status: int | None, headers: Any,
                body: bytes | str | None, error: BaseException | None,
                usage_tokens: int | None = None) -> None:
        req = permit.request
        if not isinstance(req, PermitRequest) or self.closed or self.store is None:
            return
        if usage_tokens is not None:
            changes = [(k, usage_tokens - cost) for k, cost in req.rates if is_tokens(k)]
            if changes:
                self.store.adjust_tokens(changes)
        if error is not None:
            status, headers, body = from_error(error)
        if not status:
            return  # no answer from the provider: nothing to learn
        self._feedback.report(req, permit.granted_ns, status, headers, body)

    async def areport(self, permit: Permit, status: int | None = None, headers: Any = None,
                      usage_tokens: int | None = None, *, body: bytes | str | None = None,
                      error: BaseException | None = None) -> None:
        """``permit.report(...)`` without blocking the event loop."""
        if not isinstance(permit, Permit):
            raise PermitRequestError(
                f"permit must be a Permit of this runtime (got {show(permit)})")
        check_report(status, headers, body, error, usage_tokens, PermitRequestError)
        await self.session.call(self._report, permit, status, headers, body, error, usage_tokens)

    def _with_releases(self, op: Callable[..., T], *args: Any, carry: Sequence[int] = ()) -> T:
        """Run a store operation carrying the releases queued since the last one (and those
        handed to the asking waiter). Slots they freed that this call did not take are handed
        on at once: to the waiters here and in the other waiting processes."""
        ids = [*carry, *self._releases.take()]
        try:
            result = op(*args, release=ids)
        except BaseException as err:
            self._releases.give_back(ids)
            undecided = getattr(err, "undecided_permit", None)
            if undecided is not None:  # granted perhaps, but nobody holds it: free it later
                self._releases.put(undecided)
            raise
        if ids:
            left = len(ids) - isinstance(result, Granted)
            if left:
                self._handed_over(left)
        return result

    def _loop_acquire(self, request: PermitRequest, ticket: int | None,
                      waiter: SlotWaiter | None) -> Granted | Waiting:
        """A waiter's question to the store, carrying the releases handed to it."""
        assert self.store is not None
        return self._with_releases(self.store.acquire, request, ticket,
                                   carry=self._wake.take_carry(waiter))

    def _send_releases(self, ids: Sequence[int]) -> None:
        assert self.store is not None
        self.store.release(self.instance_id, ids)

    def _release_failed(self, err: Exception) -> None:
        self.log("Releasing permits of %s failed (will retry): %s", self.instance_id, err)

    def _handed_over(self, n: int) -> None:
        """``n`` slots were freed in the store: wake as many waiters here and ring every
        other waiting process of this host (unless the store announced it to every host:
        ``_announced``)."""
        self._wake.wake(n)
        if self._doorbell is not None and not self._announced():
            self._doorbell.ring(n)

    def _announced(self) -> bool:
        """Whether the store announces freed slots to the waiters of every host itself."""
        return self._freed is not None and self._freed.refused is None

    def _waiting_changed(self) -> None:
        def waiting() -> bool:  # read under each one's lock
            return self._wake.waiting > 0

        if self._doorbell is not None:
            self._doorbell.set_waiting(waiting)
        if self._freed is not None:
            self._freed.set_waiting(waiting)

    def _others_wait(self) -> bool:
        """Whether a release should be sent now: a doorbell shows a waiter in another process
        of this host, or (Redis: waiters on other hosts have no doorbell here) the store's
        last answer about permits said somebody queues (``RedisStore.queued``), or this
        process itself waited in the last ``RECENT_WAIT_S``: the queue was not empty moments
        ago, and a waiter that queued after this process's grant is in no answer it got."""
        if self._doorbell is not None and self._doorbell.others_waiting():
            return True
        queued = None if self.store is None else self.store.queued
        if queued is None:
            return False
        return bool(queued) or time.monotonic() - self._wake.left_at < RECENT_WAIT_S

    def _rung(self) -> bool:
        """Whether every release that can free this process's slots rings its waiters, so
        that they poll only as a safety net: true where the store announces freed slots to
        every host (Redis, when the account may), or when every registered instance runs on
        this host, in this pid namespace (rechecked every few seconds: an instance on another
        host, or in another container, has no doorbell here)."""
        if self._announced():
            return True
        if self._doorbell is None or self.store is None:
            return False
        checked, here = self._one_host
        if time.monotonic() - checked > ONE_HOST_S:
            domain = hostinfo.local_domain()
            try:
                here = all(r.domain == domain for r in self.store.list_instances())
            except StoreUnavailable:
                here = False
            self._one_host = (time.monotonic(), here)
        return here

    def _rung_known(self) -> bool:
        """``_rung()`` needs no store call now."""
        return (self._doorbell is None or self._announced()
                or time.monotonic() - self._one_host[0] <= ONE_HOST_S)

    def _queue_release(self, permit_id: int) -> bool:
        """Hand the release to the earliest waiter here (its next question carries it: one
        store call releases and grants), else queue it; True when it must be sent now
        because another process waits (otherwise it travels with this process's next store
        call, group commit)."""
        self._live_permits.pop(permit_id, None)  # no longer re-declared after a store restart
        if self.closed:
            return False
        if self._wake.hand([permit_id]):
            return False
        send_now = self._others_wait()
        self._releases.put(permit_id, sent_now=send_now)
        return send_now

    def _rehome(self, ids: list[int]) -> None:
        """Releases handed to a waiter that stopped waiting before carrying them."""
        if self._wake.hand(ids):
            return
        urgent = self._others_wait()
        for i in ids:
            self._releases.put(i, urgent=urgent)

    def _release(self, permit_id: int) -> None:
        if self._queue_release(permit_id):
            self._releases.flush()

    async def _arelease(self, permit_id: int) -> None:
        if self._queue_release(permit_id):
            # Another process waits: send it now, in the store's executor, and return once it
            # is sent (a flusher thread raced this task's next store call, which then ran
            # first and held the release back by a whole decision).
            try:
                sent = self.session.call(self._releases.flush)
            except RuntimeError:  # the executor is shut down (closing): the flusher sends it
                self._releases.put_urgent()
                return
            await sent

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
        self._releases.flush()
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


def _open_doorbell(store: Store | None, wake: Wake) -> Doorbell | None:
    """This process's doorbell among the processes of ``store`` on this host."""
    return None if store is None else Doorbell(directory_for(store), wake.wake)


def _target(req: PermitRequest) -> str:
    return req.provider if req.model is None else f"{req.provider}/{req.model}"


@functools.lru_cache(maxsize=1024)
def _request_line(req: PermitRequest) -> str:
    extra = f", {req.tokens} tokens" if req.tokens else ""
    return f"Instance {req.instance_id} requested 1 request ({_target(req)}{extra})"
