"""A long-poll whose client leaves: the work it waits for is cancelled, so its place in a queue
(a permit wait, a lock wait) goes back at once instead of being granted to nobody."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import TypeVar

from starlette.types import Receive

T = TypeVar("T")


class ClientGone(Exception):
    """The client closed its connection before its answer was ready."""


async def until_disconnect(work: Awaitable[T], receive: Receive) -> T:
    """``work``'s result, or ``ClientGone`` once the client disconnects first: ``work`` is
    cancelled then, so a long-poll gives its place in the queue back (a wait in the store,
    a lock wait) instead of being granted to nobody."""
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(_disconnected(receive))
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    raise ClientGone


class Watch:
    """While it runs, cancels the task that made it as soon as the client disconnects
    (``gone`` then says why the task was cancelled): one watcher for a whole request that
    waits and streams, where ``until_disconnect`` would start two tasks per wait."""

    def __init__(self, receive: Receive) -> None:
        self.gone = False
        self._task = asyncio.current_task()
        self._watch = asyncio.ensure_future(_disconnected(receive))
        self._watch.add_done_callback(self._fired)

    def _fired(self, watch: asyncio.Future[None]) -> None:
        if not watch.cancelled() and watch.exception() is None and self._task is not None:
            self.gone = True
            self._task.cancel()

    def stop(self) -> None:
        """No more cancelling (the answer is out, or the request is done)."""
        self._watch.remove_done_callback(self._fired)
        self._watch.cancel()


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
