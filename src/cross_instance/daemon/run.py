"""``pi-xi serve``: load the token, check the exposure, open the store, bind, serve until
SIGINT/SIGTERM, close the store. What it decided goes to ``.pi/logs/coordinator.log``."""

from __future__ import annotations

import os
import signal
import stat
from pathlib import Path
from typing import Any

from cross_instance.config import Config
from cross_instance.daemon.app import create_app
from cross_instance.daemon.serve import bind, check_exposure, maintenance, server_for
from cross_instance.daemon.state import Daemon
from cross_instance.errors import ConfigError
from cross_instance.runtime.logs import LineLog, log_path
from cross_instance.stores import open_store
from cross_instance.stores.base import Store

JOURNAL_NAME = "coordinator-requests.sqlite3"  # daemon.journal, in the state directory
#: How long the daemon waits for the SQLite write lock that another process holds before the
#: request fails with store_unavailable (a library process waits as long as it takes).
LOCK_WAIT_S = 2.0


def read_token_file(path: Path) -> str:
    """The token in ``path``, which only its owner may read (mode 0600 or stricter)."""
    try:
        st = path.stat()
        with open(path, encoding="utf-8") as f:
            token = f.readline().strip()
    except OSError as err:
        raise ConfigError(str(path), "", f"cannot read the token file: {err.strerror}") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(str(path), "", f"the token file is readable by others (mode "
                          f"{stat.S_IMODE(st.st_mode):04o}); chmod 600 it")
    if len(token) < 16:
        raise ConfigError(str(path), "", "the token must be at least 16 characters")
    return token


def resolve_token(token_file: Path | None, env: dict[str, str] | None = None) -> str | None:
    env = dict(os.environ) if env is None else env
    if token_file is not None:
        return read_token_file(token_file)
    token = env.get("PI_COORDINATOR_TOKEN", "").strip()
    if token:
        if len(token) < 16:
            raise ConfigError("PI_COORDINATOR_TOKEN", "", "the token must be at least 16 "
                              "characters")
        return token
    path = env.get("PI_COORDINATOR_TOKEN_FILE")
    return read_token_file(Path(path)) if path else None


def open_served_store(cfg: Config, store_url: str | None) -> Store:
    timing: dict[str, Any] = {"waiter_ttl_ns": cfg.heartbeat_timeout_ms * 10**6}
    url = store_url or cfg.store
    if url:
        if url.startswith("http:"):
            raise ConfigError("--store", "", "a daemon cannot serve another daemon's store; "
                              "give it the store URL itself")
        if url.startswith("sqlite:"):
            timing["lock_wait_s"] = LOCK_WAIT_S
        return open_store(url, **timing)
    from cross_instance.stores.sqlite.store import SqliteStore

    return SqliteStore(cfg.runtime_dir, waiter_ttl_ns=timing["waiter_ttl_ns"],
                       lock_wait_s=LOCK_WAIT_S)


def _stopped(signum: int, frame: object) -> None:
    """SIGTERM: uvicorn stops gracefully, then raises the signal again once its own handler is
    gone; this makes that a clean exit (status 0, the store closed), not a kill."""
    raise SystemExit(0)


def run(cfg: Config, *, host: str, port: int, store_url: str | None = None,
        token_file: Path | None = None, debug: bool = False, cwd: Path | None = None) -> None:
    token = resolve_token(token_file)
    check_exposure(host, token)
    store = open_served_store(cfg, store_url)
    log = LineLog(log_path(cwd or Path.cwd(), "coordinator"), "coordinator")
    try:
        sock = bind(host, port)
        daemon = Daemon(store, cfg, token, log=log, debug=debug,
                        journal=cfg.runtime_dir / JOURNAL_NAME)
        for warning in store.warnings:
            log("Store warning: %s", warning)
        log("Coordinator listening on %s:%d, serving %s%s", host, port, daemon.serves,
            " (token required)" if token else "")
        log("Gateway routes: %s", ", ".join(
            f"/{name}/v1 -> {up.base_url}" for name, up in cfg.upstream_table().items()))
        app = create_app(daemon, lifespan=maintenance(daemon, log,
                                                      cfg.heartbeat_interval_ms / 1000))
        signal.signal(signal.SIGTERM, _stopped)
        try:
            server_for(app).run(sockets=[sock])
        finally:
            log("Coordinator on %s:%d stopped", host, port)
    finally:
        store.close()
        log.close()
