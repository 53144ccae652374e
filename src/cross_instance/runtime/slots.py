"""This process's side of the shared concurrency slots: its waiters, the releases it owes the
store, and the signals that tell waiters a slot came free.

A ``Permit`` releases through ``Slots`` and nothing else. A release goes, in this order of
preference, to the earliest waiter of this process (its next store call carries it: one
transaction releases and grants), or into the group-commit queue (``releases``), sent at once
when another process waits (a doorbell on this host shows one, or the store's last answer said
somebody queues) and otherwise with this process's next store call. Slots freed in the store
wake the waiters here and ring the other waiting processes of this host (``handover``), unless
the store announces freed slots to every host itself (Redis, ``stores.redis.freed``).

What is promised: a released id reaches the store exactly once (carried, queued or re-homed
when the waiter it was handed to gave up), and a grant nobody holds is released too.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from cross_instance.core.records import Granted, PermitRequest, PermitState, Waiting
from cross_instance.errors import NotRegisteredError, StoreUnavailable
from cross_instance.hostfacts import identity as hostinfo
from cross_instance.runtime.acquire import SlotWaiter, Wake
from cross_instance.runtime.handover import Doorbell, directory_for
from cross_instance.runtime.logs import LineLog
from cross_instance.runtime.releases import ReleaseQueue
from cross_instance.runtime.session import Session
from cross_instance.stores.base import FreedSlots, Store

T = TypeVar("T")
ONE_HOST_S = 5.0  # how long "every instance runs on this host" is trusted
RECENT_WAIT_S = 1.0  # a process that waited this recently sends its releases at once (Redis)


class Slots:
    """Waiters, releases and wake-ups of one runtime (see the module's docstring)."""

    def __init__(self, store: Store, session: Session, log: LineLog) -> None:
        self.store = store
        self._session = session
        self._log = log
        # permits granted by the store and not released: re-declared if the store restarts
        self.live: dict[int, tuple[PermitRequest, int]] = {}
        self.wake = Wake(self._waiting_changed)
        self._doorbell: Doorbell | None = Doorbell(directory_for(store), self.wake.wake)
        # on Redis, freed slots announced to the waiters of every host
        self.freed: FreedSlots | None = store.freed_channel(session.instance_id,
                                                            self.wake.wake, self.wake.wake)
        self._one_host = (-ONE_HOST_S, False)  # (checked at, every instance on this host)
        self._releases = ReleaseQueue(self._send, self._handed_over, self._send_failed)

    # --- what a permit calls ---------------------------------------------------------------
    def granted(self, granted: Granted, request: PermitRequest) -> None:
        """Remember a grant until it is released (``holding``)."""
        self.live[granted.permit_id] = (request, granted.granted_ns)

    def release(self, permit_id: int) -> None:
        if self._queue(permit_id):
            self._releases.flush()

    async def arelease(self, permit_id: int) -> None:
        if self._queue(permit_id):
            # Another process waits: send it now, in the store's thread pool, and return once
            # it is sent (a flusher thread raced this task's next store call, which then ran
            # first and held the release back by a whole decision).
            try:
                sent = self._session.call(self._releases.flush)
            except (RuntimeError, NotRegisteredError):  # closing: the flusher sends it
                self._releases.put_urgent()
                return
            await sent

    # --- what a wait calls (``acquire.Waiters``) --------------------------------------------
    def with_releases(self, op: Callable[..., T], *args: Any, carry: Sequence[int] = ()) -> T:
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

    def acquire(self, request: PermitRequest, ticket: int | None,
                waiter: SlotWaiter | None) -> Granted | Waiting:
        """A waiter's question to the store, carrying the releases handed to it."""
        return self.with_releases(self.store.acquire, request, ticket,
                                  carry=self.wake.take_carry(waiter))

    def rehome(self, ids: list[int]) -> None:
        """Releases handed to a waiter that stopped waiting before carrying them, or grants
        that arrived for a wait already given up."""
        if self.wake.hand(ids):
            return
        urgent = self._others_wait()
        for i in ids:
            self._releases.put(i, urgent=urgent)

    def rung(self) -> bool:
        """Whether every release that can free this process's slots rings its waiters, so
        that they poll only as a safety net: true where the store announces freed slots to
        every host (Redis, when the account may), or when every registered instance runs on
        this host, in this pid namespace (rechecked every few seconds: an instance on another
        host, or in another container, has no doorbell here)."""
        if self._announced():
            return True
        if self._doorbell is None:
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

    def rung_known(self) -> bool:
        """``rung()`` needs no store call now."""
        return (self._doorbell is None or self._announced()
                or time.monotonic() - self._one_host[0] <= ONE_HOST_S)

    # --- the runtime's --------------------------------------------------------------------
    def holding(self) -> list[PermitState]:
        """The permits this process holds now, as the store knows them."""
        me = self._session.instance_id
        return [PermitState(pid, me, req.provider, req.model, req.tokens, ns)
                for pid, (req, ns) in list(self.live.items())]

    def flush(self) -> None:
        """Send every queued release now."""
        self._releases.flush()

    def close(self) -> None:
        self._releases.close()
        if self._doorbell is not None:
            self._doorbell.close()
        if self.freed is not None:
            self.freed.close()

    # --- inside -----------------------------------------------------------------------------
    def _queue(self, permit_id: int) -> bool:
        """Hand the release to the earliest waiter here, else queue it; True when it must be
        sent now because another process waits (otherwise it travels with this process's
        next store call, group commit)."""
        self.live.pop(permit_id, None)  # no longer re-declared after a store restart
        if self._session.closed:
            return False
        if self.wake.hand([permit_id]):
            return False
        send_now = self._others_wait()
        self._releases.put(permit_id, sent_now=send_now)
        return send_now

    def _send(self, ids: Sequence[int]) -> None:
        self.store.release(self._session.instance_id, ids)

    def _send_failed(self, err: Exception) -> None:
        self._log("Releasing permits of %s failed (will retry): %s", self._session.instance_id,
                  err)

    def _handed_over(self, n: int) -> None:
        """``n`` slots were freed in the store: wake as many waiters here and ring every
        other waiting process of this host (unless the store announced it to every host)."""
        self.wake.wake(n)
        if self._doorbell is not None and not self._announced():
            self._doorbell.ring(n)

    def _announced(self) -> bool:
        """Whether the store announces freed slots to the waiters of every host itself."""
        return self.freed is not None and self.freed.refused is None

    def _waiting_changed(self) -> None:
        def waiting() -> bool:  # read under each one's lock
            return self.wake.waiting > 0

        if self._doorbell is not None:
            self._doorbell.set_waiting(waiting)
        if self.freed is not None:
            self.freed.set_waiting(waiting)

    def _others_wait(self) -> bool:
        """Whether a release should be sent now: a doorbell shows a waiter in another process
        of this host, or (Redis: waiters on other hosts have no doorbell here) the store's
        last answer about permits said somebody queues (``RedisStore.queued``), or this
        process itself waited in the last ``RECENT_WAIT_S``: the queue was not empty moments
        ago, and a waiter that queued after this process's grant is in no answer it got."""
        if self._doorbell is not None and self._doorbell.others_waiting():
            return True
        queued = self.store.queued
        if queued is None:
            return False
        return bool(queued) or time.monotonic() - self.wake.left_at < RECENT_WAIT_S
