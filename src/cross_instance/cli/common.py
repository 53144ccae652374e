"""What every ``pi-xi`` command shares: one-line errors with an exit code, the config, output
as text or JSON."""

from __future__ import annotations

import json
from typing import Any, NoReturn

import typer

from cross_instance.config import Config, load_config
from cross_instance.errors import ConfigError


def fail(message: str, code: int) -> NoReturn:
    typer.echo(f"pi-xi: {message}", err=True)
    raise typer.Exit(code)


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


