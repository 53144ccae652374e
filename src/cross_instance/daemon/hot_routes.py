"""The permit routes of the public API as plain ASGI: acquire, release, report, heartbeat.

These are what an agent in another language sends for every call it makes, so they skip the
framework's routing, dependency solving and response validation (most of a request's time in
the daemon). They are the same routes: the body is checked by the same models, the work is
done by the same functions (``daemon.api``), errors are the same JSON, and the document at
``/v1/openapi.json`` still describes them from their FastAPI definitions, which answer any
method but ``POST`` (a 405 with ``Allow``).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel, ValidationError
from starlette.types import ASGIApp, Receive, Scope, Send

from cross_instance.daemon import api
from cross_instance.daemon.disconnect import ClientGone, until_disconnect
from cross_instance.daemon.guard import BodyTooLarge, read_body, send_json
from cross_instance.daemon.replies import CLIENT_GONE
from cross_instance.daemon.state import Daemon
from cross_instance.daemon.wire import error_body, problems_message, status_of
from cross_instance.errors import CrossInstanceError

Handler = Callable[[Daemon, Any, "str | None"], Awaitable[dict[str, Any]]]
ROUTES: dict[str, tuple[type[BaseModel], Handler]] = {
    "/v1/permits/acquire": (api.AcquireIn, api.permit_acquire),
    "/v1/permits/release": (api.ReleaseIn, api.permit_release),
    "/v1/permits/report": (api.ReportIn, api.permit_report),
    "/v1/instances/heartbeat": (api.HeartbeatIn, api.instance_heartbeat),
}


class HotRoutes:
    def __init__(self, app: ASGIApp, daemon: Daemon) -> None:
        self.app = app
        self.daemon = daemon

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = ROUTES.get(scope.get("path", "")) if scope["type"] == "http" else None
        if route is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        status, payload = await self._answer(route, headers, receive)
        await send_json(send, status, json.dumps(payload, separators=(",", ":")).encode())

    async def _answer(self, route: tuple[type[BaseModel], Handler], headers: dict[bytes, bytes],
                      receive: Receive) -> tuple[int, Any]:
        model, handler = route
        media = headers.get(b"content-type", b"application/json").split(b";")[0].strip().lower()
        try:
            data = await read_body(receive)
        except BodyTooLarge as err:
            return 413, {"code": "request_too_large", "message": str(err), "retryable": False}
        if data is None:
            return _GONE
        if not (media == b"application/json"
                or (media.startswith(b"application/") and media.endswith(b"+json"))):
            return 400, _invalid("body: expected a JSON body (Content-Type: application/json)")
        try:
            body = model.model_validate_json(data)
        except ValidationError as err:
            return 400, _invalid(problems_message(list(err.errors())))
        request_id = headers.get(b"x-pi-request-id")
        work = handler(self.daemon, body,
                       None if request_id is None else request_id.decode("latin-1"))
        try:
            return 200, await until_disconnect(work, receive)
        except CrossInstanceError as err:
            reply = error_body(err)
            return status_of(reply["code"]), reply
        except ClientGone:
            return _GONE


_GONE = CLIENT_GONE, {"code": "client_gone", "message": "the client left", "retryable": True}


def _invalid(message: str) -> dict[str, Any]:
    return {"code": "invalid_request", "message": message, "retryable": False}
