"""Releasing permits without a transaction of their own (group commit).

``Permit.release()`` only queues the id here. The queued ids travel with this process's next
store operation (``acquire(..., release=ids)``: released first, in the same atomic step), or a
flusher thread sends those that have waited ``DELAY_S`` (20 ms). The slot is therefore counted as
held for at most that long after ``release()`` returns: the concurrency cap can only be more
conservative, never exceeded, and a process that releases and acquires back to back pays one
transaction per call instead of two. (A waiter in the same process is woken at once: its own
next attempt carries the release. The delay is a trade: with 2 ms, eight busy processes on two
cores spent a third of their CPU on the flushers' wake-ups preempting the lock holder.)

The delay applies only while no other process waits: the runtime sends a release at once
(``flush()``) when another process of this host has a slot waiter (``handover.Doorbell``) or
the store's last answer said somebody queues (Redis, any host), and ``on_sent`` then wakes the
waiters (the Redis store announces the release to every host itself).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

DELAY_S = 0.02
IDLE_S = 0.05


class ReleaseQueue:
    def __init__(self, send: Callable[[Sequence[int]], object],
                 on_sent: Callable[[int], None], on_error: Callable[[Exception], None]) -> None:
        self._send = send
        self._on_sent = on_sent
        self._on_error = on_error
        self._items: list[tuple[float, int]] = []  # (queued at, permit id), oldest first
        self._lock = threading.Lock()
        self._event = threading.Event()
        self._urgent = threading.Event()  # send what is queued now (another process waits)
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._active = False  # the flusher is polling (no wake-up needed)

    def put(self, permit_id: int, urgent: bool = False, sent_now: bool = False) -> None:
        """Queue a release. ``sent_now``: the caller sends it itself at once (``flush``), so
        the flusher is not woken for it (that wake-up only took the GIL from the release)."""
        with self._lock:
            self._items.append((time.monotonic(), permit_id))
            if sent_now:
                return
            wake = self._activate()
        if wake:
            self._event.set()
        if urgent:
            self.put_urgent()

    def _activate(self) -> bool:
        """Start the flusher if need be (under the lock); whether it must be woken."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="pi-xi-release",
                                            daemon=True)
            self._thread.start()
        wake = not self._active
        self._active = True
        return wake

    def put_urgent(self) -> None:
        """Have the flusher send everything queued now rather than after ``DELAY_S``."""
        with self._lock:
            self._activate()
        self._urgent.set()
        self._event.set()

    def take(self) -> list[int]:
        """The queued ids, now owned by the caller (give them back if its step fails)."""
        if not self._items:
            return []
        with self._lock:
            items, self._items = self._items, []
        return [i for _, i in items]

    def give_back(self, ids: Sequence[int]) -> None:
        if ids:
            now = time.monotonic()
            with self._lock:
                self._items[:0] = [(now, i) for i in ids]
                self._activate()
            self._event.set()

    def flush(self, older_than: float | None = None) -> None:
        """Send queued releases now (only those queued before ``older_than``, if given)."""
        with self._lock:
            if older_than is None:
                items, self._items = self._items, []
            else:
                cut = sum(1 for t, _ in self._items if t <= older_than)
                items, self._items = self._items[:cut], self._items[cut:]
        if not items:
            return
        ids = [i for _, i in items]
        try:
            self._send(ids)
        except Exception as err:  # noqa: BLE001 - kept for the next try, reported
            self.give_back(ids)
            self._on_error(err)
            return
        self._on_sent(len(ids))

    def _run(self) -> None:
        """Poll every ``DELAY_S`` while releases come in; sleep on the event once idle for
        ``IDLE_S``. (Waking this thread on every release would make it fight the caller's
        thread for the GIL on every permit.)"""
        while not self._stopped.is_set():
            self._event.wait()
            self._event.clear()
            idle_since = time.monotonic()
            while not self._stopped.is_set():
                urgent = self._urgent.wait(DELAY_S)
                if self._stopped.is_set():
                    break
                now = time.monotonic()
                if urgent:
                    self._urgent.clear()
                self.flush(older_than=None if urgent else now - DELAY_S)
                with self._lock:
                    if self._items:
                        idle_since = now
                    elif now - idle_since > IDLE_S:
                        self._active = False
                        break

    def close(self) -> None:
        self._stopped.set()
        self._event.set()
        self._urgent.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=1)
        self.flush()
