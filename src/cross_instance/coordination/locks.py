"""TTL locks for users (seed 001's ``tryAcquireLock`` / ``releaseLock``), with fencing tokens.

``rt.locks.hold(resource, ttl)`` waits its turn (first come, first served across processes), renews
in the background while held, and on exit releases. If the lock is lost anyway (the process
was paused past the TTL, the store was unreachable until expiry, or the instance was judged
dead, which frees its locks before their TTLs end), the holder is told: ``on_lost`` is
called, ``held.ensure()`` raises ``LockLostError``, and leaving the ``with`` block raises it,
never a silent continuation. Pass ``held.token`` to
whatever the lock protects so it can refuse a stale holder (fencing).
"""

from __future__ import annotations

import asyncio
import builtins
import random
import threading
import time
from collections.abc import Callable, Generator
from types import TracebackType
from typing import TYPE_CHECKING, Any

from cross_instance.core.arguments import check_cancel, check_seconds, show
from cross_instance.core.locking import (
    LockRecord,
    LockWaiting,
    check_resource,
    check_ttl,
)
from cross_instance.errors import (
    CrossInstanceError,
    LockLostError,
    LockRequestError,
    LockTimeoutError,
)
from cross_instance.runtime.acquire import Call, Sleep, run_async, run_sync
from cross_instance.runtime.session import quiet
from cross_instance.runtime.tenure import Tenure
from cross_instance.stores.permit_ids import new_ticket

if TYPE_CHECKING:
    from cross_instance.runtime.session import Session
    from cross_instance.stores.base import Store

LOCK_POLL_S = 0.01  # first poll while the lock is held; doubles up to LOCK_POLL_MAX_S
LOCK_POLL_MAX_S = 0.1
OnLost = Callable[["HeldLock", LockLostError], None]


class LockLoop:
    """One wait for a lock, as steps for the shared drivers of ``acquire``."""

    def __init__(self, session: Session, resource: str, ttl_ns: int,
                 timeout: float | None) -> None:
        self.session = session
        self.store, self.resource = session.require_store(), resource
        self.instance_id = session.instance_id
        self.ttl_ns = ttl_ns
        self.started = time.monotonic()
        timeout = check_seconds("timeout", timeout, LockRequestError)
        self.deadline = None if timeout is None else self.started + timeout
        # this wait's own id, sent with every attempt: an attempt sent twice (its reply lost)
        # queues once, and leaving gives the place back even if no reply ever came
        self.ticket: int | None = new_ticket()
        self.sent = 0.0
        self.tenure = Tenure(session)  # the registration the last attempt was sent under

    def steps(self) -> Generator[Call | Sleep, Any, LockRecord]:
        poll = LOCK_POLL_S
        while True:
            self.sent, self.tenure = time.monotonic(), Tenure(self.session)
            result = yield Call(self.store.acquire_lock,
                                (self.resource, self.instance_id, self.ttl_ns, self.ticket, True))
            if isinstance(result, LockRecord):
                self.ticket = None
                return result
            assert isinstance(result, LockWaiting)
            self.ticket = result.ticket
            remaining = float("inf") if self.deadline is None else self.deadline - time.monotonic()
            if remaining <= 0:
                raise LockTimeoutError(self.resource, result.holder,
                                       time.monotonic() - self.started)
            until_expiry = max(0.0, (result.retry_ns - result.now_ns) / 1e9)
            delay = min(poll, until_expiry) if until_expiry > 0 else poll
            poll = min(LOCK_POLL_MAX_S, poll * 2)
            yield Sleep(min(delay * random.uniform(0.8, 1.2), remaining))

    def settle(self, answer: object) -> Call | None:
        """A call answered after this wait was cancelled (asyncio cannot stop it): a lock it
        took is released at once rather than held, by nobody, until its TTL."""
        if isinstance(answer, LockRecord):
            return Call(self.store.release_lock, (answer.resource, answer.lock_id))
        return None

    def abandon(self) -> Call | None:
        ticket, self.ticket = self.ticket, None
        return None if ticket is None else Call(self.store.cancel_lock_wait, (ticket,))


class HeldLock:
    """A lock this process holds: ``lock_id``, ``resource``, ``token`` (fencing),
    ``acquired_at`` / ``expires_at`` (wall ms, as in the seed). As a context manager it renews
    in the background (every third of the TTL) and releases on exit."""

    def __init__(self, store: Store, record: LockRecord, ttl_ns: int, sent: float,
                 on_lost: OnLost | None = None, tenure: Tenure | None = None) -> None:
        self._store = store
        self._tenure = tenure  # the registration it was acquired under
        self.record = record
        self.ttl_ns = ttl_ns
        self.valid_until = sent + ttl_ns / 1e9  # monotonic, conservative (from the request)
        self.on_lost = on_lost
        self.lost: LockLostError | None = None
        self._lost_lock = threading.RLock()  # reentrant: ``on_lost`` may call ``ensure``
        self.released = False
        self._releasing = False  # a release was sent: a renewal answered None is not a loss
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def resource(self) -> str:
        return self.record.resource

    @property
    def lock_id(self) -> str:
        return self.record.lock_id

    @property
    def token(self) -> int:
        """The fencing token: pass it to what the lock protects."""
        return self.record.token

    @property
    def acquired_at(self) -> int:
        """Wall-clock ms, as in the seed's ``acquiredAt``."""
        return self.record.acquired_wall_ms

    @property
    def expires_at(self) -> int:
        """Wall-clock ms of the current expiry (it moves with each renewal)."""
        return self.record.expires_wall_ms

    def __repr__(self) -> str:
        state = "lost" if self.lost else "released" if self.released else "held"
        return f"<HeldLock {self.resource!r} token {self.token} {state}>"

    # --- one renewal: the decision shared by the thread and the asyncio task ----------------
    def renew(self, ttl: float | None = None) -> bool:
        """Extend the TTL from now; False (and the holder told) when the lock was lost."""
        if self.lost is not None or self.released or self._releasing:
            return False
        ttl_ns = self.ttl_ns if ttl is None else check_ttl(ttl)
        gone = None if self._tenure is None else self._tenure.gone()
        if gone is not None:
            self._mark_lost(gone)
            return False
        sent = time.monotonic()
        try:
            record = self._store.renew_lock(self.resource, self.lock_id, ttl_ns)
        except CrossInstanceError as err:
            held = self.valid_until > time.monotonic() if self._tenure is None \
                else self._tenure.holds(self.valid_until)
            if held:
                return True  # not confirmed, but not expired either: try again soon
            self._mark_lost(f"could not be renewed before its TTL ended ({err})")
            return False
        if record is None:
            if not self._releasing:  # (answered after this holder's own release)
                self._mark_lost("its TTL ended or another holder took it")
            return False
        self.record, self.ttl_ns = record, ttl_ns
        self.valid_until = sent + ttl_ns / 1e9
        return True

    def _mark_lost(self, reason: str) -> None:
        # Once, whichever thread notices first; ``on_lost`` runs before anyone else is told
        # (``_lost_now`` waits for it), so a caller that sees the loss knows it was reported.
        with self._lost_lock:
            if self.lost is not None:
                return
            self.lost = LockLostError(self.resource, self.token, reason)
            if self.on_lost is not None:
                self.on_lost(self, self.lost)
        try:
            self._store.record_event("lock_lost", self.record.holder, {
                "resource": self.resource, "token": self.token, "reason": reason,
                "noticedBy": "holder"})
        except CrossInstanceError:
            pass  # the store is what failed; the holder was told all the same

    def _lost_now(self) -> LockLostError | None:
        with self._lost_lock:
            return self.lost

    def ensure(self) -> None:
        """Raise ``LockLostError`` unless the lock is surely still held (call it before each
        action the lock protects). It asks the store only when its instance's lease may have
        ended (a heartbeat); a lock whose TTL ended before a renewal came through is lost at
        once."""
        if self.lost is None and not self.released:
            if self._tenure is not None:
                self._tenure.ensure(self.valid_until, self._mark_lost, "its TTL")
            elif time.monotonic() >= self.valid_until:
                self._mark_lost("its TTL ended before a renewal came through")
        lost = self._lost_now()
        if lost is not None:
            raise lost
        if self.released:
            raise LockLostError(self.resource, self.token, "it was released")
        if self._releasing:  # a release the store did not answer: it may be free already
            raise LockLostError(self.resource, self.token, "its release was sent (the store "
                                "did not answer): it is held at most until its TTL")

    def release(self) -> bool:
        """Free the lock; False when it was no longer held by us. Idempotent once it went
        through; when the store did not answer, the error is raised and ``release`` may be
        called again (else the lock ends at its TTL)."""
        self._stop.set()
        if self.released:
            return False
        gone = None if self._tenure is None else self._tenure.gone()
        if gone is not None:  # e.g. the runtime closed: told as a loss, as ensure() would
            self._mark_lost(gone)
        self._releasing = True
        try:  # lost as far as this process knows: if the store still has it as ours (by
            freed = self._store.release_lock(self.resource, self.lock_id)  # lock_id), free it
        except CrossInstanceError:
            if self._lost_now() is None:
                raise
            freed = False  # lost already: nothing of ours left to free, as far as we can tell
        self.released = True
        return freed

    # --- background renewal ------------------------------------------------------------------
    def _period(self) -> float:
        return max(0.001, self.ttl_ns / 3e9)

    def _renew_thread(self) -> None:
        while not self._stop.wait(self._period()):
            if not self.renew():
                return

    async def _renew_task(self) -> None:
        while not self.released:
            await asyncio.sleep(self._period())
            if self.released or not await asyncio.to_thread(self.renew):
                return

    def __enter__(self) -> HeldLock:
        self._thread = threading.Thread(target=self._renew_thread, daemon=True,
                                        name=f"pi-xi-lock-{self.resource[:20]}")
        self._thread.start()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self._finish(et)

    async def __aenter__(self) -> HeldLock:
        self._task = asyncio.create_task(self._renew_task())
        return self

    async def __aexit__(self, et: type[BaseException] | None, ev: BaseException | None,
                        tb: TracebackType | None) -> None:
        self._stop.set()
        # shielded: cancelled again meanwhile (a timeout, a task group), the lock is still
        # released, not left to its TTL
        done = asyncio.ensure_future(self._aexit(et))
        done.add_done_callback(quiet)
        await asyncio.shield(done)

    async def _aexit(self, et: type[BaseException] | None) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await asyncio.to_thread(self._finish, et)

    def _finish(self, et: type[BaseException] | None) -> None:
        """Leaving the block: release. A loss is raised when the block ended normally
        (its work may not have been protected); when the block raised, its exception is the
        one to see, and a release the store did not answer leaves the lock to its TTL."""
        if not self.released:
            try:
                freed = self.release()
            except CrossInstanceError:
                if et is None:
                    raise
            else:
                if not freed and self._lost_now() is None:  # someone else's by now: its
                    self._mark_lost("it was no longer held when released")  # work unguarded
        lost = self._lost_now()
        if lost is not None and et is None:
            raise lost


class PendingLock:
    """Returned by ``ahold``: ``async with`` waits for the lock, then holds and renews it,
    and releases it on exit."""

    def __init__(self, locks: Locks, resource: str, ttl: float, timeout: float | None,
                 on_lost: OnLost | None) -> None:
        self._locks = locks
        self._args = (resource, ttl, timeout, on_lost)
        self.held: HeldLock | None = None

    async def __aenter__(self) -> HeldLock:
        resource, ttl, timeout, on_lost = self._args
        self.held = await self._locks.aacquire(resource, ttl, timeout, on_lost)
        return await self.held.__aenter__()

    async def __aexit__(self, et: type[BaseException] | None, ev: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self.held is not None:
            await self.held.__aexit__(et, ev, tb)


def _check_on_lost(on_lost: object) -> None:
    if on_lost is not None and not callable(on_lost):
        raise LockRequestError(f"on_lost must be a callable or None (got {show(on_lost)})")


class Locks:
    """``rt.locks``: TTL locks with fencing tokens, first come first served across every
    instance (seed 001's ``tryAcquireLock`` / ``releaseLock``, and waiting acquires)."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def try_acquire(self, resource: str, ttl: float,
                    on_lost: OnLost | None = None) -> HeldLock | None:
        """The lock if it is free now and nobody queued earlier, else None (seed
        ``tryAcquireLock``). ``ttl`` in seconds. Not re-entrant: a second acquire of a lock
        this instance holds waits (or gets None) like any other."""
        ttl_ns, store = check_ttl(ttl), self._session.require_store()
        _check_on_lost(on_lost)
        sent, tenure = time.monotonic(), Tenure(self._session)
        record = store.acquire_lock(check_resource(resource), self._session.instance_id,
                                    ttl_ns, None, False)
        assert not isinstance(record, LockWaiting)
        return None if record is None else HeldLock(store, record, ttl_ns, sent, on_lost,
                                                    tenure)

    def acquire(self, resource: str, ttl: float, timeout: float | None = None,
                cancel: threading.Event | None = None,
                on_lost: OnLost | None = None) -> HeldLock:
        """Wait for the lock in arrival order; ``LockTimeoutError`` after ``timeout`` s,
        ``Cancelled`` when ``cancel`` is set. The place in the queue is given back on
        any exit."""
        check_cancel(cancel, LockRequestError)
        _check_on_lost(on_lost)
        loop = self._loop(resource, ttl, timeout)
        record = run_sync(loop, None, cancel)
        return HeldLock(loop.store, record, loop.ttl_ns, loop.sent, on_lost, loop.tenure)

    async def aacquire(self, resource: str, ttl: float, timeout: float | None = None,
                       on_lost: OnLost | None = None) -> HeldLock:
        """``acquire`` for asyncio: cancel the task to stop waiting."""
        _check_on_lost(on_lost)
        loop = self._loop(resource, ttl, timeout)
        record = await run_async(loop, self._session.call)
        return HeldLock(loop.store, record, loop.ttl_ns, loop.sent, on_lost, loop.tenure)

    def hold(self, resource: str, ttl: float = 30.0, timeout: float | None = None,
             on_lost: OnLost | None = None) -> HeldLock:
        """``with rt.locks.hold("repo:main", ttl=30) as held: ...``: waits, renews,
        releases."""
        return self.acquire(resource, ttl, timeout, on_lost=on_lost)

    def ahold(self, resource: str, ttl: float = 30.0, timeout: float | None = None,
              on_lost: OnLost | None = None) -> PendingLock:
        """``async with rt.locks.ahold(...) as held``: waits on the event loop, renews in a
        task. Its arguments are checked here, as ``hold`` checks them."""
        check_resource(resource)
        check_ttl(ttl)
        check_seconds("timeout", timeout, LockRequestError)
        _check_on_lost(on_lost)
        return PendingLock(self, resource, ttl, timeout, on_lost)

    def release(self, lock: HeldLock) -> bool:
        """Seed ``releaseLock``: only the holder's own lock is freed (by its ``lock_id``)."""
        if not isinstance(lock, HeldLock):
            raise LockRequestError(f"lock must be a HeldLock from acquire or hold "
                                   f"(got {show(lock)})")
        return lock.release()

    def cleanup_expired(self) -> int:
        """Free locks past their TTL or held by dead instances; how many were freed."""
        return len(self._session.require_store().cleanup_expired_locks())

    def list(self) -> builtins.list[LockRecord]:
        """Every lock held now, by resource."""
        return self._session.require_store().list_locks()

    def _loop(self, resource: str, ttl: float, timeout: float | None) -> LockLoop:
        return LockLoop(self._session, check_resource(resource), check_ttl(ttl), timeout)
