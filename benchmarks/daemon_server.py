"""The daemon the benchmark measures, in a process of its own: ``pi-xi serve``'s app and server
(``create_app`` + ``server_for``: FastAPI on uvicorn, httptools, uvloop) serving a SQLite store,
plus one route that does nothing (``POST /bench/noop``), the ceiling of the HTTP layer on the
same stack, in the same process. Prints the port, then serves until killed.

Usage: ``python daemon_server.py <state dir>``."""

from __future__ import annotations

import sys
from pathlib import Path


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

    @app.post("/bench/noop", include_in_schema=False)
    async def noop() -> dict[str, bool]:
        return {"ok": True}

    sock = bind("127.0.0.1", 0)
    print(sock.getsockname()[1], flush=True)
    server_for(app).run(sockets=[sock])


if __name__ == "__main__":
    main()
