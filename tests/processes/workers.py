"""Bodies of the worker processes used by the multi-process tests (importable under spawn)."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path
from typing import Any

from cross_instance.hostfacts import identity as hostinfo
from cross_instance.runtime import Runtime
from tests.helpers_runtime import make_config


def _start(state: str, name: str, **cfg: Any) -> Runtime:
    return Runtime.start(cwd=Path(state).parent, config=make_config(Path(state), **cfg),
                         instance_id=name)


def saturate(state: str, name: str, seconds: float, cfg: dict[str, Any], barrier: Any,
             out: Any) -> None:
    """Take permits as fast as they come for ``seconds``; report grant times (store clock)."""
    with _start(state, name, **cfg) as rt:
        barrier.wait()
        end = time.monotonic() + seconds
        grants = []
        while time.monotonic() < end:
            with rt.permit("p", timeout=30) as p:
                grants.append(p.granted_ns)
        out.put((name, grants))


def hold_briefly(state: str, name: str, rounds: int, cfg: dict[str, Any], barrier: Any,
                 out: Any) -> None:
    """Hold a permit a few ms at a time; report [after grant, before release] intervals."""
    rng = random.Random(name)
    with _start(state, name, **cfg) as rt:
        barrier.wait()
        spans = []
        for _ in range(rounds):
            with rt.permit("p", timeout=30):
                start = hostinfo.boottime_ns()
                time.sleep(rng.uniform(0.001, 0.008))
                spans.append((start, hostinfo.boottime_ns()))
        out.put((name, spans))


def hold_forever(state: str, name: str, n: int, cfg: dict[str, Any], ready: Any) -> None:
    rt = _start(state, name, **cfg)
    held = [rt.permit("p") for _ in range(n)]
    ready.put((os.getpid(), len(held)))
    time.sleep(600)


def open_store_together(state: str, barrier: Any, out: Any) -> None:
    from cross_instance.stores.sqlite.store import SqliteStore
    from tests.conftest import record

    barrier.wait()
    try:
        store = SqliteStore(state)
        try:  # one database for all: each epoch is handed out once
            store.register_instance(record(f"opener-{os.getpid()}"))
            claim = store.claim_workflow("wf", f"opener-{os.getpid()}")
            out.put(("ok", store.db._files[0], claim.epoch if claim.decision.action.moves
                     else 0))
        finally:
            store.close()
    except Exception as err:  # noqa: BLE001 - reported to the test
        out.put(repr(err))


def storm(state: str, name: str, url: str, calls: int, barrier: Any, out: Any) -> None:
    """Take ``calls`` permits, wait until every process holds its own, then send them all at
    once to the provider and report the answers; finally try for one more permit."""
    import concurrent.futures

    import httpx

    cfg = {"rpm": 6000, "burst": 100, "total": 64}
    with _start(state, name, **cfg) as rt, httpx.Client() as http:
        permits = [rt.permit("p") for _ in range(calls)]
        barrier.wait()  # every grant happened before any answer is reported
        body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
        with concurrent.futures.ThreadPoolExecutor(calls) as pool:
            answers = list(pool.map(lambda _: http.post(url, json=body), permits))
        for p, r in zip(permits, answers, strict=False):
            p.report(r.status_code, r.headers)
            p.release()
        barrier.wait()  # every report is in
        out.put((name, [r.status_code for r in answers], rt.try_permit("p") is None))
