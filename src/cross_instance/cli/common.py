"""What every ``pi-xi`` command shares: one-line errors with an exit code, the config, output
as text or JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

import typer

from cross_instance.config import Config, load_config
from cross_instance.errors import ConfigError, StoreError
from cross_instance.stores.base import Store


def fail(message: str, code: int) -> NoReturn:
    typer.echo(f"pi-xi: {message}", err=True)
    raise typer.Exit(code)


def no_state(where: object) -> str:
    """What a command that only looks says when no instance has run here (nothing is
    created by looking)."""
    return (f"No state at {where}: no instance has run here yet (set PI_RUNTIME_DIR to use "
            f"another)")


def config() -> Config:
    try:
        return load_config()
    except ConfigError as err:
        fail(str(err), 2)


def emit(data: Any, as_json: bool, text: str) -> None:
    if as_json:
        typer.echo(json.dumps(data, indent=2, sort_keys=True))
    else:
        typer.echo(text)




def open_configured_store(cfg: Config) -> Store | None:
    """The store the config names, for looking at it: None when it is the embedded store and
    no instance has run here yet (looking never creates state). Errors exit 1, named."""
    from cross_instance.stores import open_store
    from cross_instance.stores.sqlite.db import DAMAGED_NAME, DB_NAME
    from cross_instance.stores.sqlite.store import SqliteStore

    try:
        if cfg.coordinator_addr:  # the daemon's view of the store it serves
            return open_store(f"http://{cfg.coordinator_addr}")
        if cfg.store and not cfg.store.startswith("sqlite:"):
            return open_store(cfg.store)
        directory = Path(urlsplit(cfg.store).path) if cfg.store else cfg.runtime_dir
        if not (directory / DB_NAME).exists() and not (directory / DAMAGED_NAME).exists():
            return None
        return SqliteStore(directory, create=False)
    except StoreError as err:
        from cross_instance.runtime.degraded import degraded_instances

        local = degraded_instances(cfg.runtime_dir)
        note = "".join(
            f"\n  degraded to a local share on this host: {d['instanceId']} (pid {d['pid']}, "
            f"1/{d['share']} of every limit, {d['slots']} slot(s))" for d in local)
        fail(str(err) + note, 1)
