"""Running the daemon: ``pi-xi serve`` and ``Served`` (a daemon on a background thread, for
tests, benchmarks and programs that embed it).

Promises:
- Loopback (127.0.0.1, ::1, localhost) by default; any other address needs a token, else the
  daemon refuses to start and says why.
- A port already taken is one clear message naming it, and saying so when the holder is
  another ``pi-xi serve``.
- The store is checked before the socket is bound; dead instances are reaped and expired
  locks freed every heartbeat interval, whoever else is running.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import json
import socket
import threading
import urllib.request
from collections.abc import AsyncIterator, Callable
from typing import Any

import uvicorn

from cross_instance.daemon.state import Daemon
from cross_instance.errors import ConfigError, CrossInstanceError
from cross_instance.runtime.logs import LineLog

LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost"})


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, token: str | None) -> None:
    """Refuse to serve a non-loopback address without a token."""
    if not is_loopback(host) and not token:
        raise ConfigError(
            "pi-xi serve", "--host",
            f"{host} is reachable from other machines, so the daemon needs a token: set "
            "PI_COORDINATOR_TOKEN, or PI_COORDINATOR_TOKEN_FILE naming a file of mode 0600 "
            "(clients send the same token)")


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, or ``ConfigError`` naming the port (and the holder when it is
    another ``pi-xi serve``)."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    try:
        return socket.create_server((host.strip("[]"), port), family=family, backlog=1024)
    except OSError as err:
        if err.errno == errno.EADDRINUSE:
            holder = " by another program"
            if _is_daemon(host, port):
                holder = " by another `pi-xi serve` (a coordinator already runs there)"
            raise ConfigError("pi-xi serve", "--port",
                              f"port {port} on {host} is already in use{holder}") from None
        raise ConfigError("pi-xi serve", "--host",
                          f"cannot listen on {host}:{port}: {err.strerror}") from None


def _is_daemon(host: str, port: int) -> bool:
    where = f"[{host}]" if ":" in host else host
    try:
        with urllib.request.urlopen(f"http://{where}:{port}/v1/health", timeout=1.0) as r:
            return bool(json.loads(r.read()).get("service") == "pi-xi")
    except Exception:  # noqa: BLE001 - anything else answering there is "another program"
        return False


def maintenance(daemon: Daemon, log: LineLog | None, every_s: float
                ) -> Callable[[Any], contextlib.AbstractAsyncContextManager[None]]:
    """The app's lifespan: reap dead instances and free expired locks every ``every_s``."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        async def loop() -> None:
            while True:
                await asyncio.sleep(every_s)
                try:
                    dead = await daemon.run(daemon.store.reap)
                    await daemon.run(daemon.store.cleanup_expired_locks)
                except Exception as err:  # noqa: BLE001 - a bad record must not end the loop
                    if log is not None:
                        log("Maintenance failed: %s", err if isinstance(
                            err, CrossInstanceError) else repr(err))
                    continue
                if dead and log is not None:
                    log("Reaped %d dead instance(s): %s", len(dead), ", ".join(dead))

        task = asyncio.create_task(loop())
        try:
            yield
        finally:
            task.cancel()

    return lifespan


class _Server(uvicorn.Server):
    """Ends the app's open event streams as soon as shutdown begins (uvicorn tells the app
    nothing until its connections are done, and a stream is never done on its own)."""

    async def shutdown(self, sockets: Any = None) -> None:
        from cross_instance.daemon.events_stream import close_streams

        close_streams(self.config.app)
        await super().shutdown(sockets)
        daemon = getattr(getattr(self.config.app, "state", None), "daemon", None)
        for close in getattr(daemon, "closers", ()):
            await close()  # after the connections: a stream still open used the pool


def server_for(app: Any, *, log_level: str = "warning") -> uvicorn.Server:
    """A uvicorn server for ``app``: httptools and uvloop where installed, no access log."""
    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:
        loop = "asyncio"
    try:
        import httptools  # noqa: F401

        http = "httptools"
    except ImportError:
        http = "h11"
    config = uvicorn.Config(app, loop=loop, http=http, log_config=None, access_log=False,
                            log_level=log_level, lifespan="on", timeout_keep_alive=75,
                            timeout_graceful_shutdown=2, proxy_headers=False)
    return _Server(config)


class Served:
    """A daemon serving ``app`` on a background thread (``with Served(app) as s: s.addr``)."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        self.sock = bind(host, port)
        self.port = self.sock.getsockname()[1]
        self.addr = f"{host}:{self.port}"
        self.server = server_for(app)
        self.thread = threading.Thread(target=self._run, name="pi-xi-serve", daemon=True)

    def _run(self) -> None:
        self.server.run(sockets=[self.sock])

    def __enter__(self) -> Served:
        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("the daemon thread ended before it started serving")
            threading.Event().wait(0.005)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()
