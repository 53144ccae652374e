"""Requests applied once: a ``POST`` carrying ``X-Pi-Request-Id`` that was seen before with the
same body gets the first one's reply (status, headers, body) instead of running again; one still
running is waited for. The body is part of the key, so two clients that happen to pick the same
id (a counter, say) each get their own reply; a request whose client left before its body was
whole is not applied at all, so its retry runs. An id longer than ``MAX_REQUEST_ID`` is a 400.
Plain ASGI, in front of every route (the public API and the store protocol). With a journal
(``pi-xi serve`` has one) this holds across a restart of the daemon too (``daemon.journal``).
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Awaitable, Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cross_instance.daemon.guard import BodyTooLarge, read_body, send_error
from cross_instance.daemon.journal import RESEND_SAFE, UNKNOWN, Journal
from cross_instance.daemon.replies import MAX_REQUEST_ID, Replies, kept

HEADER = b"x-pi-request-id"
Captured = tuple[int, bytes]


async def _durably(journal: Journal, key: str,
                   apply: Callable[[], Awaitable[tuple[int, bytes]]]) -> tuple[int, bytes]:
    """``apply()`` at most once across restarts of the daemon (``daemon.journal``)."""
    found = journal.find(key)
    if found == UNKNOWN:
        body = json.dumps({"code": "request_outcome_unknown", "retryable": False, "message": (
            "this request id was being applied when the coordinator stopped: it may or may "
            "not have taken effect, and is not applied again; read the state to see")}).encode()
        return 409, b"content-type:application/json\x00" + body
    if isinstance(found, tuple):
        return found
    journal.intend(key)
    status, packed = await apply()
    if not kept(status):
        journal.forget(key)
    else:
        journal.done(key, status, packed)
    return status, packed


class Once:
    def __init__(self, app: ASGIApp, replies: Replies, journal: Journal | None = None) -> None:
        self.app = app
        self.replies = replies
        self.journal = journal

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        request_id = next((v for k, v in scope["headers"] if k == HEADER), None)
        if request_id is None:
            await self.app(scope, receive, send)
            return
        if len(request_id) > MAX_REQUEST_ID:
            await send_error(send, 400, "invalid_request",
                         f"x-pi-request-id is longer than {MAX_REQUEST_ID} characters")
            return
        try:
            whole = await read_body(receive)
        except BodyTooLarge as err:
            await send_error(send, 413, "request_too_large", str(err))
            return
        if whole is None:
            return  # the client left before its request was whole: nothing applied
        body: bytes | None = whole
        messages: list[Message] = []

        async def replay() -> Message:
            nonlocal body
            if body is not None:
                message, body = {"type": "http.request", "body": body, "more_body": False}, None
                return message
            return await receive()

        async def apply() -> tuple[int, bytes]:
            async def keep(message: Message) -> None:
                messages.append(message)

            await self.app(scope, replay, keep)
            start = next((m for m in messages if m["type"] == "http.response.start"), None)
            data = b"".join(m.get("body", b"") for m in messages
                            if m["type"] == "http.response.body")
            status = 500 if start is None else int(start["status"])
            headers = b"" if start is None else b"\n".join(
                k + b":" + v for k, v in start.get("headers", []))
            return status, headers + b"\x00" + data

        digest = hashlib.blake2b(whole, digest_size=16).hexdigest()
        key = f"{scope['path']}\x00{request_id.decode('latin-1')}\x00{digest}"
        journal = self.journal if scope["path"] not in RESEND_SAFE else None
        status, packed = await self.replies.once(
            key, apply if journal is None else functools.partial(_durably, journal, key, apply))
        headers, _, data = packed.partition(b"\x00")
        await send({"type": "http.response.start", "status": status, "headers": [
            tuple(line.split(b":", 1)) for line in headers.split(b"\n") if line]})
        await send({"type": "http.response.body", "body": data})
