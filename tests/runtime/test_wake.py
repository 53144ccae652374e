"""``acquire.Wake`` (which waiters a release wakes, and what they carry) and
``handover.Doorbell`` (the datagram between processes), without a store. No timing: the
bounds only end a hung test."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from pathlib import Path

from cross_instance.runtime.acquire import Call, Wake
from cross_instance.runtime.handover import IDLE, WAITING, Doorbell

LONG = 60.0
LAST = 10**9  # a ticket behind every other


def _busy_wake() -> Wake:
    """A ``Wake`` whose process already waits (its first waiter, which asks once more before
    sleeping, is entered and out of the way at the back of the line)."""
    wake = Wake()
    wake.enter(LAST)
    return wake


def _asleep(wake: Wake, waiters: list) -> None:
    end = time.monotonic() + LONG
    while any(w.waker is None for w in waiters):
        assert time.monotonic() < end
        time.sleep(0.001)


def _sleepers(wake: Wake, tickets: list[int]) -> tuple[list, list[threading.Thread], list[int]]:
    waiters = [wake.enter(t) for t in tickets]
    woke: list[int] = []
    lock = threading.Lock()

    def sleep(w) -> None:
        wake.sleep(w, LONG)
        with lock:
            woke.append(w.place)

    threads = [threading.Thread(target=sleep, args=(w,)) for w in waiters]
    for t in threads:
        t.start()
    _asleep(wake, waiters)
    return waiters, threads, woke


def test_a_release_wakes_the_earliest_ticket_and_the_next_one_another():
    wake = _busy_wake()
    _, threads, woke = _sleepers(wake, [30, 10, 20])
    assert wake.wake(1) == 1
    threads[1].join(LONG)
    assert woke == [10]
    assert wake.wake(1) == 1  # ticket 10 has not asked yet: the next wake-up goes to 20
    threads[2].join(LONG)
    assert woke == [10, 20]
    wake.wake(5)
    threads[0].join(LONG)
    assert sorted(woke) == [10, 20, 30]
    assert wake.woken == 3 and wake.timed_out == 0


def test_a_waiter_chosen_while_it_asks_asks_again_instead_of_sleeping():
    wake = _busy_wake()
    w = wake.enter(1)
    wake.wake(1)  # it is not asleep: it is asking the store
    wake.sleep(w, LONG)  # returns at once: woken, not timed out (LONG only ends a hang)
    assert wake.woken == 1 and wake.timed_out == 0


def test_the_first_waiter_of_a_process_asks_once_more_before_sleeping():
    """A release that rang nobody while the process was not yet shown as waiting (its
    doorbell is set up when the first waiter enters) is found by that extra question."""
    wake = Wake()
    first = wake.enter(1)
    second = wake.enter(2)
    wake.sleep(first, LONG)  # returns at once: ask again
    assert wake.timed_out == 0
    assert first.pending == 1 and second.pending == 0


def test_a_handed_release_is_carried_by_the_earliest_and_returned_if_not():
    wake = Wake()
    late, early = wake.enter(9), wake.enter(3)
    late.pending = 0  # (as after its extra question)
    assert wake.hand([111])
    assert wake.take_carry(late) == []
    assert wake.take_carry(early) == [111]
    assert wake.hand([222])  # 3 was chosen and has not asked since: 9 gets it
    assert wake.leave(late) == [222]  # it stopped waiting first: given back
    assert wake.leave(early) == []
    assert not wake.hand([333])  # nobody waits here


def test_the_doorbell_follows_whether_anyone_waits():
    changes: list[int] = []
    wake = Wake()
    wake._on_change = lambda: changes.append(wake.waiting)
    a = wake.enter(1)
    b = wake.enter(2)
    wake.leave(a)
    wake.leave(b)
    assert changes == [1, 0]


def test_an_asyncio_waiter_is_woken_from_another_thread():
    wake = _busy_wake()

    async def main() -> None:
        w = wake.enter(5)
        task = asyncio.ensure_future(wake.asleep(w, LONG))
        while w.waker is None:
            await asyncio.sleep(0.001)
        threading.Thread(target=wake.wake, args=(1,)).start()
        await asyncio.wait_for(task, LONG)

    asyncio.run(main())
    assert wake.woken == 1 and wake.timed_out == 0


def test_a_release_starts_a_woken_asyncio_waiters_next_question_itself():
    """``Sleep.then``: the thread that wakes an asyncio waiter starts its next store call in
    the executor at once (before the task's event loop has run it), and the sleep returns
    that call's answer. A sleep that times out starts nothing."""
    import concurrent.futures

    wake = _busy_wake()
    ran_in: list[str] = []

    def question(tag: str) -> str:
        ran_in.append(threading.current_thread().name)
        return f"answer {tag}"

    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="store") as pool:
        async def main() -> tuple[object, object]:
            w = wake.enter(5)
            then = Call(question, ("woken",))
            task = asyncio.ensure_future(wake.asleep(w, LONG, then, pool.submit))
            while w.waker is None:
                await asyncio.sleep(0.001)
            threading.Thread(target=wake.wake, args=(1,)).start()
            woken = await asyncio.wait_for(task, LONG)
            w2 = wake.enter(6)
            w2.pending = 0
            timed_out = await wake.asleep(w2, 0.01, Call(question, ("late",)), pool.submit)
            return woken, timed_out

        woken, timed_out = asyncio.run(main())
    assert woken == "answer woken" and ran_in == ["store_0"]
    assert timed_out is None  # nobody woke it: the task asks for itself
    assert wake.woken == 1 and wake.timed_out == 1


def test_a_waiter_cancelled_while_its_started_question_is_on_the_way_settles_the_answer():
    """The call a release started cannot be stopped: the cancelled task waits for its answer
    and hands it to ``settle`` (which gives a grant back), then ends cancelled."""
    import concurrent.futures

    wake = _busy_wake()
    entered, go = threading.Event(), threading.Event()
    settled: list[object] = []

    def question() -> str:
        entered.set()
        go.wait(LONG)
        return "granted"

    def settle(answer: object) -> None:
        settled.append(answer)

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        async def main() -> None:
            loop = asyncio.get_running_loop()
            w = wake.enter(5)
            task = asyncio.ensure_future(
                wake.asleep(w, LONG, Call(question, ()), pool.submit, None, settle))
            while w.waker is None:
                await asyncio.sleep(0.001)
            threading.Thread(target=wake.wake, args=(1,)).start()
            assert await loop.run_in_executor(None, entered.wait, LONG)
            task.cancel()
            await asyncio.sleep(0.02)
            assert not task.done()  # still waiting for the answer
            go.set()
            try:
                await asyncio.wait_for(task, LONG)
            except asyncio.CancelledError:
                return
            raise AssertionError("the task was not cancelled")

        asyncio.run(main())
    assert settled == ["granted"]


def _wait_for(check, what: str) -> None:
    end = time.monotonic() + LONG
    while not check():
        assert time.monotonic() < end, what
        time.sleep(0.002)


def test_an_idle_doorbell_goes_idle_by_itself_within_the_listen_check(tmp_path: Path,
                                                                      monkeypatch):
    """With nobody ringing, a process that stopped waiting is shown idle within
    ``LISTEN_CHECK_S`` (its listener looks), so releasers stop sending at once for it."""
    from cross_instance.runtime import handover

    monkeypatch.setattr(handover, "LISTEN_CHECK_S", 0.05)
    tmp_path = tmp_path / "bells"
    tmp_path.mkdir(mode=0o700)
    bell = Doorbell(tmp_path, lambda n: None)
    try:
        bell.set_waiting(lambda: True)
        assert [n[:2] for n in os.listdir(tmp_path)] == [WAITING]
        bell.set_waiting(lambda: False)
        _wait_for(lambda: [n[:2] for n in os.listdir(tmp_path)] == [IDLE], "idle by itself")
        bell.set_waiting(lambda: True)  # waiting again: at once
        assert [n[:2] for n in os.listdir(tmp_path)] == [WAITING]
    finally:
        bell.close()


def test_doorbells_ring_waiting_processes_only_and_sweep_dead_ones(tmp_path: Path):
    tmp_path = tmp_path / "bells"
    tmp_path.mkdir(mode=0o700)
    rung: list[int] = []
    releaser = Doorbell(tmp_path, lambda n: None)
    waiter = Doorbell(tmp_path, rung.append)
    try:
        assert not releaser.others_waiting()
        waiter.set_waiting(lambda: True)
        _wait_for(releaser.others_waiting, "the waiter is seen")
        assert releaser.ring(2) == 1
        _wait_for(lambda: rung == [2], "the ring arrives")
        waiter.set_waiting(lambda: False)  # idle, lazily: the next ring finds nobody waiting
        assert [n[:2] for n in os.listdir(tmp_path)] == [WAITING]
        assert releaser.ring(1) == 1
        _wait_for(lambda: [n[:2] for n in os.listdir(tmp_path)] == [IDLE], "renamed idle")
        _wait_for(lambda: not releaser.others_waiting(), "the waiter is idle")
        assert releaser.ring(1) == 0
        # a process that died while waiting: its socket file stays, nobody listens
        dead = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        dead.bind(str(tmp_path / (WAITING + "deadbeefdeadbeef")))
        dead.close()
        waiter.set_waiting(lambda: True)
        _wait_for(lambda: len(releaser._waiting_names()) == 2, "both seen")
        assert releaser.ring(1) == 1  # the dead one refused and was removed
        assert not (tmp_path / (WAITING + "deadbeefdeadbeef")).exists()
        _wait_for(lambda: rung == [2, 1, 1], "the live one was rung")
    finally:
        waiter.close()
        releaser.close()
    assert not tmp_path.exists()  # the last doorbell of the store removed the directory


def test_a_doorbell_in_a_directory_not_private_is_not_made(tmp_path: Path):
    """A symlink where the directory should be (someone could point it anywhere): no
    doorbell, nothing raised, the waiters poll."""
    (tmp_path / "elsewhere").mkdir()
    link = tmp_path / "bells"
    link.symlink_to(tmp_path / "elsewhere")
    bell = Doorbell(link, lambda n: None)
    bell.set_waiting(lambda: True)
    assert os.listdir(tmp_path / "elsewhere") == []
    assert not bell.others_waiting()
    assert bell.ring(1) == 0
    bell.close()


def test_a_release_handed_to_a_waiter_that_gives_up_is_still_sent(tmp_path: Path):
    """The waiter that was to carry a release stops waiting first (timeout, cancellation,
    error): the release goes back to the runtime and reaches the store."""
    from cross_instance.runtime import Runtime
    from cross_instance.runtime.acquire import AcquireLoop, Call, Sleep
    from tests.helpers_runtime import make_config

    with Runtime.start(cwd=tmp_path, config=make_config(tmp_path / "state", total=1),
                       instance_id="solo") as rt:
        assert rt.store is not None
        held = rt.permit("p")
        plan = rt._cached_plan("p", None, None)
        loop = AcquireLoop(rt.store, plan.request, 30, rung=True, waiters=rt._slots)
        steps = loop.steps()
        step = next(steps)
        while not isinstance(step, Sleep):  # ask, queue, look for dead holders
            assert isinstance(step, Call)
            step = steps.send(step.fn(*step.args))
        assert step.waiter is not None and rt._slots.wake.waiting == 1
        held.release()  # handed to the waiter, which has not asked again yet
        assert step.waiter.carry == [held.permit_id]
        steps.close()
        leave = loop.abandon()  # it gives up instead
        assert leave is not None
        leave.fn(*leave.args)
        assert rt._slots.wake.waiting == 0
        rt.status()  # sends what is queued
        assert rt.store.snapshot().permits == ()


def test_one_waiter_of_a_process_looks_for_dead_holders_per_period(tmp_path: Path, monkeypatch):
    """Each wait used to reap when it first blocked: under load a second store transaction
    on nearly every permit. Now the waiters of a process share the period."""
    from cross_instance.runtime import Runtime, acquire
    from cross_instance.runtime.acquire import AcquireLoop, Call
    from tests.helpers_runtime import make_config

    monkeypatch.setattr(acquire, "REAP_EVERY_S", 1000.0)  # one period spans the test
    cfg = make_config(tmp_path / "state", total=1, timeout_ms=60_000)
    with Runtime.start(cwd=tmp_path, config=cfg, instance_id="a") as rt:
        store = rt.store
        assert store is not None
        held = rt.permit("p")
        request = rt._cached_plan("p", None, None).request
        reaps = 0
        for _ in range(3):
            loop = AcquireLoop(store, request, 60, waiters=rt._slots)
            steps = loop.steps()
            step = next(steps)
            while isinstance(step, Call):  # until the wait would sleep
                reaps += step.fn == store.reap
                step = steps.send(step.fn(*step.args))
            steps.close()
            leave = loop.abandon()
            if leave is not None:
                leave.fn(*leave.args)
        held.release()
    assert reaps == 1
