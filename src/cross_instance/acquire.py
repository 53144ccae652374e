"""Waiting for a permit (or a lock): one loop, two drivers (threads and asyncio).

``AcquireLoop.steps()`` is a generator that yields what must happen next, a store call or a
sleep, and never does I/O itself; ``run_sync`` and ``run_async`` carry the steps out. So the
sync and async APIs share every decision: when to ask again, when a timeout is certain to be
missed (fail at once with the retry-after instead of sleeping into the failure), when to reap
dead holders, and leaving the queue on any exit (timeout, cancellation, error).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

T_co = TypeVar("T_co", covariant=True)
T = TypeVar("T")

from cross_instance.core.records import Granted, PermitRequest, Waiting
from cross_instance.errors import RateLimitExceeded
from cross_instance.stores.base import Store

SLOT_POLL_S = 0.004  # first poll for a freed slot; grows with the place in the queue
SLOT_POLL_MAX_S = 0.1
REAP_EVERY_S = 0.25
CANCEL_POLL_S = 0.05


@dataclass(frozen=True, slots=True)
class Call:
    fn: Callable[..., Any]
    args: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Sleep:
    seconds: float


class Cancelled(Exception):
    """The caller's cancel event was set while waiting."""


class Loop(Protocol[T_co]):
    """A wait as steps: ``steps()`` yields store calls and sleeps and returns the grant;
    ``abandon()`` is the call that gives the caller's place back when the wait ends without
    one (timeout, cancellation, error), or None."""

    def steps(self) -> Generator[Call | Sleep, Any, T_co]:
        ...

    def abandon(self) -> Call | None:
        ...


class AcquireLoop:
    """State of one wait: the queue ticket to give back if the wait ends without a grant."""

    def __init__(self, store: Store, request: PermitRequest, timeout: float | None,
                 on_wait: Callable[[Waiting], None] | None = None,
                 refresh_s: float = 3.0, first: Waiting | None = None) -> None:
        self.store = store
        self.request = request
        self.deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        self.first = first  # the answer of an attempt already made (and its queue ticket)
        self.ticket: int | None = None if first is None else first.ticket
        self.on_wait = on_wait
        self.refresh_s = refresh_s
        self.waited = False

    def steps(self) -> Generator[Call | Sleep, Any, Granted]:
        last_reap = 0.0
        while True:
            if self.first is not None:
                result: Granted | Waiting = self.first
                self.first = None
            else:
                result = yield Call(self.store.acquire, (self.request, self.ticket))
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
                now = time.monotonic()
                if now - last_reap >= REAP_EVERY_S:
                    last_reap = now
                    yield Call(self.store.reap, ())
                delay = min(SLOT_POLL_MAX_S, SLOT_POLL_S * (1 + result.ahead))
            else:
                delay = rate_delay
            yield Sleep(min(delay, remaining, self.refresh_s))

    def abandon(self) -> Call | None:
        ticket, self.ticket = self.ticket, None
        return None if ticket is None else Call(self.store.cancel_wait, (ticket,))


class Wake:
    """Wakes the acquirers of this process that sleep in ``run_sync`` when a permit is
    released here (their next attempt carries the release). A release with nobody asleep
    costs one attribute read; a waiter that misses a wake-up while falling asleep is bounded
    by its own sleep, as with any condition variable."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._asleep = 0

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True if woken by a release."""
        with self._cond:
            self._asleep += 1
            try:
                return self._cond.wait(seconds)
            finally:
                self._asleep -= 1

    def notify(self) -> None:
        if self._asleep:
            with self._cond:
                self._cond.notify_all()


def run_sync(loop: Loop[T], wake: Wake | None = None,
             cancel: threading.Event | None = None) -> T:
    """Drive ``loop`` in this thread. ``wake`` is notified when a permit is released in this
    process; ``cancel`` set by another thread ends the wait with ``Cancelled``."""
    gen = loop.steps()
    try:
        step = next(gen)
        while True:
            if isinstance(step, Call):
                value = step.fn(*step.args)
            else:
                _sleep(step.seconds, wake, cancel)
                value = None
            step = gen.send(value)
    except StopIteration as done:
        result: T = done.value
        return result
    finally:
        gen.close()
        leave = loop.abandon()
        if leave is not None:
            leave.fn(*leave.args)


def _sleep(seconds: float, wake: Wake | None, cancel: threading.Event | None) -> None:
    end = time.monotonic() + seconds
    while True:
        if cancel is not None and cancel.is_set():
            raise Cancelled("permit wait cancelled")
        left = end - time.monotonic()
        if left <= 0:
            return
        chunk = min(left, CANCEL_POLL_S) if cancel is not None else left
        if wake is not None:
            if wake.wait(chunk):
                return  # a permit was released here: ask again now
        else:
            time.sleep(chunk)


async def run_async(loop: Loop[T], call: Callable[..., Any]) -> T:
    """Drive ``loop`` on the event loop; store calls go through ``call`` (an executor)."""
    gen = loop.steps()
    try:
        step = next(gen)
        while True:
            if isinstance(step, Call):
                value = await call(step.fn, *step.args)
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
            await asyncio.shield(call(leave.fn, *leave.args))
