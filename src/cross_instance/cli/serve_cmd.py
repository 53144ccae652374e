"""``pi-xi serve``: the coordinator daemon (``cross_instance.daemon``) in the foreground."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cross_instance.cli.common import config as _config
from cross_instance.cli.common import fail
from cross_instance.errors import ConfigError, StoreError

HostOpt = Annotated[str, typer.Option(
    help="Address to listen on; anything but loopback needs a token.")]
PortOpt = Annotated[int | None, typer.Option(
    min=1, max=65535, help="Port (default: coordinatorPort / PI_COORDINATOR_PORT, 8765).")]
StoreOpt = Annotated[str | None, typer.Option(
    help="Store URL to serve (default: the config's store, else the embedded SQLite one).")]
TokenFileOpt = Annotated[Path | None, typer.Option(
    help="File holding the token (mode 0600); default PI_COORDINATOR_TOKEN(_FILE).")]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Log every request.")]


def serve(host: HostOpt = "127.0.0.1", port: PortOpt = None, store: StoreOpt = None,
          token_file: TokenFileOpt = None, debug: DebugOpt = False) -> None:
    """Run the coordinator daemon: the HTTP API every language uses (see docs/daemon.md)."""
    from cross_instance.daemon.run import run

    cfg = _config()
    try:
        run(cfg, host=host, port=port if port is not None else cfg.coordinator_port,
            store_url=store, token_file=token_file, debug=debug)
    except ConfigError as err:
        fail(str(err), 2)
    except StoreError as err:
        fail(str(err), 1)
