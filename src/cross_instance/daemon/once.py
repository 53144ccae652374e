"""Requests applied once: a ``POST`` carrying ``X-Pi-Request-Id`` that was seen before gets the
first one's reply (status, headers, body) instead of running again; one still running is
waited for. Plain ASGI, in front of every route (the public API and the store protocol)."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

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
            await self.app(scope, receive, send)  # the route refuses it, naming the header
            return
        messages: list[Message] = []

        async def apply() -> tuple[int, bytes]:
            async def keep(message: Message) -> None:
                messages.append(message)

            await self.app(scope, receive, keep)
            start = next((m for m in messages if m["type"] == "http.response.start"), None)
            body = b"".join(m.get("body", b"") for m in messages
                            if m["type"] == "http.response.body")
            status = 500 if start is None else int(start["status"])
            headers = b"" if start is None else b"\n".join(
                k + b":" + v for k, v in start.get("headers", []))
            return status, headers + b"\x00" + body

        key = f"{scope['path']}\x00{request_id.decode('latin-1')}"
        status, packed = await self.replies.once(key, apply)
        headers, _, body = packed.partition(b"\x00")
        await send({"type": "http.response.start", "status": status, "headers": [
            tuple(line.split(b":", 1)) for line in headers.split(b"\n") if line]})
        await send({"type": "http.response.body", "body": body})
