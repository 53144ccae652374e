"""``pi-xi store``: the shared store itself. ``recover`` is the way back from a damaged embedded
database without ever handing out an epoch or a lock token twice; ``declare-empty`` starts a
known-new Redis prefix without the restart grace. Exit codes: 0 done, 1 refused (a sound
database, a process still using it, the wrong kind of store, a prefix already in use), 2 bad
input."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional
from urllib.parse import urlsplit

import typer

from cross_instance.cli.common import config, emit, fail, open_configured_store
from cross_instance.errors import StoreError

store_app = typer.Typer(help="The shared store itself: recover a damaged embedded database, "
                                  "declare a new Redis prefix empty.")
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
FloorOpt = Annotated[Optional[int], typer.Option(  # noqa: UP045 - typer needs Optional
    "--floor", min=0, help="Start epochs and lock tokens above this value too (for example "
    "the highest epoch your logs show).")]


ForceOpt = Annotated[bool, typer.Option(
    "--force", help="Also move aside a database that looks sound (its -wal and -shm were "
    "deleted after a crash, so lost commits cannot be seen).")]


@store_app.command("recover")
def recover(floor: FloorOpt = None, force: ForceOpt = False, as_json: JsonOpt = False) -> None:
    """Move a damaged coordinator.sqlite3 aside and start a new one above the old epochs."""
    from cross_instance.stores.sqlite.db import recover as run

    cfg = config()
    if cfg.store and not cfg.store.startswith("sqlite:"):
        fail("`store recover` is for the embedded SQLite store; this config uses "
             f"{cfg.store.split(':', 1)[0]}", 1)
    directory = Path(urlsplit(cfg.store).path) if cfg.store else cfg.runtime_dir
    try:
        done = run(directory, floor, force=force)
    except StoreError as err:
        fail(str(err), 1)
    moved = ", ".join(str(p) for p in done.moved)
    emit({"database": str(done.path), "problem": done.problem,
          "movedTo": [str(p) for p in done.moved], "highestSeen": done.highest_seen,
          "floor": done.floor}, as_json,
         f"Recovered {done.path} ({done.problem}).\n"
         f"  damaged files kept as: {moved}\n"
         f"  highest epoch or token still readable in them: {done.highest_seen or 'none'}\n"
         f"  new epochs and lock tokens start above {done.floor}\n"
         f"Workflows must be claimed again (their state is in the damaged copy); instances "
         f"can be started now.")


@store_app.command("declare-empty")
def store_declare_empty() -> None:
    """Declare a Redis key prefix new and empty: its first instance starts without the
    restart grace. Only where no instance has used the prefix since the server started."""
    from cross_instance.stores.redis.store import RedisStore

    cfg = config()
    store = open_configured_store(cfg) if cfg.store else None
    if not isinstance(store, RedisStore):
        if store is not None:
            store.close()
        fail("only a Redis store can be declared empty (set PI_STORE_URL or "
              "crossInstance.store to a redis:// URL)", 2)
    try:
        declared = store.declare_empty()
    except StoreError as err:
        fail(str(err), 1)
    finally:
        store.close()
    where = f"{store.url} prefix {store.prefix}"
    if not declared:
        fail(f"{where} is already in use: a grace that has begun is never cut short", 1)
    typer.echo(f"{where} declared new and empty: the first instance starts without the "
               "restart grace")
