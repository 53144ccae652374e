"""Waiting for a permit (or a lock): one loop, two drivers (threads and asyncio).

``AcquireLoop.steps()`` is a generator that yields what must happen next, a store call or a
sleep, and never does I/O itself; ``run_sync`` and ``run_async`` carry the steps out (a store
call that fails is thrown back into the steps, which may handle it: ``permit_flow``). So the
sync and async APIs share every decision: when to ask again, when a timeout is certain to be
missed (fail at once with the retry-after instead of sleeping into the failure), when to reap
dead holders, and leaving the queue on any exit (timeout, cancellation, error).

``Wake`` holds the process's slot waiters while they sleep: a release wakes the earliest of
them at once (and may hand one its permit to carry into its next question), and the doorbells
of ``handover`` bring the releases of other processes here; the poll is only a safety net.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, TypeVar

from cross_instance.core.records import Granted, PermitRequest, Waiting
from cross_instance.errors import Cancelled, NotRegisteredError, RateLimitExceeded, StoreError
from cross_instance.stores.base import Store

T_co = TypeVar("T_co", covariant=True)
T = TypeVar("T")
Submit = Callable[..., "concurrent.futures.Future[Any]"]  # fn, *args -> its outcome, later

SLOT_POLL_S = 0.004  # first poll for a freed slot; grows with the place in the queue
SLOT_POLL_MAX_S = 0.1
# When every release that can free the slot rings this waiter (``Wake``, ``handover``), the
# poll is only the safety net for a lost ring or a slot freed by other means (a dead holder
# reaped, a waiter ahead that left): longer, so that many waiters do not load the store.
SAFETY_POLL_S = 0.02
SAFETY_POLL_MAX_S = 1.0
REAP_EVERY_S = 0.25
CANCEL_POLL_S = 0.05


class Call(NamedTuple):
    """A store call to make: ``fn(*args)`` (a tuple: made on every permit, so it is cheap)."""

    fn: Callable[..., Any]
    args: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Sleep:
    """Wait ``seconds``; a slot waiter's sleep names its ``SlotWaiter`` and ends early when a
    release wakes it (``Wake``). ``then``: the store call the wait makes next; a driver may
    start it the moment the waiter is woken, from the thread that wakes it, and send its
    answer back in place of ``None`` (the asyncio driver does: the woken task's question is
    on its way before its event loop has run it)."""

    seconds: float
    waiter: SlotWaiter | None = None
    then: Call | None = None


class Loop(Protocol[T_co]):
    """A wait as steps: ``steps()`` yields store calls and sleeps and returns the grant;
    ``abandon()`` is the call that gives the caller's place back when the wait ends without
    one (timeout, cancellation, error), or None."""

    def steps(self) -> Generator[Call | Sleep, Any, T_co]:
        ...

    def abandon(self) -> Call | None:
        ...


class Waiters(Protocol):
    """This process's slot waiters (``slots.Slots``): ``wake`` registers a wait, ``acquire``
    asks the store carrying the releases handed to the waiter, ``rehome`` takes back releases
    (or grants) a wait did not carry."""

    wake: Wake

    def acquire(self, request: PermitRequest, ticket: int | None,
                waiter: SlotWaiter | None) -> Granted | Waiting:
        ...

    def rehome(self, ids: list[int]) -> None:
        ...


class AcquireLoop:
    """State of one wait: the queue ticket to give back if the wait ends without a grant.

    With ``wake``, a slot waiter registers there while it waits, so that releases wake it
    (and hand it their permits to carry); ``acquire(request, ticket, waiter)`` then asks the
    store carrying what was handed to ``waiter``, and ``give_back`` takes back permits handed
    to it that it did not carry (it was granted or gave up first). ``rung``: every release
    that can free the slot wakes this waiter, so the poll is only a safety net."""

    def __init__(self, store: Store, request: PermitRequest, timeout: float | None,
                 on_wait: Callable[[Waiting], None] | None = None,
                 refresh_s: float = 3.0, first: Waiting | None = None,
                 rung: bool = False, waiters: Waiters | None = None) -> None:
        self.store = store
        self.request = request
        self.deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        # the answer of an attempt already made (the first, or one made on waking)
        self.first: Granted | Waiting | None = first
        self.ticket: int | None = None if first is None else first.ticket
        self.on_wait = on_wait
        self.refresh_s = refresh_s
        self.rung = rung
        self.waiters = waiters
        self.wake = None if waiters is None else waiters.wake
        self.waiter: SlotWaiter | None = None
        self.waited = False

    def steps(self) -> Generator[Call | Sleep, Any, Granted]:
        last_reap = 0.0
        while True:
            if self.first is not None:
                result: Granted | Waiting = self.first
                self.first = None
            else:
                result = yield self._ask()
            if isinstance(result, Granted):
                self.ticket = None
                return result
            self.ticket = result.ticket
            if not self.waited and self.on_wait is not None:
                self.on_wait(result)
            self.waited = True
            rate_delay = max(0.0, (result.ready_ns - result.now_ns) / 1e9)
            remaining = float("inf") if self.deadline is None else self.deadline - time.monotonic()
            if rate_delay > remaining or remaining <= 0:
                raise RateLimitExceeded(
                    self.request.provider, self.request.model,
                    rate_delay if rate_delay > 0 else SLOT_POLL_S * (1 + result.ahead),
                    result.reason if remaining > 0 or rate_delay else "timed out " + result.reason)
            if result.slot_blocked:
                if self.wake is not None:
                    if self.waiter is None:
                        self.waiter = self.wake.enter(result.place)
                    self.waiter.place = result.place
                now = time.monotonic()
                if (self.wake.reap_due(now) if self.wake is not None
                        else now - last_reap >= REAP_EVERY_S):
                    last_reap = now
                    if (yield Call(self.store.reap, ())):
                        continue  # dead holders or waiters ahead were removed: ask again now
                first_s, max_s = ((SAFETY_POLL_S, SAFETY_POLL_MAX_S) if self.rung
                                  else (SLOT_POLL_S, SLOT_POLL_MAX_S))
                self.first = yield Sleep(
                    min(max_s, first_s * (1 + result.ahead), remaining, self.refresh_s),
                    self.waiter, self._ask())
            else:
                yield Sleep(min(rate_delay, remaining, self.refresh_s))

    def _ask(self) -> Call:
        """The store call of the next attempt: through this process's waiters (carrying the
        releases handed to this wait) or straight to the store."""
        if self.waiters is not None:
            return Call(self.waiters.acquire, (self.request, self.ticket, self.waiter))
        return Call(self.store.acquire, (self.request, self.ticket))

    def settle(self, answer: object) -> Call | None:
        """What a store call answered after this wait was cancelled (asyncio cannot stop the
        call): a grant nobody will hold is given back (the call to make, if any), and a place
        it took in the queue is left by ``abandon()``."""
        if isinstance(answer, Granted):
            self.ticket = None
            if self.waiters is not None:
                self.waiters.rehome([answer.permit_id])
                return None
            return Call(self.store.release, (self.request.instance_id, [answer.permit_id]))
        if isinstance(answer, Waiting):
            self.ticket = answer.ticket
        return None

    def abandon(self) -> Call | None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and self.wake is not None:
            left = self.wake.leave(waiter)
            if left and self.waiters is not None:
                self.waiters.rehome(left)
        ticket, self.ticket = self.ticket, None
        return None if ticket is None else Call(self.store.cancel_wait, (ticket,))


class Wake:
    """This process's slot waiters, woken when slots may have come free.

    ``wake(n)`` wakes the ``n`` waiters with the earliest places in the store's queue (one
    instance's waiters are served in queue order, so a freed slot can only go to them here),
    and ``hand(ids)`` gives a release to the earliest waiter to carry with its next question
    (released and, if it is next, granted in one store call). A waiter chosen while it is
    asking the store (its question may have left before the release) asks once more instead
    of sleeping; one
    chosen is not chosen again until it has asked, so ``n`` wake-ups in a row reach ``n``
    different waiters. ``on_change`` runs when this process starts or stops having slot
    waiters (its doorbell). Thread-safe; asyncio tasks wait here too (woken through their
    event loop)."""

    def __init__(self, on_change: Callable[[], None] | None = None) -> None:
        self._lock = threading.Lock()
        self._waiters: set[SlotWaiter] = set()
        self._on_change = on_change
        self.woken = 0  # sleeps ended (or skipped) by a release: counted for tests and benchmarks
        self.timed_out = 0  # sleeps that ran their full length (the safety poll)
        self._last_reap = -REAP_EVERY_S
        self.left_at = -float("inf")  # when a slot waiter last stopped waiting (monotonic)

    def reap_due(self, now: float) -> bool:
        """Whether a slot waiter of this process looks for dead holders now: one of them
        does, at most every ``REAP_EVERY_S`` (when each wait did so when it began, a process
        with many waiters spent a second store transaction on nearly every permit)."""
        with self._lock:
            if now - self._last_reap < REAP_EVERY_S:
                return False
            self._last_reap = now
            return True

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def enter(self, place: int) -> SlotWaiter:
        """Register a slot waiter. The first one of the process also asks once more before
        it sleeps: a release that rang nobody while this process was not yet shown as
        waiting is found then, not at the safety poll."""
        waiter = SlotWaiter(place)
        with self._lock:
            self._waiters.add(waiter)
            changed = len(self._waiters) == 1
            if changed:
                waiter.pending = 2
        if changed and self._on_change is not None:
            self._on_change()
        return waiter

    def leave(self, waiter: SlotWaiter) -> list[int]:
        """Forget ``waiter``; the releases handed to it that it did not carry."""
        self.left_at = time.monotonic()
        with self._lock:
            self._waiters.discard(waiter)
            left, waiter.carry = waiter.carry, []
            changed = not self._waiters
        if changed and self._on_change is not None:
            self._on_change()
        return left

    def wake(self, n: int = 1) -> int:
        """Wake the ``n`` earliest waiters not already woken; how many were chosen."""
        if not self._waiters:
            return 0
        with self._lock:
            free = [w for w in self._waiters if not w.pending]
            chosen = ([min(free, key=_by_place)] if n == 1 and free
                      else sorted(free, key=_by_place)[:n])
            wakers = [self._choose(w) for w in chosen]
        for waker in wakers:
            if waker is not None:
                waker()
        return len(chosen)

    def hand(self, ids: list[int]) -> bool:
        """Give releases to the earliest waiter not already woken (else the earliest woken
        one, which is about to ask) to carry; False when this process has no slot waiter."""
        if not self._waiters:
            return False
        with self._lock:
            if not self._waiters:
                return False
            free = [w for w in self._waiters if not w.pending]
            waiter = min(free or self._waiters, key=_by_place)
            waiter.carry.extend(ids)
            waker = self._choose(waiter) if not waiter.pending else None
        if waker is not None:
            waker()
        return True

    @staticmethod
    def _choose(waiter: SlotWaiter) -> Callable[[], None] | None:
        """Mark ``waiter`` woken (under the lock); what ends its sleep if it sleeps."""
        waker, waiter.waker = waiter.waker, None
        waiter.pending = 1 if waker is not None else 2  # asking now: ask once more
        return waker

    def take_carry(self, waiter: SlotWaiter | None) -> list[int]:
        """The releases handed to ``waiter``, now carried by its question."""
        if waiter is None or not waiter.carry:
            return []
        with self._lock:
            carry, waiter.carry = waiter.carry, []
        return carry

    def _fall_asleep(self, waiter: SlotWaiter, waker: Callable[[], None]) -> bool:
        """False when the waiter must ask again now instead."""
        with self._lock:
            if waiter.pending == 2 or waiter.carry:
                waiter.pending = 1
                self.woken += 1
                return False
            waiter.pending = 0
            waiter.waker = waker
            return True

    def _wake_up(self, waiter: SlotWaiter, signalled: bool) -> bool:
        """The sleep ended; whether a wake-up ended it (its waker was taken: what it started
        may be just behind)."""
        with self._lock:
            if waiter.waker is None:
                signalled = True
            waiter.waker = None
            if signalled:
                self.woken += 1
            else:
                self.timed_out += 1
        return signalled

    def sleep(self, waiter: SlotWaiter, seconds: float,
              cancel: threading.Event | None = None) -> None:
        """Sleep up to ``seconds`` in this thread, or until a release wakes ``waiter``."""
        event = threading.Event()
        if not self._fall_asleep(waiter, event.set):
            return
        signalled = False
        try:
            signalled = _cancellable(event.wait, seconds, cancel)
        finally:
            self._wake_up(waiter, signalled)

    async def asleep(self, waiter: SlotWaiter, seconds: float, then: Call | None = None,
                     submit: Submit | None = None,
                     call: Callable[..., Any] | None = None,
                     settle: Callable[[Any], Call | None] | None = None) -> Any:
        """Sleep up to ``seconds`` on the running event loop, or until a release. With
        ``then`` and ``submit``, a release that wakes ``waiter`` starts ``then`` at once
        (``submit`` runs it in the store's executor, from the waking thread) and its answer
        is returned; otherwise None. A cancellation that comes while that call is on its way
        waits for its answer and hands it to ``settle`` (the call it returns is made through
        ``call``), as ``answer`` does."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()

        def waker() -> None:
            try:
                if then is not None and submit is not None:
                    try:
                        started = submit(then.fn, *then.args)
                    except RuntimeError:  # the executor is shut down: just wake the task
                        loop.call_soon_threadsafe(_resolve, future, None)
                        return
                    started.add_done_callback(lambda done: _call_soon(loop, _copy, done, future))
                else:
                    loop.call_soon_threadsafe(_resolve, future, None)
            except RuntimeError:
                pass  # its loop is closed: nothing left to wake

        if not self._fall_asleep(waiter, waker):
            return None
        try:
            await asyncio.wait((future,), timeout=seconds)
        except asyncio.CancelledError:
            if self._wake_up(waiter, future.done()):
                await _undo(future, call, settle)  # a call may be on its way: undo it
            else:
                future.cancel()
            raise
        if not self._wake_up(waiter, future.done()):
            future.cancel()  # no waker can run any more: nothing was started
            return None
        # woken: the answer of the call started for it (or None) is there or on its way
        return await settled(future, call, settle)

class SlotWaiter:
    """One wait for a slot, as ``Wake`` sees it: its place in the queue, what ends its sleep
    while it sleeps, releases handed to it to carry, and whether a wake-up is still to be
    served by its next question (1: by the next one; 2: it was asking when woken, so by the
    one after)."""

    __slots__ = ("carry", "pending", "place", "waker")

    def __init__(self, place: int) -> None:
        self.place = place  # its place in the store's queue (Waiting.place)
        self.waker: Callable[[], None] | None = None
        self.pending = 0
        self.carry: list[int] = []


def _by_place(waiter: SlotWaiter) -> int:
    return waiter.place


def _resolve(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _copy(done: concurrent.futures.Future[Any], future: asyncio.Future[Any]) -> None:
    """Carry a store call's outcome from the executor onto the waiting task's loop."""
    if future.done():
        return
    error = done.exception()
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(done.result())


def _call_soon(loop: asyncio.AbstractEventLoop, fn: Callable[..., None], *args: Any) -> None:
    try:
        loop.call_soon_threadsafe(fn, *args)
    except RuntimeError:
        pass  # the loop is closed: nobody waits for the answer


def run_sync(loop: Loop[T], wake: Wake | None = None,
             cancel: threading.Event | None = None) -> T:
    """Drive ``loop`` in this thread. ``wake`` ends a slot waiter's sleep when a slot may have
    come free; ``cancel`` set by another thread ends the wait with ``Cancelled``."""
    gen = loop.steps()
    try:
        step = next(gen)
        while True:
            if isinstance(step, Call):
                try:
                    value = step.fn(*step.args)
                except Exception as err:  # noqa: BLE001 - the steps decide what it means
                    step = gen.throw(err)
                    continue
            else:
                if wake is not None and step.waiter is not None:
                    wake.sleep(step.waiter, step.seconds, cancel)
                else:
                    _sleep(step.seconds, cancel)
                value = None
            step = gen.send(value)
    except StopIteration as done:
        result: T = done.value
        return result
    finally:
        gen.close()
        leave = loop.abandon()
        if leave is not None:
            _leave(leave.fn, leave.args)


def _leave(fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    """Give a wait's place back after it ended without a grant. When the store does not
    answer this either, the wait's own ending (a timeout, Ctrl-C, the store's error) is what
    the caller sees, not this call's error: the store drops the place (or the grant) when
    its lease ends."""
    try:
        fn(*args)
    except StoreError:
        pass


def _sleep(seconds: float, cancel: threading.Event | None) -> None:
    _cancellable(_nap, seconds, cancel)


def _nap(seconds: float) -> bool:
    time.sleep(seconds)
    return False  # nothing wakes a plain sleep


def _cancellable(wait: Callable[[float], bool], seconds: float,
                 cancel: threading.Event | None) -> bool:
    """``wait`` (True when woken) for up to ``seconds`` in all, looking at ``cancel`` every
    ``CANCEL_POLL_S`` (``Cancelled`` when set): True when woken, False when the time ran out."""
    end = time.monotonic() + seconds
    while True:
        if cancel is not None and cancel.is_set():
            raise Cancelled("permit wait cancelled")
        left = end - time.monotonic()
        if left <= 0:
            return False
        if wait(min(left, CANCEL_POLL_S) if cancel is not None else left):
            return True


async def answer(call: Callable[..., Any], fn: Callable[..., Any], args: tuple[Any, ...],
                 settle: Callable[[Any], Call | None] | None) -> Any:
    """``await call(fn, *args)`` (a store call in an executor thread), without losing its
    answer to a cancellation (``settled``)."""
    return await settled(asyncio.ensure_future(call(fn, *args)), call, settle)


async def settled(future: asyncio.Future[Any], call: Callable[..., Any] | None,
                  settle: Callable[[Any], Call | None] | None) -> Any:
    """The answer of a store call already on its way (``future``). The thread that makes it
    cannot be stopped, so a cancelled caller waits for the answer, lets ``settle`` undo it
    (give a grant back; the call it returns is made too, through ``call``), and only then is
    cancelled. Store calls end within the socket timeout."""
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        await _undo(future, call, settle)
        raise


async def _undo(future: asyncio.Future[Any], call: Callable[..., Any] | None,
                settle: Callable[[Any], Call | None] | None) -> None:
    """For a caller that was cancelled: wait for ``future``'s answer (cancellations meanwhile
    change nothing) and let ``settle`` undo it."""
    while not future.done():
        try:
            await asyncio.shield(future)
        except asyncio.CancelledError:
            continue  # cancelled again: still wait for the answer
        except Exception:  # noqa: BLE001 - the call failed: nothing to undo
            break
    if settle is not None and not future.cancelled() and future.exception() is None:
        undo = settle(future.result())
        if undo is not None and call is not None:
            await answer(call, undo.fn, undo.args, None)


async def run_async(loop: Loop[T], call: Callable[..., Any], wake: Wake | None = None,
                    submit: Submit | None = None) -> T:
    """Drive ``loop`` on the event loop; store calls go through ``call`` (an executor);
    ``wake`` as in ``run_sync``; ``submit`` (the same executor, callable from any thread)
    lets a release start a woken waiter's next store call at once (``Sleep.then``). A
    cancellation that comes while a store call is on the way waits for its answer and hands
    it to the loop's ``settle`` (if it has one)."""
    gen = loop.steps()
    settle = getattr(loop, "settle", None)
    try:
        step = next(gen)
        while True:
            if isinstance(step, Call):
                try:
                    value = await answer(call, step.fn, step.args, settle)
                except Exception as err:  # noqa: BLE001 - the steps decide what it means
                    step = gen.throw(err)
                    continue
            elif wake is not None and step.waiter is not None:
                try:
                    value = await wake.asleep(step.waiter, step.seconds, step.then, submit,
                                              call, settle)
                except Exception as err:  # noqa: BLE001 - its question failed: as for a Call
                    step = gen.throw(err)
                    continue
            else:
                await asyncio.sleep(step.seconds)
                value = None
            step = gen.send(value)
    except StopIteration as done:
        result: T = done.value
        return result
    finally:
        gen.close()
        leave = loop.abandon()
        if leave is not None:
            # Leave the queue even when cancelled: shield the store call from the cancellation.
            try:
                left = call(_leave, leave.fn, leave.args)
            except NotRegisteredError:
                pass  # the runtime closed: its instance left, and its waits with it
            else:
                await asyncio.shield(left)
