"""What one daemon process holds: the store it serves, its config, the thread pool its store
calls run in, the replies kept by request id, and the clients' permits it plans and learns for.

The store's calls are blocking (SQLite waits for its write lock, Redis for its server). One
operation takes tens of microseconds and is bounded by the store's own timeouts, so the hot
ones (a permit, a release, a claim) run on the event loop itself (``call``): handing each to a
thread costs more than the operation, in thread switches and the interpreter lock passed back
and forth (it halves the daemon's permits per second). Once one such call takes long (another
process holds the SQLite write lock, Redis hangs), they run in the pool for a while, so health,
events and the other clients are still answered. Reads that grow with the state (snapshots,
lists, event pages, reaping) always run in a pool of ``STORE_THREADS`` threads (``run``), so
the event loop keeps serving permits meanwhile.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from cross_instance.config import Config
from cross_instance.core.workqueue import MAX_TEXT
from cross_instance.daemon.journal import Journal
from cross_instance.daemon.replies import Replies
from cross_instance.runtime.announcer import Announcer
from cross_instance.runtime.logs import LineLog
from cross_instance.stores.base import Store
from cross_instance.stores.redis.connection import redact

T = TypeVar("T")
STORE_THREADS = 8
SLOW_CALL_S = 0.5  # a stalled lock holder or a hung server, not a busy moment
SLOW_FOR_S = 10


# The largest body a valid call sends: a queue task's JSON text (``MAX_TEXT`` bytes as UTF-8)
# with every character written as a \u escape (at most 6 times as long: 6 bytes for a 1-byte
# "<", as Go's encoder writes it; 6 for 2, 12 for 4), or escaped once more inside the remote
# store's request (at most twice), and the rest of the request.
MAX_BODY = 6 * MAX_TEXT + (1 << 20)

class Daemon:
    """The shared state of one ``pi-xi serve`` (the app's ``state.daemon``)."""

    def __init__(self, store: Store, config: Config, token: str | None = None,
                 max_body: int = MAX_BODY, log: LineLog | None = None,
                 debug: bool = False, journal: Path | None = None) -> None:
        self.store = store
        self.config = config
        self.token = token
        self.max_body = max_body
        self.log = log if log is not None else LineLog(None, "coordinator")
        self.debug = debug
        self.serves = redact(store.url)
        # events the daemon announces for its clients (429s, cooldowns, usage warnings)
        self.announcer = Announcer(store, "coordinator", self.log)
        self.replies = Replies()
        # replies by request id on disk, so a resend after a restart is not applied twice
        self.journal = Journal(journal) if journal is not None else None
        #: what to close on the event loop when the server shuts down (the gateway's pool)
        self.closers: list[Callable[[], Awaitable[None]]] = []
        self._slow_until = 0.0
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=STORE_THREADS, thread_name_prefix="pi-xi-daemon-store")

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in the store's thread pool (a read that grows with the state)."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)``, one quick store operation: on the event loop while the store answers
        quickly; in the thread pool for ``SLOW_FOR_S`` after a call took over ``SLOW_CALL_S``
        (a stalled lock holder, a hung server), so the daemon keeps answering meanwhile."""
        if self._slow_until > time.monotonic():
            return await self.run(fn, *args)
        began = time.monotonic()
        try:
            return fn(*args)
        finally:
            took = time.monotonic() - began
            if took > SLOW_CALL_S:
                self._slow_until = time.monotonic() + SLOW_FOR_S
                self.log("Store slow (one call took %.3fs): store calls run off the event loop "
                         "for %ds", took, SLOW_FOR_S)

    def close(self) -> None:
        self.announcer.close()
        if self.journal is not None:
            self.journal.close()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.store.close()
