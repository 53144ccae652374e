"""``pi-xi store recover``: the way back from a damaged embedded database without ever handing
out an epoch or a lock token twice. Exit codes: 0 recovered, 1 refused (sound database, a
process still using it, or not the embedded store), 2 bad input."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional
from urllib.parse import urlsplit

import typer

from cross_instance.cli.common import config, emit, fail
from cross_instance.errors import StoreError

store_app = typer.Typer(help="The embedded store's database file: recover it when damaged.")
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
FloorOpt = Annotated[Optional[int], typer.Option(  # noqa: UP045 - typer needs Optional
    "--floor", min=0, help="Start epochs and lock tokens above this value too (for example "
    "the highest epoch your logs show).")]


@store_app.command("recover")
def recover(floor: FloorOpt = None, as_json: JsonOpt = False) -> None:
    """Move a damaged coordinator.sqlite3 aside and start a new one above the old epochs."""
    from cross_instance.stores.sqlite.db import recover as run

    cfg = config()
    if cfg.store and not cfg.store.startswith("sqlite:"):
        fail("`store recover` is for the embedded SQLite store; this config uses "
             f"{cfg.store.split(':', 1)[0]}", 1)
    directory = Path(urlsplit(cfg.store).path) if cfg.store else cfg.runtime_dir
    try:
        done = run(directory, floor)
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
