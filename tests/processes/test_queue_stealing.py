"""The work queue across real processes (issue 18): one instance puts 2,000 tasks, six others
start idle and steal. Every task is completed exactly once (the store's fence accepts one
completion per task; no worker's log names a task twice; none is missing), the stealers do a
fair share, and the stats add up. The same with two workers killed by SIGKILL mid-run and one
stopped by SIGSTOP past its lease: nothing is lost, and the stopped worker, resumed, cannot
complete the task it held. Each on SQLite, on Redis, and through the daemon (every worker a
client of one ``pi-xi serve`` app over its socket).

Nothing here is timed; the bounds only stop a hung test."""

from __future__ import annotations

import json
import os
import random
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from cross_instance.stores import open_store
from cross_instance.stores.sqlite.store import SqliteStore
from tests.processes import queue_workers as qw
from tests.processes.spawn import CTX

TASKS, STEALERS = 2000, 6


def _run(tmp_path: Path, store_cfg: dict[str, Any], work_s: float,
         attack: bool) -> tuple[dict[str, tuple[int, int, int]], Any, Path]:
    state, logs = tmp_path / "state", tmp_path / "logs"
    logs.mkdir()
    cfg = {"interval_ms": 200, "timeout_ms": 1000, "lease_ms": 1000, "total_tasks": TASKS,
           **store_cfg}
    ready, go, out = CTX.Queue(), CTX.Event(), CTX.Queue()
    names = ["producer"] + [f"stealer{i}" for i in range(STEALERS)]
    procs = {n: CTX.Process(target=qw.work, args=(
        str(state), n, cfg, TASKS if n == "producer" else 0, work_s, str(logs), ready, go, out))
        for n in names}
    procs["producer"].start()
    pids = dict([ready.get(timeout=60)])
    for n in names[1:]:
        procs[n].start()
    for _ in names[1:]:
        name, pid = ready.get(timeout=60)
        pids[name] = pid
    store = open_store(store_cfg["store"]) if "store" in store_cfg else SqliteStore(state)
    go.set()
    victims: list[str] = []
    try:
        if attack:
            rnd = random.Random(os.getpid())
            _until(lambda: _settled(store) >= TASKS // 4, "a quarter done")
            victims = rnd.sample(names, 3)
            for v in victims:  # each stopped while it runs a task
                _stop_mid_task(store, pids[v], v)
            for v in victims[:2]:
                os.kill(pids[v], signal.SIGKILL)
            time.sleep(2.5)  # past its instance's lease (1 s) and its run's lease (1 s)
            os.kill(pids[victims[2]], signal.SIGCONT)
        reports = {}
        for _ in range(len(names) - (2 if attack else 0)):
            name, completed, lost, stolen = out.get(timeout=180)
            reports[name] = (completed, lost, stolen)
        for n, p in procs.items():
            p.join(timeout=60)
            if n in victims[:2]:
                assert p.exitcode == -signal.SIGKILL
            else:
                assert p.exitcode == 0, n
    finally:
        for p in procs.values():
            if p.is_alive():
                p.kill()
    return reports, store, logs


def _stop_mid_task(store: Any, pid: int, name: str) -> None:
    """Stop the worker at a moment it holds a running task (its work is most of its time)."""
    for _ in range(1000):
        os.kill(pid, signal.SIGSTOP)
        if store.list_tasks(owner=name, state="running"):
            return
        os.kill(pid, signal.SIGCONT)
        time.sleep(random.uniform(0.001, 0.003))
    raise AssertionError(f"{name} never held a running task")


def _until(check: Any, what: str, bound_s: float = 120) -> None:
    end = time.monotonic() + bound_s
    while not check():
        assert time.monotonic() < end, f"never happened: {what}"
        time.sleep(0.02)


def _all_events(store: Any) -> list[Any]:
    events, after = [], 0
    while page := store.events(after, 10_000):  # the most one call returns on every store
        events += page
        after = page[-1].event_id
    return events


def _settled(store: Any) -> int:
    return sum(c.done + c.failed for c in store.queue_counts())


def _check_exactly_once(store: Any, logs: Path) -> dict[str, int]:
    """Every task done once, with its own result; no log names a task twice. Returns the
    tasks each worker completed, as the store recorded them."""
    done = store.list_tasks(state="done", limit=10 * TASKS)
    assert len(done) == TASKS and not store.list_tasks(state="failed")
    assert not store.list_tasks(state="queued") and not store.list_tasks(state="running")
    by: dict[str, int] = {}
    for t in done:
        result = json.loads(t.result)
        assert result["square"] == int(t.task_id[1:]) ** 2
        by[result["by"]] = by.get(result["by"], 0) + 1
        assert t.owner == result["by"]  # completed by the run that owned it
    logged = [line for f in logs.iterdir() for line in f.read_text().split()]
    assert len(logged) == len(set(logged))  # no completion accepted twice
    assert set(logged) <= {t.task_id for t in done}
    assert {f"t{i:05d}" for i in range(TASKS)} == {t.task_id for t in done}
    return by


@contextmanager
def _shared(kind: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """The workers' store: the SQLite in their state directory, a Redis prefix, or one
    daemon every worker is an HTTP client of (killed or stopped mid-call too)."""
    from tests.conftest import redis_prefix, serve_store

    if kind == "redis":
        with redis_prefix("pi-queue") as url:
            yield {"store": url}
    elif kind == "remote":
        with serve_store(SqliteStore(tmp_path / "daemon-state")) as addr:
            yield {"store": f"http://{addr}"}
    else:
        yield {}


@contextmanager
def _ran(tmp_path: Path, store_cfg: dict[str, Any], attack: bool
         ) -> Iterator[tuple[dict[str, tuple[int, int, int]], Any, dict[str, int]]]:
    """The workers' reports, the shared store, and the tasks each completed, once every task
    is checked done exactly once."""
    reports, store, logs = _run(tmp_path, store_cfg, 0.004 if attack else 0.002, attack)
    try:
        by = _check_exactly_once(store, logs)
        assert sum(by.values()) == TASKS
        yield reports, store, by
    finally:
        store.close()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("kind", ["sqlite", "redis", "remote"])
def test_idle_instances_steal_and_every_task_is_done_exactly_once(tmp_path, kind):
    with _shared(kind, tmp_path) as store_cfg, _ran(tmp_path, store_cfg, False) as (
            reports, store, by):
        for name, (completed, lost, _) in reports.items():
            assert completed == by.get(name, 0) and lost == 0
        stealers = [by.get(f"stealer{i}", 0) for i in range(STEALERS)]
        fair = TASKS / (STEALERS + 1)
        assert min(stealers) >= fair / 3, f"an unfair share: {by}"  # each did real work
        counts = {c.instance_id: c for c in store.queue_counts()}
        steals = sum(c.stealing.successful_steals for c in counts.values())
        assert steals == sum(r[2] for r in reports.values())  # the stats add up
        assert steals >= sum(stealers)  # every stealer's task came by a steal
        for c in counts.values():
            s = c.stealing
            assert s.total_attempts == s.successful_steals + s.failed_attempts


@pytest.mark.timeout(300)
@pytest.mark.parametrize("kind", ["sqlite", "redis", "remote"])
def test_kills_and_a_stop_past_the_lease_lose_no_task(tmp_path, kind):
    with _shared(kind, tmp_path) as store_cfg, _ran(tmp_path, store_cfg, True) as (
            reports, store, _):
        lost = [e for e in _all_events(store) if e.kind == "task_lost"]
        assert len(lost) >= 3  # each victim's run went back to the queue
        assert all(e.data["state"] == "queued" for e in lost)
        stopped = [r for r in reports.values() if r[1]]
        assert stopped, "the resumed worker was not told it lost its task"
