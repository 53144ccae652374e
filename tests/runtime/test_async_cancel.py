"""An asyncio wait cancelled while its store call is on the way leaks nothing, on every store.

The store call of ``apermit`` runs in an executor thread, which a cancellation cannot stop:
the call still grants a permit or queues the wait. Before, the answer was dropped with the
cancelled task, so a grant held a slot until the process left and a queued wait stood at the
head of the queue, holding everyone behind it, until its owner's silence outlived the
heartbeat timeout. Now the cancelled wait takes the answer, gives a grant back and leaves
the queue, and then the cancellation goes on. Each test stops the store call midway (an event)
and cancels the task right then: the first call of a wait, and a later one."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cross_instance.runtime import Runtime
from tests.conftest import redis_prefix
from tests.helpers_runtime import make_config


@pytest.fixture(params=["sqlite", "redis"])
def runtime(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Runtime]:
    def start(store: str | None) -> Runtime:
        cfg = make_config(tmp_path / "state", total=1, rpm=600_000, burst=1000, store=store,
                          timeout_ms=60_000, interval_ms=1000)
        return Runtime.start(cwd=tmp_path, config=cfg, instance_id="w")

    if request.param == "sqlite":
        with start(None) as rt:
            yield rt
        return
    with redis_prefix("pi-cancel") as url, start(url) as rt:
        yield rt


class Paused:
    """Wraps the store's ``acquire``: the ``n``-th call (from 1) waits at ``entered`` until
    ``go`` is set, so a test can cancel the caller while the call is on the way."""

    def __init__(self, rt: Runtime, n: int) -> None:
        assert rt.store is not None
        self.inner: Callable[..., Any] = rt.store.acquire
        self.n, self.calls = n, 0
        self.entered, self.go = threading.Event(), threading.Event()
        rt.store.acquire = self  # type: ignore[method-assign]

    def __call__(self, *args: Any, **kw: Any) -> Any:
        self.calls += 1
        if self.calls == self.n:
            self.entered.set()
            self.go.wait(30)
        return self.inner(*args, **kw)


async def _cancel_midway(rt: Runtime, paused: Paused) -> None:
    """Start an ``apermit`` wait, cancel it while its ``paused`` call is on the way, then let
    the call finish; the task ends cancelled."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(rt.apermit("p", timeout=30))
    assert await loop.run_in_executor(None, paused.entered.wait, 30)
    task.cancel()
    await asyncio.sleep(0.05)
    paused.go.set()
    with pytest.raises(asyncio.CancelledError):
        await task


def _settled(rt: Runtime, held: int) -> None:
    """Within a few seconds the store holds ``held`` permits and queues nobody."""
    assert rt.store is not None
    end = time.monotonic() + 5
    while True:
        rt._slots.flush()
        snap = rt.store.snapshot()
        if (len(snap.permits), snap.waiting) == (held, 0) or time.monotonic() > end:
            break
        time.sleep(0.02)
    assert (len(snap.permits), snap.waiting) == (held, 0), snap


def test_a_grant_that_arrives_after_the_cancel_is_given_back(runtime):
    paused = Paused(runtime, 1)  # the first call: the slot is free, so it grants
    asyncio.run(_cancel_midway(runtime, paused))
    _settled(runtime, held=0)
    with runtime.permit("p", timeout=5):  # the only slot is free again
        pass


def test_a_wait_queued_by_the_cancelled_call_leaves_the_queue(runtime):
    holder = runtime.permit("p")
    paused = Paused(runtime, 1)  # the first call of the wait: the slot is held, it queues
    asyncio.run(_cancel_midway(runtime, paused))
    _settled(runtime, held=1)
    holder.release()
    _settled(runtime, held=0)


def test_a_later_call_of_the_wait_that_grants_is_given_back(runtime):
    holder = runtime.permit("p")
    paused = Paused(runtime, 2)  # the wait queues, then its next call comes after the release

    async def run() -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(runtime.apermit("p", timeout=30))
        await asyncio.sleep(0.05)
        await holder.arelease()  # wakes the waiter: its next call carries the release
        assert await loop.run_in_executor(None, paused.entered.wait, 30)
        task.cancel()
        await asyncio.sleep(0.05)
        paused.go.set()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run())
    _settled(runtime, held=0)
    with runtime.permit("p", timeout=5):
        pass


def test_many_waits_cancelled_at_random_moments_leave_nothing_behind(runtime):
    """Tasks give up after 0.5-4 ms (``asyncio.wait_for``) for a second: every moment of a
    wait gets cancelled some time (its first call, the look at the doorbells, its sleep, a
    later call). Afterwards nothing is held and nobody queues; before, hundreds of waits stood
    in the queue and the slot was held for good."""
    import random

    from cross_instance.errors import RateLimitExceeded

    async def caller(seed: int) -> int:
        rng, granted = random.Random(seed), 0
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            try:
                p = await asyncio.wait_for(runtime.apermit("p", timeout=rng.choice([None, 0.002])),
                                           rng.uniform(0.0005, 0.004))
            except (TimeoutError, RateLimitExceeded):
                continue
            granted += 1
            await asyncio.sleep(rng.uniform(0.0005, 0.002))
            await p.arelease()
        return granted

    async def run() -> list[int]:
        return await asyncio.gather(*(caller(i) for i in range(8)))

    asyncio.run(run())
    _settled(runtime, held=0)


def test_a_lock_taken_by_a_call_that_arrives_after_the_cancel_is_released(runtime):
    """The same for ``aacquire_lock``: the lock is free at once, not after its TTL."""
    assert runtime.store is not None
    inner = runtime.store.acquire_lock
    entered, go = threading.Event(), threading.Event()

    def paused(*args: Any, **kw: Any) -> Any:
        entered.set()
        go.wait(30)
        return inner(*args, **kw)

    runtime.store.acquire_lock = paused  # type: ignore[method-assign]

    async def run() -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(runtime.locks.aacquire("res", ttl=60, timeout=30))
        assert await loop.run_in_executor(None, entered.wait, 30)
        task.cancel()
        await asyncio.sleep(0.05)
        go.set()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run())
    runtime.store.acquire_lock = inner  # type: ignore[method-assign]
    held = runtime.locks.try_acquire("res", ttl=5)
    assert held is not None  # free now, not in 60 s
    held.release()
