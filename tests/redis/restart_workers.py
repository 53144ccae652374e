"""Bodies of the worker processes of the restart tests (importable under spawn)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from cross_instance.hostfacts import identity as hostinfo
from cross_instance.runtime import Runtime
from tests.helpers_runtime import make_config


def wait_then_hold(state: str, name: str, hold_s: float, cfg: dict[str, Any], ready: Any,
                   out: Any) -> None:
    """Queue for one permit (saying so on ``ready``), hold it ``hold_s``; report the span
    it was held, on the host's boot clock."""
    config = make_config(Path(state), **cfg)
    with Runtime.start(cwd=Path(state).parent, config=config, instance_id=name) as rt:
        ready.put(name)
        with rt.permit("p", timeout=120):
            start = hostinfo.boottime_ns()
            time.sleep(hold_s)
            end = hostinfo.boottime_ns()
        out.put((name, start, end))


def take_for(state: str, name: str, seconds: float, cfg: dict[str, Any], ready: Any,
             out: Any) -> None:
    """Take permits as fast as they come for ``seconds``; report their grant times (store
    clock)."""
    config = make_config(Path(state), **cfg)
    with Runtime.start(cwd=Path(state).parent, config=config, instance_id=name) as rt:
        ready.put(name)
        end = time.monotonic() + seconds
        grants = []
        while time.monotonic() < end:
            with rt.permit("p", timeout=120) as p:
                grants.append(p.granted_ns)
        out.put((name, grants))
