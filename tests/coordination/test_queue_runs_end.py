"""A run of ``rt.queue`` always ends: whatever leaves the work (a cancellation, Ctrl-C, an
error too long to record, a handler giving back something no store keeps), the task is
settled or given back, never left running and renewed by a process that forgot it. And a
run is told when it no longer holds its task: a second settle, a closed runtime. Every
method has an asyncio twin with the same arguments and the same refusals."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import json
import time

import pytest

from cross_instance.coordination.queue import MAX_DESCRIBED, Queue, RunningTask
from cross_instance.core.workqueue import QueueSettings
from cross_instance.errors import InvalidArgument, NotRegisteredError, TaskLostError
from cross_instance.runtime import Runtime
from tests.helpers_runtime import make_config


@pytest.fixture
def pair(tmp_path):
    cfg = dataclasses.replace(make_config(tmp_path / "state", timeout_ms=30_000),
                              queue=QueueSettings(lease_ms=600, min_queued=0))
    rts = [Runtime.start(cwd=tmp_path, config=cfg, instance_id=i) for i in ("a", "b")]
    yield rts
    for rt in reversed(rts):
        rt.close()


def _given_back(rt, task_id, attempts=1):
    """The task is queued again after one run, and this process no longer renews it."""
    task = rt.queue.get(task_id)
    assert (task.state, task.attempts) == ("queued", attempts), task
    assert task_id not in rt.queue._running


def test_a_cancelled_async_block_gives_its_run_back(pair):
    a, _ = pair
    a.queue.put(1, task_id="cancelled")

    async def main():
        run = await a.queue.atake()

        async def work():
            async with run:
                await asyncio.sleep(100)

        task = asyncio.create_task(work())
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return run

    run = asyncio.run(main())
    assert run.settled is not None and run.settled.error == '"CancelledError: "'
    _given_back(a, "cancelled")


def test_ctrl_c_in_a_with_block_is_raised_after_the_run_is_given_back(pair):
    a, _ = pair
    a.queue.put(1, task_id="interrupted")
    with pytest.raises(KeyboardInterrupt), a.queue.take():
        raise KeyboardInterrupt
    _given_back(a, "interrupted")
    a.queue.put(2, task_id="handler-interrupted", priority=5)

    def interrupted(run):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        a.queue.process_one(interrupted)
    _given_back(a, "handler-interrupted")


def test_an_error_too_long_to_record_is_cut_and_the_callers_own_error_kept(pair):
    a, _ = pair
    a.queue.put(1, task_id="long")
    with pytest.raises(ValueError, match=r"^x+$"), a.queue.take():
        raise ValueError("x" * 2_000_000)
    task = a.queue.get("long")
    assert task.state == "queued" and task_id_free(a, "long")
    error = json.loads(task.error)
    assert error.startswith("ValueError: xxx") and len(error) < MAX_DESCRIBED + 100
    assert error.endswith(f"({2_000_000 + len('ValueError: ') - MAX_DESCRIBED} more characters)")


def task_id_free(rt, task_id):
    return task_id not in rt.queue._running


def test_process_one_refuses_what_no_store_keeps_and_async_handlers(pair):
    a, _ = pair

    async def handler(run):
        return 1

    a.queue.put(1, task_id="kept")
    with pytest.raises(InvalidArgument, match="aprocess_one"):
        a.queue.process_one(handler)  # refused before anything is taken
    assert a.queue.get("kept").state == "queued"
    with pytest.raises(InvalidArgument, match="awaitable"):
        a.queue.process_one(lambda run: handler(run))  # a coroutine: never run, given back
    _given_back(a, "kept")
    a.queue.put(2, task_id="huge")
    for task_id, result, word in (("kept", {1, 2}, "result must be"),
                                  ("huge", "x" * (2 << 20), "result is")):  # over 1 MiB
        with pytest.raises(InvalidArgument, match=word):
            a.queue.process_one(lambda run, r=result: r)  # the handler ran: failed, no retry
        failed = a.queue.get(task_id)
        assert failed.state == "failed" and "could not be kept" in json.loads(failed.error)
        assert task_id_free(a, task_id)


def test_aprocess_one_takes_a_plain_handler_too_and_runs_it_once(pair):
    a, _ = pair
    a.queue.put(3, task_id="plain")
    calls = []

    def handler(run):
        calls.append(run.task_id)
        return run.payload * 2

    done = asyncio.run(a.queue.aprocess_one(handler))
    assert calls == ["plain"] and done.state == "done" and done.result == "6"


def test_a_second_settle_with_another_outcome_is_task_lost_and_takes_nothing(pair):
    a, _ = pair
    for i in range(3):
        a.queue.put(i, task_id=f"s{i}")
    run = a.queue.take()
    first = run.complete("first")
    assert run.complete("first") == first  # the same settle again: the same answer
    for again in (lambda: run.complete("second"), lambda: run.fail("err"),
                  lambda: run.complete_and_take("first"), lambda: run.ensure()):
        with pytest.raises(TaskLostError, match=r"settled already|was settled"):
            again()
    with pytest.raises(TaskLostError, match="settled already"):
        asyncio.run(run.acomplete("third"))
    assert [t.state for t in a.queue.list(owner="a", state="queued")] == ["queued"] * 2


def test_closing_the_runtime_tells_its_runs_and_hands_their_tasks_on(pair, tmp_path):
    a, b = pair
    a.queue.put("charge", task_id="pay")
    run = a.queue.take()
    a.close()
    assert run.lost is not None and "closed" in run.lost.reason
    with pytest.raises(TaskLostError):
        run.ensure()
    with pytest.raises(TaskLostError):
        run.complete("late")
    other = b.queue.take()  # from the shared pool
    assert other.task_id == "pay" and other.fence > run.fence
    assert other.complete("b").result == '"b"'


@pytest.mark.parametrize("kind", [Queue, RunningTask])
def test_every_method_has_an_asyncio_twin_with_the_same_arguments(kind):
    skip = {"close", "steal_work"} if kind is Queue else set()
    for name, method in inspect.getmembers(kind, inspect.isfunction):
        if name.startswith(("_", "a")) or name in skip:
            continue
        twin = getattr(kind, f"a{name}", None)
        assert twin is not None and inspect.iscoroutinefunction(twin), f"no a{name}"
        sig = inspect.signature(method)
        tsig = inspect.signature(twin, follow_wrapped=False)  # its own, not the method's
        assert [(p.name, p.kind, p.default) for p in tsig.parameters.values()] == \
            [(p.name, p.kind, p.default) for p in sig.parameters.values()], name
        if hasattr(twin, "__wrapped__"):  # made by _twin (aprocess_one is written out)
            assert tsig.return_annotation == f"Coroutine[Any, Any, {sig.return_annotation}]"


def test_async_twins_refuse_and_answer_as_the_sync_forms(pair):
    a, b = pair
    for i in range(3):
        a.queue.put(i)
    bad = [("get", ("\ud800",), {}, "task_id"), ("list", (), {"owner": "\ud800"}, "owner"),
           ("safe_steal_work", (), {"min_queued": "2"}, "min_queued"),
           ("safe_steal_work", (), {"min_queued": 10**7}, "min_queued"),
           ("safe_steal_work", (), {"min_queued": float("nan")}, "min_queued"),
           ("should_attempt_work_stealing", ("x",), {}, "min_queued"),
           ("get_work_stealing_candidates", (1.5,), {}, "top_n")]
    for name, args, kwargs, word in bad:
        with pytest.raises(InvalidArgument, match=word):
            getattr(b.queue, name)(*args, **kwargs)
        with pytest.raises(InvalidArgument, match=word):
            asyncio.run(getattr(b.queue, f"a{name}")(*args, **kwargs))

    async def reads():
        return (await b.queue.alist(owner="a"), await b.queue.astats(),
                await b.queue.aget_work_stealing_candidates(3),
                await b.queue.aget_stealing_stats(every_instance=True))

    listed, stats, candidates, stealing = asyncio.run(reads())
    assert listed == b.queue.list(owner="a") and stats == b.queue.stats()
    assert candidates == ["a"] and stealing == b.queue.get_stealing_stats(every_instance=True)


def test_a_cancelled_atake_gives_back_the_run_it_started(pair):
    """The take's store call cannot be stopped once sent: it finishes in its thread, and the
    run it started goes back to the queue instead of being held, and renewed, by nobody."""
    a, _ = pair
    a.queue.put(1, task_id="taken")

    async def main():
        call = asyncio.ensure_future(a.queue.atake())
        await asyncio.sleep(0)  # sent to the store threads
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        for _ in range(200):  # the take finishes, then its run is given back
            task = a.queue.get("taken")
            if task.state == "queued" and task.attempts == 1:
                return
            await asyncio.sleep(0.01)

    asyncio.run(main())
    _given_back(a, "taken")
    assert "CancelledError" in a.queue.get("taken").error


def test_an_exit_cancelled_again_still_gives_the_run_back(pair):
    """``async with`` left by an error, then cancelled while its exit waits for a store
    thread (a timeout, a task group): the exit still runs, and the run goes back."""
    from cross_instance.runtime.session import STORE_THREADS

    a, _ = pair
    a.queue.put(1, task_id="twice")

    async def main():
        run = await a.queue.atake()
        for _ in range(STORE_THREADS):  # every store thread busy: the exit's call waits
            a.session.submit(time.sleep, 0.3)

        async def work():
            async with run:
                raise RuntimeError("first")

        task = asyncio.ensure_future(work())
        await asyncio.sleep(0.05)  # in __aexit__, its call queued behind the sleeps
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return run

    run = asyncio.run(main())
    time.sleep(0.6)  # the sleeps end, then the exit runs
    assert run.settled is not None and "RuntimeError: first" in run.settled.error
    _given_back(a, "twice")


def test_leaving_a_block_normally_after_the_run_was_lost_says_so(pair):
    a, _ = pair
    a.queue.put(1, task_id="lost")
    run = a.queue.take()
    with pytest.raises(TaskLostError, match="closed"):
        with run:
            a.queue.close()  # (as rt.close() does: every run of this process is lost)
    assert a.queue.get("lost").state == "running"  # rt.close() hands it on; not settled here


def test_an_error_that_is_not_utf8_is_recorded_escaped(pair):
    a, _ = pair
    a.queue.put(1, task_id="fsname")
    name = b"caf\xe9".decode("utf-8", "surrogateescape")  # as os.fsdecode gives it
    with pytest.raises(OSError), a.queue.take():
        raise OSError(f"no such file: {name}")
    task = a.queue.get("fsname")
    assert task.state == "queued"
    assert json.loads(task.error) == "OSError: no such file: caf\\udce9"


def test_asyncio_twins_after_close_refuse_as_the_sync_forms(pair):
    a, _ = pair
    asyncio.run(a.queue.alist())  # the store threads exist (then shut down by close)
    a.close()

    async def main():
        with pytest.raises(NotRegisteredError):
            await a.queue.aput(1)
        with pytest.raises(NotRegisteredError):
            await a.queue.alist()

    with pytest.raises(NotRegisteredError):
        a.queue.put(1)
    asyncio.run(main())


def test_a_take_cancelled_as_its_loop_ends_still_gives_its_run_back(pair):
    """The take still waits for a store thread when its caller is cancelled and the event
    loop closes: no callback of that loop can run, and the store thread gives the run back
    itself once the take finishes."""
    from cross_instance.runtime.session import STORE_THREADS

    a, _ = pair
    a.queue.put(1, task_id="late")

    async def main():
        for _ in range(STORE_THREADS):  # every store thread busy: the take waits
            a.session.submit(time.sleep, 0.3)
        call = asyncio.ensure_future(a.queue.atake())
        await asyncio.sleep(0.05)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call

    asyncio.run(main())  # the loop is closed before the take has even started
    time.sleep(0.8)
    _given_back(a, "late")


def test_leaving_async_with_runtime_after_closing_it_inside_is_quiet(tmp_path):
    from tests.helpers_runtime import make_config

    async def main():
        async with Runtime.start(cwd=tmp_path, config=make_config(tmp_path / "state"),
                                 instance_id="quiet") as rt:
            await rt.queue.alist()
            rt.close()

    asyncio.run(main())
