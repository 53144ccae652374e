"""Replies by request id: a request that changes state and is sent again (its reply was lost)
gets the first reply instead of being applied twice.

Kept in the daemon's memory for ``ttl_s`` (default 10 minutes, at most ``limit`` ids): what a
client's bounded retries need. The store operations the remote store sends are also safe to
resend on their own (a wait's ticket, a permit's id, a claim by its owner), which is what
holds across a restart of the daemon, when this memory is gone.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

Reply = tuple[int, bytes]

MAX_REQUEST_ID = 128


CLIENT_GONE = 499  # the client left before its answer: nothing was applied (or it was undone)


def kept(status: int) -> bool:
    """Whether a reply is kept for the request id's resends: not a server error, nor the
    answer to a client that left (its retry must run again, not get an empty 499)."""
    return status < 500 and status != CLIENT_GONE


class Replies:
    def __init__(self, ttl_s: float = 600.0, limit: int = 100_000) -> None:
        self.ttl_s = ttl_s
        self.limit = limit
        self._seen: OrderedDict[str, tuple[float, asyncio.Future[Reply]]] = OrderedDict()

    async def once(self, request_id: str, apply: Callable[[], Awaitable[Reply]]) -> Reply:
        """``apply()``'s reply, applied once per ``request_id``: a second request with the same
        id waits for the first one's reply (also while it is still running). A reply that is
        a server error is not kept, so a retry tries again."""
        now = time.monotonic()
        self._trim(now)
        seen = self._seen.get(request_id)
        if seen is not None:
            return await asyncio.shield(seen[1])
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._seen[request_id] = (now, future)
        try:
            reply = await apply()
        except BaseException as err:
            self._seen.pop(request_id, None)
            future.set_exception(err)
            future.exception()  # retrieved: nobody else may be waiting
            raise
        if not kept(reply[0]):
            self._seen.pop(request_id, None)
        future.set_result(reply)
        return reply

    def _trim(self, now: float) -> None:
        seen = self._seen
        while seen:
            key, (at, future) = next(iter(seen.items()))
            if (now - at < self.ttl_s and len(seen) < self.limit) or not future.done():
                break
            del seen[key]
