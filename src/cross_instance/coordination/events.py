"""``rt.events``: the store's shared event log, followed and read (the coordinator events of
the user guide: ``subscribe_coordinator_events``).

    with rt.events.subscribe(on_rate_limit_warning=warn, on_instance_disconnected=page):
        run_the_agent()

Every instance of the store writes to one bounded log (instances connected and disconnected,
usage warnings, 429s, cooldowns, learned limits, workflow claims, lost locks; the kinds and
their data are in ``core.events`` and ``docs/events.md``), so a subscriber in one process sees
what happened in all of them.

Promises:

- a subscription reads the log on a daemon thread of its own, every ``poll`` seconds while
  nothing is new, and calls its callbacks on that thread, in the log's order, each event once.
  A slow or raising callback delays only its own subscription: permits never read the log,
  and other subscriptions have threads of their own. An exception from a callback is written
  to the coordinator log and counted (``statistics()``); delivery goes on with the next event.
- by default a subscription starts after the newest event at the time of the call (nothing
  that happened before it, everything after it); ``after_id=0`` starts from the oldest kept.
- the store keeps the newest 10,000 events or so: a subscriber that falls further behind than
  that misses the ones trimmed meanwhile.
- ``close()`` (or leaving the ``with`` block, or closing the runtime) starts no callback after
  it returns; a callback running then finishes on its own thread.
- ``afollow()`` is the asyncio form: the same cursor, read through the runtime's store threads.
"""

from __future__ import annotations

import asyncio
import builtins
import collections
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

from cross_instance.core.arguments import check_int, check_seconds, show
from cross_instance.core.events import CALLBACKS
from cross_instance.core.records import Event
from cross_instance.errors import InvalidArgument

if TYPE_CHECKING:
    from cross_instance.runtime.session import Session
    from cross_instance.stores.base import Store

Callback = Callable[[Event], object]
POLL_S = 0.2  # how often a subscription looks for new events while there are none
PAGE = 100  # events read per store call while following
_SCAN_PAGE = 1000  # events read per store call while looking for the newest


def last_events(store: Store, count: int) -> list[Event]:
    """The newest ``count`` events of ``store`` (oldest first). The protocol reads forward
    only, so this pages through the bounded log once (at most about 10,000 events)."""
    tail: collections.deque[Event] = collections.deque(maxlen=max(1, count))
    after = 0
    while page := store.events(after, _SCAN_PAGE):  # until empty: a store may cap the limit
        tail.extend(page)
        after = page[-1].event_id
    return list(tail) if count > 0 else []


def newest_id(store: Store) -> int:
    """The id of the newest event (0 when there is none): a cursor there sees what follows."""
    newest = last_events(store, 1)
    return newest[-1].event_id if newest else 0


class Cursor:
    """A position in the log, moved by each read: what the thread of a subscription, the
    asyncio iterator and ``pi-xi events --follow`` all follow the log with."""

    def __init__(self, store: Store, after_id: int, page: int = PAGE) -> None:
        self.store = store
        self.after_id = after_id
        self.page = page

    def fetch(self) -> list[Event]:
        """The events after the position (at most ``page``), the position moved past them."""
        events = self.store.events(self.after_id, self.page)
        if events:
            self.after_id = events[-1].event_id
        return events

    def caught_up(self, events: list[Event]) -> bool:
        """Whether the read that gave ``events`` reached the end of the log."""
        return len(events) < self.page


class Subscription:
    """Callbacks following the log on a thread of their own (see the module's promises).
    A context manager; ``close()`` is idempotent."""

    def __init__(self, session: Session, cursor: Cursor, handlers: Mapping[str, Callback],
                 on_event: Callback | None, poll: float, log: Callable[..., None]) -> None:
        self._session = session
        self._cursor = cursor
        self._handlers = dict(handlers)
        self._on_event = on_event
        self._poll = poll
        self._log = log
        self._stop = threading.Event()
        self.delivered = 0  # events handed to the callbacks
        self.errors = 0  # callbacks that raised
        self._thread = threading.Thread(target=self._run, name="pi-xi-subscription",
                                        daemon=True)
        self._thread.start()

    @property
    def last_event_id(self) -> int:
        """The id of the last event read (delivered, or being delivered)."""
        return self._cursor.after_id

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def statistics(self) -> dict[str, Any]:
        return {"delivered": self.delivered, "errors": self.errors,
                "lastEventId": self._cursor.after_id, "running": self.running}

    def close(self, timeout: float | None = 5.0) -> None:
        """Stop: no callback starts after this returns. Waits up to ``timeout`` seconds for
        a callback still running (not when called from one of this subscription's
        callbacks)."""
        self._stop.set()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _run(self) -> None:
        failing = False
        while not self._stop.is_set() and not self._session.closed:
            try:
                events = self._cursor.fetch()
            except Exception as err:  # noqa: BLE001 - the store away: say so once, go on
                if self._session.closed:
                    return
                if not failing:
                    self._log("Event subscription cannot read the event log: %s", err)
                failing = True
                self._stop.wait(max(self._poll, 1.0))
                continue
            failing = False
            for event in events:
                if self._stop.is_set():
                    return
                self._deliver(event)
            if self._cursor.caught_up(events):
                self._stop.wait(self._poll)

    def _deliver(self, event: Event) -> None:
        self.delivered += 1
        for callback in (self._handlers.get(event.kind), self._on_event):
            if callback is None or self._stop.is_set():
                continue
            try:
                callback(event)
            except Exception as err:  # noqa: BLE001 - a subscriber's bug stays its own
                self.errors += 1
                self._log("Event subscriber %s failed on event %d (%s): %r",
                          getattr(callback, "__qualname__", show(callback)), event.event_id,
                          event.kind, err)


class Events:
    """``rt.events``: the shared event log of this runtime's store."""

    def __init__(self, session: Session, log: Callable[..., None]) -> None:
        self._session = session
        self._log = log
        self._subscriptions: builtins.list[Subscription] = []
        self._lock = threading.Lock()

    def subscribe(self, *, on_rate_limit_warning: Callback | None = None,
                  on_instance_connected: Callback | None = None,
                  on_instance_disconnected: Callback | None = None,
                  on_rate_limited: Callback | None = None,
                  on_cooldown_started: Callback | None = None,
                  on_cooldown_ended: Callback | None = None,
                  on_limit_learned: Callback | None = None,
                  on_workflow_claimed: Callback | None = None,
                  on_workflow_auto_claimed: Callback | None = None,
                  on_workflow_force_claimed: Callback | None = None,
                  on_workflow_released: Callback | None = None,
                  on_lock_lost: Callback | None = None,
                  on_task_lost: Callback | None = None,
                  on_budget_warning: Callback | None = None,
                  on_budget_exceeded: Callback | None = None,
                  on_event: Callback | None = None,
                  after_id: int | None = None, poll: float = POLL_S) -> Subscription:
        """Call back on new events, each callback with the ``Event`` (``kind``,
        ``instance_id``, ``data``, ``event_id``, ``wall_ms``): ``on_<kind>`` for its kinds
        (``on_instance_disconnected`` for ``instance_down`` and ``instance_replaced``),
        ``on_event`` for every event of any kind, after the kind's own. ``after_id``: start
        after this event id (default: after the newest now). ``poll``: seconds between reads
        while nothing is new."""
        given = {"on_rate_limit_warning": on_rate_limit_warning,
                 "on_instance_connected": on_instance_connected,
                 "on_instance_disconnected": on_instance_disconnected,
                 "on_rate_limited": on_rate_limited, "on_cooldown_started": on_cooldown_started,
                 "on_cooldown_ended": on_cooldown_ended, "on_limit_learned": on_limit_learned,
                 "on_workflow_claimed": on_workflow_claimed,
                 "on_workflow_auto_claimed": on_workflow_auto_claimed,
                 "on_workflow_force_claimed": on_workflow_force_claimed,
                 "on_workflow_released": on_workflow_released, "on_lock_lost": on_lock_lost,
                 "on_task_lost": on_task_lost,
                 "on_budget_warning": on_budget_warning,
                 "on_budget_exceeded": on_budget_exceeded, "on_event": on_event}
        for name, callback in given.items():
            if callback is not None and not callable(callback):
                raise InvalidArgument(f"{name} must be callable or None (got {show(callback)})")
        if after_id is not None:
            check_int("after_id", after_id)
        poll_s = _check_poll(poll)
        store = self._session.require_store()
        start = newest_id(store) if after_id is None else after_id
        handlers: dict[str, Callback] = {}
        for kind, name in CALLBACKS.items():
            callback = given[name]
            if callback is not None:
                handlers[kind] = callback
        sub = Subscription(self._session, Cursor(store, start), handlers, on_event, poll_s,
                           self._log)
        with self._lock:
            self._subscriptions = [s for s in self._subscriptions if s.running]
            self._subscriptions.append(sub)
        return sub

    def recent(self, after_id: int = 0, limit: int = 100) -> builtins.list[Event]:
        """Up to ``limit`` events with ids above ``after_id``, oldest first (``after_id=0``:
        from the oldest kept). Page on with the last one's ``event_id``."""
        check_int("after_id", after_id)
        check_int("limit", limit, 1, maximum=10_000)
        return self._session.require_store().events(after_id, limit)

    def last(self, count: int = 20) -> builtins.list[Event]:
        """The newest ``count`` events, oldest first."""
        check_int("count", count, 1, maximum=10_000)
        return last_events(self._session.require_store(), count)

    async def afollow(self, *, after_id: int | None = None,
                      poll: float = POLL_S) -> AsyncIterator[Event]:
        """``async for event in rt.events.afollow():`` every new event, as ``subscribe``
        delivers them (default: those after the newest when iteration begins). Ends when the
        runtime closes; reads run in the runtime's store threads, never on the event loop."""
        if after_id is not None:
            check_int("after_id", after_id)
        poll_s = _check_poll(poll)
        store = self._session.require_store()
        start = await self._session.call(newest_id, store) if after_id is None else after_id
        cursor = Cursor(store, start)
        while not self._session.closed:
            try:
                events = await self._session.call(cursor.fetch)
            except Exception:
                if self._session.closed:  # closed while reading: the end, not an error
                    return
                raise
            for event in events:
                yield event
            if cursor.caught_up(events):
                await asyncio.sleep(poll_s)

    def close(self, timeout: float = 1.0) -> None:
        """Stop every subscription (the runtime's ``close`` does), waiting at most
        ``timeout`` seconds in all for callbacks still running."""
        with self._lock:
            subs, self._subscriptions = self._subscriptions, []
        for sub in subs:
            sub.close(0)  # all told first: one slow callback does not keep the others going
        deadline = time.monotonic() + timeout
        for sub in subs:
            sub.close(max(0.0, deadline - time.monotonic()))


def _check_poll(poll: object) -> float:
    seconds = check_seconds("poll", poll, allow_none=False)
    assert seconds is not None
    if not 0.001 <= seconds <= 60:
        raise InvalidArgument(f"poll must be between 0.001 and 60 seconds (got {show(poll)})")
    return seconds
