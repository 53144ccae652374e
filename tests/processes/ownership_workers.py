"""Worker bodies for the ownership and lock process tests (importable under spawn)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cross_instance.errors import CrossInstanceError, LockLostError, WorkflowOwnedError
from cross_instance.runtime import Runtime
from tests.helpers_runtime import make_config


def claimer(state: str, name: str, signals: Any, out: Any, store: str | None = None) -> None:
    """At each round's signal claim workflow "wf"; report the epoch won or the error payload.
    Signals come on this worker's own pipe: a process killed while waiting on a shared
    ``multiprocessing.Event`` would leave it locked for everyone."""
    cfg = make_config(Path(state), interval_ms=300, timeout_ms=3000, store=store)
    with Runtime.start(cwd=Path(state).parent, config=cfg, instance_id=name) as rt:
        out.put(("ready", name, os.getpid(), None))
        while (r := signals.recv()) != "done":
            try:
                wf = rt.workflows.claim("wf")
                out.put((r, name, os.getpid(), {"epoch": wf.epoch, "action": wf.action}))
            except WorkflowOwnedError as err:
                out.put((r, name, os.getpid(), err.payload()))


def paused_holder(state: str, commands: Any, out: Any, store: str | None = None) -> None:
    """Own workflow "wf" and lock "res", then answer commands: a paused-and-resumed holder."""
    cfg = make_config(Path(state), interval_ms=100, timeout_ms=600, store=store)
    with Runtime.start(cwd=Path(state).parent, config=cfg, instance_id="holder") as rt:
        wf = rt.workflows.claim("wf")
        wf.write(step=1)
        lost: list[str] = []
        try:
            with rt.locks.hold("res", ttl=0.6,
                               on_lost=lambda h, e: lost.append(e.reason)) as held:
                out.put(("ready", os.getpid(), wf.epoch, held.token))
                for command in iter(commands.get, "stop"):
                    if command == "write":
                        _answer_write(wf, out)
                    elif command == "lock":
                        try:
                            held.ensure()
                            out.put(("lock", "held", lost))
                        except CrossInstanceError as err:
                            out.put(("lock", err.code, lost))
        except LockLostError:
            pass  # reported above; leaving the block says it again


def lock_holder(state: str, out: Any, store: str | None = None) -> None:
    """Hold lock "res" (a long TTL) and workflow "wf", then wait to be killed."""
    import time

    cfg = make_config(Path(state), interval_ms=200, timeout_ms=30_000, store=store)
    rt = Runtime.start(cwd=Path(state).parent, config=cfg, instance_id="victim")
    held = rt.locks.try_acquire("res", ttl=60)
    wf = rt.workflows.claim("wf")
    out.put((os.getpid(), held.token if held else None, wf.epoch))
    time.sleep(600)


def stalled_holder(state: str, commands: Any, out: Any, store: str | None = None) -> None:
    """Own workflow "wf", then stall the heartbeat thread (a starved thread: the process and
    its other threads run on) and answer commands."""
    import threading

    cfg = make_config(Path(state), interval_ms=100, timeout_ms=1000, store=store)
    with Runtime.start(cwd=Path(state).parent, config=cfg, instance_id="stalled") as rt:
        wf = rt.workflows.claim("wf")
        wf.write(step=1)
        never = threading.Event()
        membership = rt.session.membership
        membership.beat = lambda: never.wait()  # type: ignore[method-assign]
        out.put(("ready", os.getpid(), wf.epoch))
        for command in iter(commands.get, "stop"):
            if command == "write":
                _answer_write(wf, out)
        never.set()


def _answer_write(wf: Any, out: Any) -> None:
    """A fenced write of step 2, answered as ("write", "accepted" or the refusal's code)."""
    try:
        wf.write(step=2)
        out.put(("write", "accepted"))
    except CrossInstanceError as err:
        out.put(("write", err.code))
