"""A daemon app on a loopback port with its ``Daemon`` and app at hand, for the tests that
look inside (the event hub, the metrics' read count) as well as over HTTP."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from cross_instance.config import Config
from cross_instance.daemon.app import create_app
from cross_instance.daemon.serve import Served
from cross_instance.daemon.state import Daemon
from cross_instance.stores.base import Store


@dataclass
class Running:
    daemon: Daemon
    app: Any
    addr: str

    @property
    def base(self) -> str:
        return f"http://{self.addr}"


@contextmanager
def served_app(store: Store, config: Config | None = None, **daemon_options: Any
               ) -> Iterator[Running]:
    """A daemon serving ``store`` (closed afterwards) with ``config`` (default: defaults)."""
    daemon = Daemon(store, config if config is not None else Config(), **daemon_options)
    app = create_app(daemon)
    try:
        with Served(app) as served:
            yield Running(daemon, app, served.addr)
    finally:
        daemon.close()


def wait_until(condition: Callable[[], bool], what: str, limit_s: float = 30.0) -> None:
    """Wait for ``condition`` (a bound against hangs, not a measurement)."""
    deadline = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.02)
