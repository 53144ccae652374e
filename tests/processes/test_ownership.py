"""Ownership and locks across real processes: 50 simultaneous claims, a killed winner, a
holder paused past its lease (SIGSTOP) whose late writes are rejected and whose lock loss is
reported."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time

import pytest

from cross_instance.runtime import Runtime
from tests.helpers_runtime import make_config
from tests.processes import ownership_workers as workers
from tests.processes import spawn

CLAIMERS = int(os.environ.get("PI_XI_TEST_CLAIMERS", "50"))
ROUNDS = 3


@pytest.mark.timeout(240)
def test_fifty_processes_claim_one_workflow(tmp_path, store_cfg):
    # forkserver: each claimer is a new process forked from one that imported the package
    # once, instead of fifty interpreters importing it (a third of the test's time)
    ctx = spawn.CTX
    state = str(tmp_path / "state")
    out = ctx.Queue()
    pipes = [ctx.Pipe(duplex=False) for _ in range(CLAIMERS)]
    store = store_cfg.get("store")
    procs = [ctx.Process(target=workers.claimer,
                         args=(state, f"c{i:02d}", pipes[i][0], out, store))
             for i in range(CLAIMERS)]
    send = {}
    for p in procs:
        p.start()
    try:
        pids = {}
        for _ in range(CLAIMERS):
            _, name, pid, _ = out.get(timeout=180)
            pids[name] = pid
            send[name] = pipes[int(name[1:])][1]
        alive = dict(pids)
        epochs = []
        for r in range(ROUNDS):
            for name in alive:
                send[name].send(r)
            answers = [out.get(timeout=60) for _ in range(len(alive))]
            assert {a[0] for a in answers} == {r}
            winners = [a for a in answers if "epoch" in a[3]]
            assert len(winners) == 1, winners  # exactly one owner per round
            (_, winner, winner_pid, won), = winners
            assert won["action"] == ("claimed" if r == 0 else "auto_claimed")
            epochs.append(won["epoch"])
            for _, name, _, payload in answers:
                if name != winner:
                    assert payload == {
                        "error": "workflow_owned_by_other", "ulTaskId": "wf",
                        "ownerInstanceId": winner, "ownerPid": winner_pid,
                        "outcomeCode": "NONRETRYABLE_FAILURE", "retryRecommended": False}
            os.kill(winner_pid, signal.SIGKILL)  # the next round must take over from the dead
            del alive[winner]
            next(p for p in procs if p.pid == winner_pid).join(timeout=30)
        # no gap, no repeat; from 1 on SQLite, from the incarnation floor on Redis
        assert epochs == list(range(epochs[0], epochs[0] + ROUNDS))
        if store is None or store.startswith("http:"):
            assert epochs[0] == 1  # a new SQLite database (also behind a daemon) starts at 1
        else:
            assert epochs[0] > 1  # Redis starts above its incarnation's floor (the clock)
        cfg = make_config(tmp_path / "state", store=store)
        with Runtime.start(cwd=tmp_path, config=cfg, instance_id="observer") as rt:
            claims = [e for e in rt.store.events(limit=10_000)
                      if e.kind in ("workflow_claimed", "workflow_auto_claimed")]
            assert [e.data["epoch"] for e in claims] == epochs
    finally:
        for name in alive if "alive" in locals() else ():
            send[name].send("done")
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()


@pytest.mark.timeout(120)
def test_a_holder_paused_past_its_lease_is_fenced_off(tmp_path, store_cfg):
    ctx = mp.get_context("spawn")
    state = str(tmp_path / "state")
    commands, out = ctx.Queue(), ctx.Queue()
    store = store_cfg.get("store")
    proc = ctx.Process(target=workers.paused_holder, args=(state, commands, out, store))
    proc.start()
    try:
        _, pid, epoch, token = out.get(timeout=60)
        cfg = make_config(tmp_path / "state", interval_ms=100, timeout_ms=600, store=store)
        with Runtime.start(cwd=tmp_path, config=cfg, instance_id="successor") as rt:
            assert rt.locks.try_acquire("res", ttl=5) is None  # held and renewed
            os.kill(pid, signal.SIGSTOP)
            try:
                time.sleep(1.5)  # past the holder's lease (0.6 s) and its lock's TTL (0.6 s)
                taken = rt.workflows.claim("wf")
                assert taken.action == "auto_claimed" and taken.epoch == epoch + 1
                lock = rt.locks.acquire("res", ttl=30, timeout=10)
                assert lock.token == token + 1
                taken.write(step=10)
            finally:
                os.kill(pid, signal.SIGCONT)
            commands.put("write")
            assert out.get(timeout=30) == ("write", "stale_epoch")
            deadline = time.monotonic() + 10
            while True:  # the resumed holder's renewal finds the lock gone
                commands.put("lock")
                _, state_of_lock, lost = out.get(timeout=30)
                if state_of_lock == "lock_lost" or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            assert state_of_lock == "lock_lost" and len(lost) == 1
            assert taken.read() == {"step": 10}  # the late write changed nothing
            kinds = [e.kind for e in rt.store.events(limit=10_000)]
            assert "workflow_auto_claimed" in kinds and "lock_lost" in kinds
            commands.put("stop")
            proc.join(timeout=30)
            assert proc.exitcode == 0
    finally:
        if proc.is_alive():
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()


@pytest.mark.timeout(120)
def test_a_killed_holder_frees_its_lock_and_workflow_before_ttl_and_lease(tmp_path, store_cfg):
    """F1: a same-host waiter gets the lock as soon as the holder process is gone, long before
    its 60 s TTL and its 30 s lease, with the next token; the workflow moves with epoch + 1."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    store = store_cfg.get("store")
    proc = ctx.Process(target=workers.lock_holder, args=(str(tmp_path / "state"), out, store))
    proc.start()
    pid, token, epoch = out.get(timeout=60)
    cfg = make_config(tmp_path / "state", timeout_ms=30_000, store=store)
    with Runtime.start(cwd=tmp_path, config=cfg, instance_id="waiter") as rt:
        assert rt.locks.try_acquire("res", ttl=5) is None
        with pytest.raises(Exception, match="owned by another instance"):
            rt.workflows.claim("wf")
        os.kill(pid, signal.SIGKILL)
        proc.join(timeout=30)
        got = rt.locks.acquire("res", ttl=5, timeout=20)  # not the TTL (60 s), nor the lease
        assert got.token == token + 1
        assert rt.workflows.claim("wf").epoch == epoch + 1
