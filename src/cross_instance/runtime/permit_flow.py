"""One permit, from the plan to the grant, as steps that either driver carries out.

``Runtime.permit`` (threads), ``Runtime.apermit`` (asyncio) and ``Runtime.try_permit`` (no
wait) used to spell the same path three times: the local share while the store is away,
publishing the plan's limits, the first attempt, a rejoin when the store has forgotten this
instance, the wait, and falling back to the local share when the store goes away midway.
``PermitFlow.steps()`` is that path once; ``acquire.run_sync`` and ``acquire.run_async`` drive
it (a store call that fails is thrown back into the steps, so the fallbacks are written here,
not in each driver). With ``wait=False`` it makes one attempt and never sleeps.

What is promised: the flow ends with the store's grant, ``LOCAL`` for a permit of the local
share, or (only without waiting) ``DENIED``; whatever wait it gives up (timeout, cancellation,
error) leaves the store's queue (``abandon``), and an answer that arrives after an asyncio
cancellation is settled (a grant given back, a queued wait left: ``settle``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any, Final, Literal

from cross_instance.core.records import Granted, Waiting
from cross_instance.errors import (
    BudgetExceeded,
    NotRegisteredError,
    RateLimitExceeded,
    StoreUnavailable,
)
from cross_instance.runtime.acquire import AcquireLoop, Call, Loop, Sleep
from cross_instance.runtime.degraded import LocalLoop

if TYPE_CHECKING:
    from cross_instance.core.keys import Plan
    from cross_instance.runtime import Runtime
    from cross_instance.runtime.degraded import LocalShare
    from cross_instance.runtime.slots import Slots
    from cross_instance.runtime.spending import Reservation, Spending
    from cross_instance.stores.base import Store


LOCAL: Final = "local"  # a permit of the local share (the store is away)
DENIED: Final = "denied"  # no permit now (``wait=False`` only)
Outcome = Granted | Literal["local", "denied"]
#: A call held back by a spend budget asks again this often (calls in flight hand back what
#: they reserved beyond their cost, which may make room before the period ends).
BUDGET_RECHECK_S = 60.0


class PermitFlow:
    """The steps of one ``permit``/``apermit``/``try_permit`` (see the module's docstring)."""

    def __init__(self, rt: Runtime, store: Store, slots: Slots, plan: Plan,
                 timeout: float | None, wait: bool = True) -> None:
        self.rt, self.store, self.slots, self.plan, self.timeout = rt, store, slots, plan, timeout
        self.wait = wait
        self._sub: Loop[Any] | None = None  # the wait running now (the queue's or the local)
        self._queued: int | None = None  # the ticket of a first answer not yet handed on
        self._first = False  # the first attempt's store call is on its way
        self.reservation: Reservation | None = None  # the spend budgets', for the permit

    def steps(self) -> Generator[Call | Sleep, Any, Outcome]:
        rt, plan = self.rt, self.plan
        local = rt._local
        if local is not None and local.active:  # until a heartbeat gets through
            return (yield from self._local(local))
        try:
            try:
                return (yield from self._attempt())
            except NotRegisteredError:
                yield Call(rt._rejoin, ())
                return (yield from self._attempt())
        except RateLimitExceeded as err:
            rt._log_denied(plan, err)
            yield from self._refund()
            raise
        except StoreUnavailable as err:
            return (yield from self._local(rt._degrade(err)))
        except BaseException:
            yield from self._refund()
            raise

    def _refund(self) -> Generator[Call | Sleep, Any, None]:
        reservation, self.reservation = self.reservation, None
        if reservation is not None and self.rt._spending is not None:
            try:
                yield Call(self.rt._spending.refund, (reservation,))
            except StoreUnavailable:
                pass

    def _reserve(self, spending: Spending) -> Generator[Call | Sleep, Any, None]:
        """Reserve the call's estimated cost against the spend budgets (priced as output
        tokens, an upper bound); held back by one, wait for its next period within the
        timeout (``onExceed: wait``), else ``BudgetExceeded``."""
        req = self.plan.request
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        while True:
            try:
                self.reservation = yield Call(spending.reserve, (
                    req.provider, req.model, 0, req.tokens, self.rt.instance_id))
                return
            except BudgetExceeded as err:
                if err.retry_after is None or not self.wait:
                    raise
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and err.retry_after > left:
                    raise
                yield Sleep(min(err.retry_after, BUDGET_RECHECK_S,
                                left if left is not None else BUDGET_RECHECK_S))

    def _local(self, local: LocalShare) -> Generator[Call | Sleep, Any, Outcome]:
        """A permit of the local share: taken now, or (waiting) once the share allows."""
        if not self.wait:
            return LOCAL if local.try_take(self.plan, time.monotonic_ns()) == 0 else DENIED
        yield from self._run(LocalLoop(local, self.plan, self.timeout))
        return LOCAL

    def _attempt(self) -> Generator[Call | Sleep, Any, Granted | Literal["denied"]]:
        rt, plan, store = self.rt, self.plan, self.store
        spending = rt._spending
        if (spending is not None and self.reservation is None
                and spending.applies(plan.request.provider)):
            yield from self._reserve(spending)
        if not rt._published_all(plan):  # once per request shape (again after a rejoin)
            yield Call(rt._publish, (plan,))
        slots = self.slots
        if not self.wait:
            taken = yield Call(slots.with_releases, (store.try_acquire, plan.request))
            if taken is None:
                yield from self._refund()
                return DENIED
            granted: Granted = taken
            return granted
        self._first = True
        first = yield Call(slots.with_releases, (store.acquire, plan.request, None))
        self._first = False
        if isinstance(first, Granted):  # the common case: granted at once
            return first
        self._queued = first.ticket
        rung = slots.rung() if slots.rung_known() else (yield Call(slots.rung, ()))
        loop = AcquireLoop(store, plan.request, self.timeout, rt._wait_logger(plan),
                           rt._refresh_s(), first, rung, slots)
        self._queued = None  # the loop leaves the queue from now on
        waited: Granted = yield from self._run(loop)
        return waited

    def _run(self, loop: Loop[Any]) -> Generator[Call | Sleep, Any, Any]:
        """``loop``'s steps, then what ends it (``abandon``: out of this process's waiters,
        and out of the store's queue if it failed: an unreachable store is not waited for,
        the wait goes stale and leaves the queue by itself). A driver that closes the flow
        midway calls the flow's ``abandon``, which reaches this loop's."""
        self._sub = loop
        try:
            result = yield from loop.steps()
        except GeneratorExit:
            raise
        except BaseException:
            self._sub = None
            yield from self._leave(loop)
            raise
        self._sub = None
        yield from self._leave(loop)
        return result

    @staticmethod
    def _leave(loop: Loop[Any]) -> Generator[Call | Sleep, Any, None]:
        leave = loop.abandon()
        if leave is not None:
            try:
                yield leave
            except StoreUnavailable:
                pass

    def abandon(self) -> Call | None:
        """The call that gives back the place of a wait that ends without a grant."""
        sub, self._sub = self._sub, None
        if sub is not None:
            return sub.abandon()
        ticket, self._queued = self._queued, None
        return None if ticket is None else Call(self.store.cancel_wait, (ticket,))

    def settle(self, answer: object) -> Call | None:
        """An answer that arrived after the asyncio task was cancelled (see ``run_async``)."""
        if self._sub is not None:
            settle: Callable[[object], Call | None] | None = getattr(self._sub, "settle", None)
            return None if settle is None else settle(answer)
        if self._first:
            if isinstance(answer, Granted):
                self.slots.rehome([answer.permit_id])
            elif isinstance(answer, Waiting):
                return Call(self.store.cancel_wait, (answer.ticket,))
        return None
