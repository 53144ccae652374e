"""Requests applied once: a ``POST`` carrying ``X-Pi-Request-Id`` that was seen before with the
same body gets the first one's reply (status, headers, body) instead of running again; one still
running is waited for. The body is part of the key, so two clients that happen to pick the same
id (a counter, say) each get their own reply; a request whose client left before its body was
whole is not applied at all, so its retry runs. An id longer than ``MAX_REQUEST_ID`` is a 400.
Plain ASGI, in front of every route (the public API and the store protocol)."""

from __future__ import annotations

import hashlib

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cross_instance.daemon.guard import BodyTooLarge, _reply
from cross_instance.daemon.replies import MAX_REQUEST_ID, Replies

HEADER = b"x-pi-request-id"
Captured = tuple[int, bytes]


class Once:
    def __init__(self, app: ASGIApp, replies: Replies) -> None:
        self.app = app
        self.replies = replies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        request_id = next((v for k, v in scope["headers"] if k == HEADER), None)
        if request_id is None:
            await self.app(scope, receive, send)
            return
        if len(request_id) > MAX_REQUEST_ID:
            await _reply(send, 400, "invalid_request",
                         f"x-pi-request-id is longer than {MAX_REQUEST_ID} characters")
            return
        whole = bytearray()
        try:
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    return  # the client left before its request was whole: nothing applied
                whole += message.get("body", b"")
                if not message.get("more_body", False):
                    break
        except BodyTooLarge as err:
            await _reply(send, 413, "request_too_large", str(err))
            return
        body: bytes | None = bytes(whole)
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
        status, packed = await self.replies.once(key, apply)
        headers, _, data = packed.partition(b"\x00")
        await send({"type": "http.response.start", "status": status, "headers": [
            tuple(line.split(b":", 1)) for line in headers.split(b"\n") if line]})
        await send({"type": "http.response.body", "body": data})
