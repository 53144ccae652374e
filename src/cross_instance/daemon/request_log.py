"""Request lines in ``.pi/logs/coordinator.log`` when the daemon runs with ``--debug``.

One line per request once it has ended: method, path (no query string), status and the
milliseconds it took (an event stream's line comes when the stream ends)::

    [2026-02-25 02:00:00] HTTP POST /v1/permits/acquire 200 3.1 ms

Registered only when ``daemon.debug`` is set: without it no middleware runs and nothing is
written per request. The line costs one append to the log's queue (``LineLog`` formats and
writes on its own thread), so debugging does not slow the permit path much either. Plain ASGI.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class RequestLog:
    def __init__(self, app: ASGIApp, log: Callable[..., None]) -> None:
        self.app = app
        self.log = log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            self.log("HTTP %s %s %s %.1f ms", scope["method"], scope["path"],
                     status or "-", (time.perf_counter() - started) * 1000)
