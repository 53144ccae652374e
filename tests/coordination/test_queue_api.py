"""``rt.queue`` through the facade (several runtimes, one process): put, take, settle with the
fence, stealing by the idle from the busiest, the lease renewed in the background and a lost
run told, the seed's names, sync and asyncio alike."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import pytest

from cross_instance.core.workqueue import QueueSettings
from cross_instance.errors import InvalidArgument, TaskLostError
from cross_instance.runtime import Runtime
from tests.helpers_runtime import make_config


@pytest.fixture
def trio(tmp_path):
    cfg = dataclasses.replace(make_config(tmp_path / "state", timeout_ms=30_000),
                              queue=QueueSettings(lease_ms=600, min_queued=1))
    rts = [Runtime.start(cwd=tmp_path, config=cfg, instance_id=i) for i in ("a", "b", "c")]
    yield rts
    for rt in reversed(rts):
        rt.close()


def test_put_take_complete_and_a_settled_run_cannot_settle_again(trio):
    a, _, _ = trio
    a.queue.put({"n": 1}, tool_name="echo", priority=2, task_id="one")
    a.queue.put({"n": 2}, tool_name="echo")
    with a.queue.take() as run:
        assert run.task_id == "one" and run.payload == {"n": 1} and run.tool_name == "echo"
        assert run.attempts == 1 and run.fence == 1 and not run.stolen
        done = run.complete({"ok": True})
    assert done.state == "done" and done.result == '{"ok":true}'
    with pytest.raises(TaskLostError):
        run.ensure()
    second = a.queue.take()
    with pytest.raises(RuntimeError), second:
        raise RuntimeError("boom")  # leaving by an exception: failed, with a retry
    assert a.queue.get(second.task_id).state == "queued"
    assert a.queue.get(second.task_id).error == '"RuntimeError: boom"'
    with pytest.raises(InvalidArgument, match="payload"):
        a.queue.put({1, 2})
    with pytest.raises(InvalidArgument, match="lease"):
        a.queue.take(lease=0)


def test_the_lease_is_renewed_while_the_task_runs(trio):
    a, _, _ = trio
    a.queue.put("slow")
    run = a.queue.take()
    time.sleep(1.5)  # more than two leases (0.6 s): the background renewal keeps it
    run.ensure()
    assert a.queue.get(run.task_id).state == "running"
    assert run.complete("fine").state == "done"


def test_a_run_that_lost_its_lease_is_told_and_the_task_goes_back(trio):
    a, b, _ = trio
    a.queue.put("x", task_id="x")
    run = a.queue.take()
    a.queue._forget(run)  # no renewal from here on (as a stalled process)
    time.sleep(0.8)
    again = a.queue.take()  # the expired run goes back first, then runs again
    assert again is not None and again.task_id == "x" and again.fence > run.fence
    with pytest.raises(TaskLostError) as err:
        run.complete("late")
    assert err.value.code == "task_lost" and err.value.task_id == "x"
    assert again.complete("on time").result == '"on time"'
    assert b.queue.get("x").result == '"on time"'


def test_idle_instances_steal_from_the_busiest_and_the_stats_add_up(trio):
    a, b, c = trio
    for i in range(5):
        a.queue.put(i, task_id=f"t{i}")
    states = {s.instance_id: s for s in b.queue.get_remote_queue_states()}
    assert states["a"].pending == 5 and states["b"].pending == 0
    assert b.queue.should_attempt_work_stealing()
    assert not a.queue.should_attempt_work_stealing()
    assert b.queue.find_steal_candidate() == "a"
    assert b.get_work_stealing_candidates(2) == ["a"]  # the seed's name, on the runtime
    stolen = b.queue.safe_steal_work()
    assert stolen is not None and stolen.stolen and stolen.task.owner == "b"
    assert not b.queue.should_attempt_work_stealing()  # it runs a task now
    assert b.queue.safe_steal_work() is None
    stolen.complete("by b")
    done = []
    while (run := c.queue.next()) is not None:
        done.append(run.complete(run.payload * 10).task_id)
    assert len(done) == 3  # the last one is not stolen: a holds no more than min_queued
    assert c.queue.find_steal_candidate() is None
    a.queue.take().complete("by a")
    summary = c.queue.get_work_stealing_summary()
    assert summary["totalPendingTasks"] == 0
    stats = b.queue.get_stealing_stats()
    assert (stats.total_attempts, stats.successful_steals) == (1, 1)
    total = a.queue.get_stealing_stats(every_instance=True)
    assert total.successful_steals == 4 and total.total_attempts == 4  # none was tried in vain
    by_id = {x.instance_id: x for x in a.queue.stats()}
    assert by_id["b"].done + by_id["c"].done == 4 and by_id["a"].done == 1
    assert by_id["a"].queued == 0
    b.queue.reset_stealing_stats()
    assert b.queue.get_stealing_stats().total_attempts == 0


def test_the_heartbeat_publishes_the_queue_state(trio):
    a, b, _ = trio
    for i in range(3):
        a.queue.put(i)
    a.queue.broadcast_queue_state()
    rec = next(r for r in b.instances.list() if r.instance_id == "a")
    assert rec.workload.pending_tasks == 3


def test_asyncio_forms_run_the_same_code(trio):
    a, b, _ = trio

    async def main():
        await a.queue.aput({"q": 1}, task_id="aa")
        await a.queue.aput({"q": 2})
        await a.queue.aput({"q": 3})
        run = await a.queue.atake()
        assert run.task_id == "aa"
        async with run:
            pass  # left normally: completed with None
        stolen = await b.queue.asafe_steal_work(min_queued=0)
        await stolen.afail("no", retry=False)

        async def handler(task):
            return task.payload["q"]

        return await a.queue.aprocess_one(handler)

    last = asyncio.run(main())
    assert a.queue.get("aa").state == "done" and a.queue.get("aa").result == "null"
    assert last.state == "done"
    assert [t.state for t in a.queue.list(state="failed")] == ["failed"]


def test_a_worker_loop_settles_and_takes_in_one_call_sync_and_async(trio):
    a, b, _ = trio
    for i in range(4):
        a.queue.put(i, task_id=f"w{i}")
    run, seen = a.queue.take(), []
    while run is not None:
        seen.append(run.task_id)
        done, run = run.complete_and_take(run.payload * 2)
        assert done.state == "done" and done.result == str(int(done.task_id[1:]) * 2)
        if len(seen) == 2:
            break
    b.queue.put("x", task_id="bx")
    stolen = b.queue.take()
    b.queue._forget(stolen)
    time.sleep(0.8)  # its lease (0.6 s) runs out: the run is lost
    with pytest.raises(TaskLostError):
        stolen.complete_and_take("late")

    async def rest():
        nonlocal run
        while run is not None:
            seen.append(run.task_id)
            _, run = await run.acomplete_and_take(None)

    asyncio.run(rest())
    assert seen == ["w0", "w1", "w2", "w3"]
    assert [t.state for t in a.queue.list(owner="a")] == ["done"] * 4
