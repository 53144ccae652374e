"""The daemon's ASGI app: ``create_app(daemon)``.

Composable: the routes of each capability are a list or a router of their own (the store
protocol, the public API, events, metrics), or a layer of their own (the provider gateway's
``/{provider}/v1/...``, in front of the rest). Every error of the daemon's own routes is JSON
with a stable ``code``; a request the API cannot use is a 4xx naming the problem, never a
500 (the gateway's errors are shaped as the provider's).
"""

from __future__ import annotations

import inspect
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from cross_instance.daemon import store_routes
from cross_instance.daemon.guard import BodyTooLarge, Guard
from cross_instance.daemon.once import Once
from cross_instance.daemon.state import Daemon
from cross_instance.daemon.wire import error_body, problems_message, status_of
from cross_instance.errors import CrossInstanceError

SERVICE = "pi-xi"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pi-cross-instance")
    except PackageNotFoundError:  # run from a source tree
        return "0+unknown"


# FastAPI >= 0.13x looks for OpenTelemetry providers on every request unless told not to
# (a fifth of a permit's time in the daemon); older releases have no such option
_NO_TELEMETRY: dict[str, Any] = (
    {"telemetry": {"tracing": False, "metrics": False, "logs": False}}
    if "telemetry" in inspect.signature(FastAPI.__init__).parameters else {})


def _json_error(code: str, message: str, status: int | None = None) -> JSONResponse:
    return JSONResponse({"code": code, "message": message, "retryable": False},
                        status_code=status or status_of(code))


async def _invalid(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return _json_error("invalid_request", problems_message(list(exc.errors())))


async def _known(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, CrossInstanceError)
    body = error_body(exc)
    return JSONResponse(body, status_code=status_of(body["code"]))


async def _http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if isinstance(exc.__cause__, BodyTooLarge):  # FastAPI's body reader wraps it in a 400
        return await _too_large(request, exc.__cause__)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "invalid_request")
    reply = _json_error(code, str(exc.detail), exc.status_code)
    reply.headers.update(exc.headers or {})  # a 405's Allow (RFC 9110)
    return reply


async def _too_large(request: Request, exc: Exception) -> Response:
    return _json_error("request_too_large", str(exc), 413)


def create_app(daemon: Daemon, *, lifespan: Any = None) -> FastAPI:
    """The app serving ``daemon``'s store: health, the store protocol, the public API."""
    from cross_instance.daemon import events_stream, metrics
    from cross_instance.daemon.api import router as api_router
    from cross_instance.daemon.hot_routes import HotRoutes
    from cross_instance.daemon.request_log import RequestLog
    from cross_instance.gateway import Gateway
    from cross_instance.gateway.routing import provider_segment

    app = FastAPI(title="pi-cross-instance coordinator", version=_version(),
                  openapi_url="/v1/openapi.json", docs_url="/v1/docs", redoc_url=None,
                  lifespan=lifespan, **_NO_TELEMETRY)
    app.state.daemon = daemon
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(CrossInstanceError, _known)
    app.add_exception_handler(HTTPException, _http)
    app.add_exception_handler(BodyTooLarge, _too_large)

    @app.get("/v1/health", tags=["daemon"])
    async def health() -> dict[str, Any]:
        """Whether the daemon runs, and what it serves (the only route without the token)."""
        return {"service": SERVICE, "version": app.version, "ok": True}

    app.include_router(api_router)
    app.include_router(events_stream.router)  # GET /v1/events
    app.include_router(metrics.router_for(daemon))  # GET /metrics, counting from now
    app.add_middleware(HotRoutes, daemon=daemon)  # the permit routes, plain ASGI
    app.add_middleware(store_routes.StoreProtocol, daemon=daemon)  # /v1/store, plain ASGI
    app.add_middleware(Once, replies=daemon.replies, journal=daemon.journal)
    app.add_middleware(Gateway, daemon=daemon)  # /{provider}/v1/...: the provider gateway
    app.add_middleware(Guard, token=daemon.token, max_body=daemon.max_body,  # outermost
                       is_gateway=lambda path: provider_segment(path) is not None,
                       gateway_max_body=daemon.config.gateway_settings().max_body_bytes)
    if daemon.debug:  # one coordinator.log line per request (401s too), only when debugging
        app.add_middleware(RequestLog, log=daemon.log)
    return app
