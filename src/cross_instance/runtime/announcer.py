"""This process's events on their way to the store's event log, off the caller's thread.

A permit or a report that has something to announce (a 429, a cooldown, a learned limit, a
usage warning) only appends to a queue: one daemon thread, started on first use, writes the
events with ``store.record_event`` in the order they were emitted, and also runs the few
checks that must happen later (has a cooldown ended?). So announcing never adds a store
round trip, nor a wait, to a permit or a report.

Promises: ``emit`` and ``after`` never block on the store; at most ``MAX_PENDING`` events wait
(beyond that new ones are dropped and counted in ``dropped``, as is an event the store refused:
the log is for watching, never a reason to slow or fail a call); ``close`` writes what is
still queued (bounded by its timeout) and cancels the checks not yet due.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import threading
import time
from collections.abc import Callable
from typing import Any

from cross_instance.errors import CrossInstanceError
from cross_instance.stores.base import Store

MAX_PENDING = 1000


class Announcer:
    def __init__(self, store: Store, instance_id: str, log: Callable[..., None]) -> None:
        self.store = store
        self.instance_id = instance_id
        self.log = log
        self.dropped = 0
        self.written = 0
        self._pending: collections.deque[tuple[str, dict[str, Any], str]] = (
            collections.deque())
        self._due: list[tuple[float, int, Callable[[], None]]] = []  # (monotonic, seq, check)
        self._seq = itertools.count()
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closing = False

    def emit(self, kind: str, data: dict[str, Any], instance_id: str | None = None) -> None:
        """Queue an event of this instance, or of ``instance_id`` (the daemon announces for
        its clients), written soon, in order."""
        with self._cv:
            if self._closing or len(self._pending) >= MAX_PENDING:
                self.dropped += 1
                return
            self._pending.append((kind, data, instance_id or self.instance_id))
            self._start()
            self._cv.notify()

    def after(self, delay_s: float, check: Callable[[], None]) -> None:
        """Run ``check`` on the announcer's thread in ``delay_s`` seconds (not after close)."""
        with self._cv:
            if self._closing:
                return
            heapq.heappush(self._due, (time.monotonic() + max(0.0, delay_s), next(self._seq),
                                       check))
            self._start()
            self._cv.notify()

    def close(self, timeout: float = 2.0) -> None:
        """Write what is queued (for at most ``timeout`` seconds), drop the checks, stop."""
        with self._cv:
            self._closing = True
            self._due.clear()
            self._cv.notify()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="pi-xi-events",
                                            daemon=True)
            self._thread.start()

    def _next(self) -> tuple[str, dict[str, Any], str] | Callable[[], None] | None:
        """The next event to write or check to run, waiting for one; None: closed and done."""
        with self._cv:
            while True:
                if self._pending:
                    return self._pending.popleft()
                if self._closing:
                    return None
                now = time.monotonic()
                if self._due and self._due[0][0] <= now:
                    return heapq.heappop(self._due)[2]
                self._cv.wait(self._due[0][0] - now if self._due else None)

    def _run(self) -> None:
        while (item := self._next()) is not None:
            try:
                if isinstance(item, tuple):
                    self.store.record_event(item[0], item[2], item[1])
                    self.written += 1
                else:
                    item()
            except Exception as err:  # noqa: BLE001 - the store away or closed, or a check's
                # bug: the log is for watching, so nothing is retried and the writer goes on
                what = "check"
                if isinstance(item, tuple):
                    self.dropped += 1
                    what = item[0]
                self.log("Event not recorded (%s): %s", what,
                         err if isinstance(err, CrossInstanceError) else repr(err))
