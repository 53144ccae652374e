"""What the parts of one runtime share: the store, this instance's id and membership, and the
thread pool that runs store calls for asyncio callers.

``rt.locks``, ``rt.workflows`` and ``rt.instances`` each hold the runtime's one ``Session``
instead of the runtime itself, so they see exactly this much of it. Once the runtime is closed
(or when coordination is disabled) every part raises ``NotRegisteredError`` naming why.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from cross_instance.errors import NotRegisteredError

if TYPE_CHECKING:
    from cross_instance.runtime.membership import Membership
    from cross_instance.stores.base import Store

T = TypeVar("T")
STORE_THREADS = 4  # store calls of asyncio callers run at most this many at once per runtime


def quiet(future: asyncio.Future[Any]) -> None:
    """Done-callback of a shielded call whose caller was cancelled: its outcome is retrieved
    (no "exception was never retrieved" warning); the caller saw its cancellation."""
    if not future.cancelled():
        future.exception()


class Session:
    """One registered instance's shared handles. Thread-safe."""

    def __init__(self, store: Store | None, instance_id: str) -> None:
        self.store = store
        self.instance_id = instance_id
        self.membership: Membership | None = None  # set once the instance has joined
        self.closed = False
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._executor_lock = threading.Lock()

    def store_or_none(self) -> Store | None:
        """The store, or None when coordination is disabled; ``NotRegisteredError`` once
        closed."""
        if self.closed:
            raise NotRegisteredError(f"runtime of instance {self.instance_id} is closed")
        return self.store

    def require_store(self) -> Store:
        store = self.store_or_none()
        if store is None:
            raise NotRegisteredError("cross-instance coordination is disabled")
        return store

    def require_membership(self) -> Membership:
        self.require_store()
        if self.membership is None:
            raise NotRegisteredError(f"instance {self.instance_id} has not joined")
        return self.membership

    def confirm_lease(self) -> None:
        """Make sure this instance's own lease has not run out (a process resumed from a
        pause heartbeats first): the self-fencing before a fenced write or a claim."""
        if self.membership is None or self.closed:
            raise NotRegisteredError("the runtime is closed or coordination is disabled")
        self.membership.confirm()

    def call(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """``fn(*args)`` in the store's thread pool, as a future of the running loop (a plain
        future, so ``acquire.answer`` shields it without a task of its own).
        ``NotRegisteredError`` once the runtime is closed, as the sync forms say."""
        if self.closed:
            raise NotRegisteredError(f"runtime of instance {self.instance_id} is closed")
        return asyncio.get_running_loop().run_in_executor(self._pool(), fn, *args)

    def submit(self, fn: Callable[..., T], *args: Any) -> concurrent.futures.Future[T]:
        """``fn(*args)`` in the store's thread pool, from any thread (a release starting a
        woken async waiter's next question: ``acquire.Sleep.then``)."""
        return self._pool().submit(fn, *args)

    def close(self) -> None:
        """Refuse further calls and let the thread pool's threads end. Idempotent."""
        self.closed = True
        if self._executor is not None:
            self._executor.shutdown(wait=False)

    def _pool(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._executor is None:
            with self._executor_lock:
                if self._executor is None:
                    self._executor = concurrent.futures.ThreadPoolExecutor(
                        max_workers=STORE_THREADS, thread_name_prefix="pi-xi-store")
        return self._executor
