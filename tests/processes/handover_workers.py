"""Worker processes of the hand-over tests (importable under spawn).

``no_poll`` makes a waiter's polls so long (1,000 s) that only a release can wake it within a
test: then a grant that arrives at all was brought by the release, and the waiter's wake-up
counters (``Wake.woken`` / ``Wake.timed_out``) say which cause ended each of its sleeps.
"""

from __future__ import annotations

import asyncio
import os
import random
import threading
import time
from pathlib import Path
from typing import Any

from cross_instance.hostfacts import identity as hostinfo
from cross_instance.runtime import Runtime, acquire, releases
from tests.helpers_runtime import make_config

NEVER_S = 1000.0


def _start(state: str, name: str, cfg: dict[str, Any]) -> Runtime:
    host = cfg.get("host")
    if host is not None:  # look like a process on another host (before anything reads it)
        os.environ["PI_XI_HOSTNAME"] = host
    cfg = {k: v for k, v in cfg.items() if k != "host"}
    return Runtime.start(cwd=Path(state).parent, config=make_config(Path(state), **cfg),
                         instance_id=name)


def _count(rt: Runtime, cause: str) -> int:
    """How many of this runtime's slot sleeps ended by ``cause`` ("woken" by a release, or
    "timed_out": the poll); -1 where the runtime does not count them."""
    return int(getattr(rt._slots.wake, cause, -1))


def _causes(rt: Runtime) -> dict[str, int]:
    """Which cause ended this runtime's slot sleeps, and what brought the wake-ups: rings of
    this host's doorbells, and announcements received from the store (Redis)."""
    bell, freed = rt._slots._doorbell, rt._slots.freed
    return {"woken": _count(rt, "woken"), "polls": _count(rt, "timed_out"),
            "rings": -1 if bell is None else bell.rings_received,
            "announced": -1 if freed is None else freed.received}


def _no_poll() -> None:
    acquire.SLOT_POLL_S = acquire.SLOT_POLL_MAX_S = NEVER_S
    acquire.SAFETY_POLL_S = acquire.SAFETY_POLL_MAX_S = NEVER_S


def hold(state: str, name: str, cfg: dict[str, Any], api: str, go: Any, out: Any) -> None:
    """Hold the permit until ``go`` is set, release it, report the release time, and stay
    registered until the test ends (``go`` cleared again)."""
    with _start(state, name, cfg) as rt:
        if api == "sync":
            p = rt.permit("p")
            out.put(("held", name, 0))
            go.wait(120)
            at = hostinfo.boottime_ns()
            p.release()
        else:
            async def run() -> int:
                p = await rt.apermit("p")
                out.put(("held", name, 0))
                await asyncio.get_running_loop().run_in_executor(None, go.wait, 120)
                at = hostinfo.boottime_ns()
                await p.arelease()
                await asyncio.sleep(0.5)  # the event loop stays up while the release is sent
                return at

            at = asyncio.run(run())
        out.put(("released", name, at))
        while go.is_set():
            time.sleep(0.05)


def wait_for_slot(state: str, name: str, cfg: dict[str, Any], api: str, no_poll: bool,
                  hold_s: float, out: Any, stay: Any = None) -> None:
    """Wait for the permit (``no_poll``: only a release can wake this waiter in time), hold
    it ``hold_s``, release it; report grant and release times and the wake-up counts. With
    ``stay`` (an event), releases are never sent by the flusher (only at once, when the
    runtime sees someone waits) and the runtime stays up while ``stay`` is set."""
    if no_poll:
        _no_poll()
    if stay is not None:
        releases.DELAY_S = NEVER_S
    with _start(state, name, cfg) as rt:
        if api == "sync":
            p = rt.permit("p", timeout=300)
            granted = hostinfo.boottime_ns()
            time.sleep(hold_s)
            released = hostinfo.boottime_ns()
            p.release()
        else:
            async def run() -> tuple[int, int]:
                p = await rt.apermit("p", timeout=300)
                granted = hostinfo.boottime_ns()
                await asyncio.sleep(hold_s)
                released = hostinfo.boottime_ns()
                await p.arelease()
                await asyncio.sleep(0.5)
                return granted, released

            granted, released = asyncio.run(run())
        out.put(("granted", name, {"granted": granted, "released": released,
                                   **_causes(rt)}))
        time.sleep(0.5)  # the release is sent before the runtime goes
        while stay is not None and stay.is_set():
            time.sleep(0.05)


def crowd(state: str, name: str, cfg: dict[str, Any], api: str, callers: int, rounds: int,
          barrier: Any, out: Any) -> None:
    """``callers`` threads or tasks each take ``rounds`` short permits; report the held
    intervals (boot clock) and the wake-up counts."""
    rng = random.Random(name)
    spans: list[tuple[int, int]] = []
    with _start(state, name, cfg) as rt:
        barrier.wait()
        if api == "sync":
            def caller() -> None:
                for _ in range(rounds):
                    with rt.permit("p", timeout=120):
                        start = hostinfo.boottime_ns()
                        time.sleep(rng.uniform(0.001, 0.006))
                        spans.append((start, hostinfo.boottime_ns()))

            threads = [threading.Thread(target=caller) for _ in range(callers)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        else:
            async def acaller() -> None:
                for _ in range(rounds):
                    async with rt.apermit("p", timeout=120):
                        start = hostinfo.boottime_ns()
                        await asyncio.sleep(rng.uniform(0.001, 0.006))
                        spans.append((start, hostinfo.boottime_ns()))

            async def run() -> None:
                await asyncio.gather(*(acaller() for _ in range(callers)))

            asyncio.run(run())
        out.put((name, spans, _count(rt, "woken")))


def cancelling_crowd(state: str, name: str, cfg: dict[str, Any], callers: int, seconds: float,
                     done: Any, barrier: Any, out: Any) -> None:
    """``callers`` asyncio tasks loop for ``seconds``: most waits give up after 1-50 ms
    (``asyncio.wait_for``; one in ten after 1 s), so cancellations fall on every step of a
    wait, among them a question that a release in this or another process started for the
    task. Reports the held intervals, then keeps the instance registered until ``done`` (the
    test looks at the store meanwhile: nothing held, nobody queued)."""
    rng = random.Random(name)
    spans: list[tuple[int, int]] = []
    with _start(state, name, cfg) as rt:
        barrier.wait()

        async def acaller() -> None:
            # ``seconds``, and on a loaded machine (a store call slower than every give-up)
            # on until this process held a permit at least once, one try in ten waiting up
            # to 1 s: the test is about what cancellations leave behind, which needs grants
            end = time.monotonic() + seconds
            bound = end + 60
            while time.monotonic() < end or (not spans and time.monotonic() < bound):
                give_up = rng.uniform(0.001, 0.05) if rng.random() < 0.9 else 1.0
                try:
                    p = await asyncio.wait_for(rt.apermit("p", timeout=30), give_up)
                except TimeoutError:
                    continue
                start = hostinfo.boottime_ns()
                await asyncio.sleep(rng.uniform(0.0005, 0.002))
                spans.append((start, hostinfo.boottime_ns()))
                await p.arelease()

        async def run() -> None:
            await asyncio.gather(*(acaller() for _ in range(callers)))

        asyncio.run(run())
        rt._slots.flush()
        out.put((name, spans, _count(rt, "woken")))
        done.wait(60)
