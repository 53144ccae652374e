"""The daemon the benchmark measures, in a process of its own: ``pi-xi serve``'s app and server
(``create_app`` + ``server_for``: FastAPI on uvicorn, httptools, uvloop) serving a SQLite store,
plus two endpoints that do nothing, the ceiling of the HTTP layer on the same stack, in the same
process: ``POST /bench/noop`` answered where the store protocol is (plain ASGI behind the same
token and request-id layers), and ``POST /bench/noop-route``, a FastAPI route as the public API
has. Prints the port, then serves until killed.

Usage: ``python daemon_server.py <state dir>``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from starlette.middleware import Middleware


class Noop:
    """``POST /bench/noop``: reads the body, answers ``{"ok":true}``; the rest goes on."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != "/bench/noop":
            await self.app(scope, receive, send)
            return
        while (await receive()).get("more_body", False):
            pass
        body = b'{"ok":true}'
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def main() -> None:
    import dataclasses

    from cross_instance.config import Config, ProviderLimits
    from cross_instance.daemon.app import create_app
    from cross_instance.daemon.serve import bind, server_for
    from cross_instance.daemon.state import Daemon
    from cross_instance.stores.sqlite.store import SqliteStore

    store = SqliteStore(Path(sys.argv[1]))
    # the limits bench_daemon's clients use (HTTP clients get the daemon's config)
    config = dataclasses.replace(Config(), total_max_llm=64,
                                 providers={"bench": ProviderLimits(10_000_000, 10_000)})
    app = create_app(Daemon(store, config))

    @app.post("/bench/noop-route", include_in_schema=False)
    async def noop() -> dict[str, bool]:
        return {"ok": True}

    # where StoreProtocol sits: innermost of the plain ASGI layers (added first)
    app.user_middleware.insert(len(app.user_middleware), Middleware(Noop))

    sock = bind("127.0.0.1", 0)
    print(sock.getsockname()[1], flush=True)
    server_for(app).run(sockets=[sock])


if __name__ == "__main__":
    main()
