"""The daemon's gate, before any route: the token, and a bound on request bodies.

A path or query string whose percent-encoded bytes are not UTF-8 gets 400: decoded, it would
name something else (every bad byte becomes U+FFFD). When a token is set, every request but
``/v1/health`` must carry it (``Authorization: Bearer
<token>``); any other gets 401 with a JSON error and nothing else (no hint of what exists). A
body longer than ``max_body`` bytes gets 413 before it is read to the end. Plain ASGI: it
costs one header look-up per request on the permit path.

The provider gateway's paths (``is_gateway``) carry the caller's own API key in
``Authorization``, which belongs to the provider: there the token travels as
``X-Pi-Token: <token>``, and bodies are bounded by ``gateway_max_body`` (prompts with images
are large).
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable, Iterable
from urllib.parse import unquote_to_bytes

from starlette.types import ASGIApp, Message, Receive, Scope, Send

OPEN_PATHS = frozenset({"/v1/health"})


async def send_json(send: Send, status: int, body: bytes,
                    headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    """Answer ``body`` (JSON) from plain ASGI: the daemon's routes that skip the framework."""
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})


async def send_error(send: Send, status: int, code: str, message: str) -> None:
    await send_json(send, status, json.dumps(
        {"code": code, "message": message, "retryable": False}).encode())


def _not_utf8(scope: Scope) -> str | None:
    """``path`` or ``query`` when that part of the request, its escapes decoded, is not UTF-8
    (a plain ASCII part, the permit path's, costs one byte search)."""
    for part, name in ((scope.get("raw_path") or b"", "path"),
                       (scope.get("query_string") or b"", "query")):
        if b"%" in part or not part.isascii():
            try:
                unquote_to_bytes(part).decode()
            except UnicodeDecodeError:
                return name
    return None


class Guard:
    def __init__(self, app: ASGIApp, token: str | None, max_body: int,
                 is_gateway: Callable[[str], bool] | None = None,
                 gateway_max_body: int | None = None) -> None:
        self.app = app
        self.token = token.encode() if token else None
        self.max_body = max_body
        self.is_gateway = is_gateway or (lambda path: False)
        self.gateway_max_body = gateway_max_body or max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        garbled = _not_utf8(scope)
        if garbled is not None:
            await send_error(send, 400, "invalid_request", f"the request's {garbled} holds "
                             "percent-encoded bytes that are not UTF-8")
            return
        gateway = self.is_gateway(scope["path"])
        if self.token is not None and scope["path"] not in OPEN_PATHS:
            if gateway:
                given = next((v for k, v in scope["headers"] if k == b"x-pi-token"), b"")
                valid = hmac.compare_digest(given.strip(), self.token)
            else:
                given = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
                scheme, _, credentials = given.partition(b" ")
                valid = (scheme.lower() == b"bearer"  # case-insensitive (RFC 9110)
                         and hmac.compare_digest(credentials.strip(), self.token))
            if not valid:
                await send_error(send, 401, "unauthorized", (
                    "a valid coordinator token is required (X-Pi-Token on gateway routes)"
                    if gateway else
                    "a valid coordinator token is required (Authorization: Bearer)"))
                return
        bound = self.gateway_max_body if gateway else self.max_body
        length = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if length is not None:
            try:
                too_long = int(length) > bound
            except ValueError:
                await send_error(send, 400, "invalid_request", "Content-Length is not a number")
                return
            if too_long:
                await send_error(send, 413, "request_too_large",
                                 f"request body over {bound} bytes")
                return
            await self.app(scope, receive, send)
            return
        await self.app(scope, self._bounded(receive, bound), send)

    def _bounded(self, receive: Receive, bound: int) -> Receive:
        """A chunked body, cut off (413) once it passes the bound."""
        seen = 0

        async def bounded() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > bound:
                    raise BodyTooLarge(bound)
            return message

        return bounded


async def read_body(receive: Receive) -> bytes | None:
    """The whole request body (``BodyTooLarge`` past the bound, from the receive ``Guard``
    gave the app), or None when the client disconnected before sending all of it: a cut
    body is never parsed, let alone applied."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


class BodyTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"request body over {limit} bytes")
