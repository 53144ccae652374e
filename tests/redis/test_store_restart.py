"""The Redis store across a server that lost everything (restarted without persistence,
FAULTS.md F11): nothing is granted twice. Permits still held keep their slots (their holders
re-declare them within the restart grace, while nothing else is granted), the rate stays
within ``burst + rate·W`` in every window that spans the restart, holders of workflows learn
they lost them, and fencing tokens never go backwards. Real servers killed (``kill -9``) or
shut down (``SHUTDOWN NOSAVE``) and started again on the same port, under load from real
processes, with the store's Lua as functions and as scripts."""

from __future__ import annotations

import asyncio
import time

import pytest

from cross_instance.core.limiter import RateSpec
from cross_instance.core.records import Granted, PermitRequest, PermitState, Waiting
from cross_instance.errors import StaleEpochError
from cross_instance.hostfacts import identity as hostinfo
from cross_instance.runtime import Runtime
from cross_instance.stores.redis.store import RedisStore
from tests.checkers import most_at_once
from tests.conftest import record
from tests.helpers_runtime import make_config
from tests.processes.spawn import CTX
from tests.redis.private_server import private_redis
from tests.redis.restart_workers import take_for, wait_then_hold

LUA = [pytest.param("", id="functions"), pytest.param("?lua=scripts", id="scripts")]


def restart(server, how: str) -> None:
    """Stop the server keeping nothing, then start an empty one on the same port."""
    if how == "kill":
        server.stop()  # kill -9
    else:
        server.shutdown_nosave()
    server.start()


def until(check, seconds: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@pytest.mark.parametrize(("lua", "how"), [  # each Lua form and each way of stopping, once
    pytest.param("", "kill", id="functions-kill9"),
    pytest.param("?lua=scripts", "shutdown", id="scripts-shutdown-nosave")])
def test_a_held_slot_is_not_granted_again_after_an_empty_restart(tmp_path, server, lua, how):
    # totalMaxLlm 1: a holds the only permit, two processes wait for it, Redis restarts empty
    cfg = {"store": server.url(lua), "total": 1, "interval_ms": 200, "timeout_ms": 3000}
    state = tmp_path / "state"
    with Runtime.start(cwd=tmp_path, config=make_config(state, **cfg), instance_id="a") as a:
        held = a.permit("p")
        a_start = hostinfo.boottime_ns()
        ready, out = CTX.Queue(), CTX.Queue()
        procs = [CTX.Process(target=wait_then_hold, args=(str(state), f"b{i}", 0.2, cfg,
                                                          ready, out)) for i in range(2)]
        for p in procs:
            p.start()
        try:
            for _ in procs:
                ready.get(timeout=60)
            until(lambda: a.store.snapshot().waiting == 2, what="both waiters queued")
            restart(server, how)
            # past the grace (one heartbeat timeout) by half as much again: a's slot stays a's
            time.sleep(4.5)
            snap = a.store.snapshot()
            assert [(p.instance_id, p.permit_id) for p in snap.permits] == [
                ("a", held.permit_id)]  # re-declared with its id; nobody else holds one
            assert out.empty()  # no waiter got the slot
            a_end = hostinfo.boottime_ns()
            held.release()
            spans = [out.get(timeout=60) for _ in procs]
        finally:
            for p in procs:
                p.join(timeout=30)
                if p.exitcode is None:
                    p.kill()
        assert all(p.exitcode == 0 for p in procs)
    # after a released, the waiters got the slot one after the other, never beside a
    assert all(start >= a_end for _, start, _ in spans)
    assert most_at_once([(a_start, a_end)] + [(s, e) for _, s, e in spans]) == 1


@pytest.mark.parametrize("lua", LUA)
def test_an_async_waiter_keeps_waiting_through_the_grace_and_after(tmp_path, server, lua):
    cfg = make_config(tmp_path / "state", store=server.url(lua), total=1, interval_ms=200,
                      timeout_ms=2000)

    async def main() -> None:
        with Runtime.start(cwd=tmp_path, config=cfg, instance_id="a") as a, \
                Runtime.start(cwd=tmp_path, config=cfg, instance_id="b") as b:
            held = await a.apermit("p")

            async def take():
                return await b.apermit("p", timeout=60)

            waiter = asyncio.create_task(take())
            deadline = time.monotonic() + 30
            while a.store.snapshot().waiting < 1:
                assert time.monotonic() < deadline, "b never queued"
                await asyncio.sleep(0.02)
            restart(server, "kill")
            await asyncio.sleep(3.0)  # past the grace of 2 s: the wait goes on, no error
            assert not waiter.done()
            assert [p.permit_id for p in a.store.snapshot().permits] == [held.permit_id]
            released = a.store.now_ns()
            await held.arelease()
            got = await asyncio.wait_for(waiter, 30)
            assert got.granted_ns >= released  # on the server's clock
            await got.arelease()

    asyncio.run(main())


@pytest.mark.parametrize("lua", LUA)
def test_the_rate_stays_within_burst_plus_rate_in_every_window_across_a_restart(
        tmp_path, server, lua):
    # 60/min (one call a second), burst 5: the processes spend the burst at once, then Redis
    # restarts empty while they keep asking; a fresh bucket would admit 5 more at once
    cfg = {"store": server.url(lua), "rpm": 60, "burst": 5, "total": 10, "interval_ms": 200,
           "timeout_ms": 1000}
    state = tmp_path / "state"
    ready, out = CTX.Queue(), CTX.Queue()
    procs = [CTX.Process(target=take_for, args=(str(state), f"w{i}", 6.0, cfg, ready, out))
             for i in range(2)]
    for p in procs:
        p.start()
    watcher = RedisStore(server.url(lua))
    try:
        for _ in procs:
            ready.get(timeout=60)

        def spent() -> bool:
            buckets = watcher.snapshot().buckets
            return bool(buckets) and buckets[0].used_last_minute >= 5

        until(spent, what="the burst spent")
        restarted_ns = watcher.now_ns()
        restart(server, "kill")
        grants = sorted(g for _ in procs for g in out.get(timeout=60)[1])
    finally:
        watcher.close()
        for p in procs:
            p.join(timeout=30)
            if p.exitcode is None:
                p.kill()
    assert all(p.exitcode == 0 for p in procs)
    assert any(g > restarted_ns for g in grants)  # it did grant again after the restart
    burst, interval_ns = 5, 1_000_000_000
    for window_s in (0.25, 0.5, 1, 2, 3, 5):
        w = int(window_s * 1e9)
        most = max(sum(1 for g in grants if start <= g < start + w) for start in grants)
        assert most <= burst + w / interval_ns, (window_s, most, grants)


REQ = PermitRequest("c", "p", None, (("r:p", 1),), ("*",))


def _publish(store: RedisStore, instance: str) -> None:
    store.publish_limits(instance, {"r:p": RateSpec(6000, 100)}, {"*": 1})


@pytest.mark.parametrize("lua", LUA)
def test_a_new_instance_first_after_a_restart_waits_for_the_old_ones(tmp_path, server, lua):
    a = RedisStore(server.url(lua))
    a.register_instance(record("a", lease_s=3.0))
    _publish(a, "a")
    held = a.try_acquire(PermitRequest("a", "p", None, (("r:p", 1),), ("*",)))
    assert isinstance(held, Granted)
    restart(server, "kill")
    # a brand-new instance is the first to call: it cannot tell a restart from a new store
    c = RedisStore(server.url(lua))
    before = c.now_ns()
    c.register_instance(record("c", lease_s=1.0))
    _publish(c, "c")
    assert c.try_acquire(REQ) is None
    waiting = c.acquire(REQ, None)
    assert isinstance(waiting, Waiting) and "restarted empty" in waiting.reason
    assert waiting.ready_ns >= before + 1_000_000_000  # c's lease from the start
    c.cancel_wait(waiting.ticket)
    # a notices within its lease and re-declares its permit; its longer lease makes the grace
    # last 3 s from the start
    assert a.heartbeat("a") is False
    mine = PermitState(held.permit_id, "a", "p", None, 0, held.granted_ns)
    assert a.rejoin_instance(record("a", lease_s=3.0), [mine]) == 1
    until(lambda: c.now_ns() > before + 1_500_000_000, what="c's lease")
    assert c.try_acquire(REQ) is None
    assert a.release("a", [held.permit_id]) == 1  # the re-declared permit is a's again
    assert c.try_acquire(REQ) is None  # still within the grace
    granted: list[Granted] = []
    until(lambda: bool(granted.append(g) or True) if (g := c.try_acquire(REQ)) else False,
          seconds=10, what="a grant after the grace")
    assert granted[0].granted_ns >= before + 3_000_000_000
    # a rejoin after the grace keeps nothing: the permits were lost with the data
    assert a.heartbeat("a") is True
    a.unregister_instance("a")
    assert a.rejoin_instance(record("a", lease_s=3.0), [mine]) == 0
    assert [p.instance_id for p in c.snapshot().permits] == ["c"]
    a.close()
    c.close()


def test_only_a_prefix_nobody_used_may_be_declared_empty(tmp_path, server):
    store = RedisStore(server.url())  # the fixture declared this server's prefix already
    assert store.declare_empty() is False
    other = RedisStore(server.url("?prefix=other:"))
    other.register_instance(record("a"))
    assert other.declare_empty() is False  # in use, and in its restart grace
    assert other.try_acquire(PermitRequest("a", "p", None, (), ())) is None
    store.close()
    other.close()


def test_epochs_stay_above_everything_issued_before_an_empty_restart(tmp_path):
    with private_redis(tmp_path) as port:
        store = RedisStore(f"redis://127.0.0.1:{port}/0")
        assert any("persistence off" in w for w in store.warnings)
        store.register_instance(record("a"))
        old = [store.claim_workflow(f"wf{i}", "a").epoch for i in range(3)]
        store.client.flushall()  # what a restart without persistence leaves
        assert store.heartbeat("a") is False  # the holder learns its lease is gone
        with pytest.raises(StaleEpochError):
            store.write_workflow_state("wf0", "a", old[0], {"x": 1})
        store.register_instance(record("a"))
        new = store.claim_workflow("wf0", "a").epoch
        assert new > max(old)
        store.close()


def test_persistence_off_is_announced_in_status(tmp_path):
    import os
    import subprocess

    from cross_instance.runtime import Runtime
    from tests.helpers_runtime import make_config

    with private_redis(tmp_path) as port:
        url = f"redis://127.0.0.1:{port}/0"
        cfg = make_config(tmp_path / "state", store=url, timeout_ms=30_000)
        with Runtime.start(cwd=tmp_path, config=cfg, instance_id="w"):
            env = {**os.environ, "PI_STORE_URL": url, "PI_RUNTIME_DIR": str(tmp_path / "s")}
            out = subprocess.run(["pi-xi", "status"], env=env, cwd=tmp_path,
                                 capture_output=True, text=True, timeout=60).stdout
            assert "Warning: Redis at" in out and "persistence off" in out
        log = (tmp_path / ".pi" / "logs" / "coordinator.log").read_text()
        assert "Store warning" in log and "persistence off" in log
