"""Worker processes of the cap invariant test (importable under spawn): callers that take
permits every way there is, give up in every way there is, and report the intervals they held
(boot clock)."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from pathlib import Path
from typing import Any

from cross_instance.errors import Cancelled, RateLimitExceeded
from cross_instance.hostfacts import identity as hostinfo
from cross_instance.runtime import Runtime
from tests.helpers_runtime import make_config

HOLD_S = (0.0003, 0.003)


def _start(state: str, name: str, cfg: dict[str, Any]) -> Runtime:
    return Runtime.start(cwd=Path(state).parent, config=make_config(Path(state), **cfg),
                         instance_id=name)


def _sync_caller(rt: Runtime, rng: random.Random, end: float,
                 spans: list[tuple[int, int]]) -> None:
    """``permit`` (some with a timeout of a few ms, some cancelled from another thread after
    a few ms) and ``try_permit``."""
    while time.monotonic() < end:
        way = rng.random()
        try:
            if way < 0.1:
                p = rt.try_permit("p")
                if p is None:
                    continue
            elif way < 0.2:
                cancel = threading.Event()
                threading.Timer(rng.uniform(0.0005, 0.003), cancel.set).start()
                p = rt.permit("p", timeout=10, cancel=cancel)
            else:
                p = rt.permit("p", timeout=rng.choice([10, 10, 0.003]))
        except (RateLimitExceeded, Cancelled):
            continue
        with p:
            start = hostinfo.boottime_ns()
            time.sleep(rng.uniform(*HOLD_S))
            spans.append((start, hostinfo.boottime_ns()))


async def _async_caller(rt: Runtime, rng: random.Random, end: float,
                        spans: list[tuple[int, int]]) -> None:
    """``apermit``, some given up by ``asyncio.wait_for`` after a few ms (cancelled)."""
    while time.monotonic() < end:
        try:
            wait = rt.apermit("p", timeout=rng.choice([10, 0.003]))
            if rng.random() < 0.3:
                p = await asyncio.wait_for(wait, rng.uniform(0.0005, 0.005))
            else:
                p = await wait
        except (TimeoutError, RateLimitExceeded):
            continue
        async with p:
            start = hostinfo.boottime_ns()
            await asyncio.sleep(rng.uniform(*HOLD_S))
            spans.append((start, hostinfo.boottime_ns()))


def crowd(state: str, name: str, cfg: dict[str, Any], api: str, callers: int, seconds: float,
          barrier: Any, out: Any, close: Any) -> None:
    """Callers loop for ``seconds``; report ("done", name, spans), then stay registered (and
    idle) until ``close`` is set."""
    spans: list[tuple[int, int]] = []
    with _start(state, name, cfg) as rt:
        barrier.wait(60)
        end = time.monotonic() + seconds
        if api == "sync":
            threads = [threading.Thread(target=_sync_caller,
                                        args=(rt, random.Random(f"{name}{i}"), end, spans))
                       for i in range(callers)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        else:
            async def run() -> None:
                await asyncio.gather(*(_async_caller(rt, random.Random(f"{name}{i}"), end, spans)
                                       for i in range(callers)))

            asyncio.run(run())
        out.put(("done", name, spans))
        close.wait(60)


def victim(state: str, name: str, cfg: dict[str, Any], barrier: Any, out: Any) -> None:
    """Holds permits in a loop until the test kills it (kill -9: its permits come back when
    it is found dead)."""
    rt = _start(state, name, cfg)
    barrier.wait(60)
    while True:
        with rt.permit("p", timeout=30):
            out.put(("holding", name, None))
            time.sleep(0.02)
