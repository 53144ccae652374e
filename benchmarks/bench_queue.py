"""The work queue (issue 18): what stealing buys on an imbalanced load, what a task costs in the
store, and how many tasks per second four processes push through, against RQ on the same
Redis in the same run.

Scenarios (every one on the embedded SQLite store and on Redis at 127.0.0.1:6379):

- **makespan**: 4 instances; every task is put on instance 0 (seeded random lengths, 20 to
  80 ms of sleep each, like a tool call waiting on I/O); the workers run ``rt.queue.next()``
  until every task is settled. Without stealing only instance 0 works; with stealing the
  idle three take from it. Reported against the ideal: total work / 4 workers.
- **overhead**: one process, ``put`` + ``take`` + ``complete`` of an empty task, through
  ``rt.queue`` (what a user pays) and through the store alone; and a worker loop's ``put`` +
  ``complete_and_take`` (done and next in one store call); per task.
- **throughput**: 4 processes, each ``put`` + ``take`` + ``complete`` (and, as a worker loop
  runs, ``put`` + ``complete_and_take``) in a loop on its own queue, for ``--duration`` s;
  and the drain of a backlog (each process puts ``--backlog`` tasks, then all run until none
  is left, stealing when their own is empty).
- **floor**: what no store call goes below on this machine in this run: a Redis round trip
  (PING) and a one-row SQLite write transaction under the store's write discipline, from 1
  and from 4 processes. A task is three store calls (put, take, complete).
- **RQ**: the same empty work (``os.getpid``) with RQ (``SimpleWorker``, which runs a job in
  the worker's process as ours do; the default ``Worker`` forks per job and is far slower):
  one process enqueueing and draining, and 4 processes each enqueueing a backlog and then
  draining the shared queue. RQ keeps its keys in Redis database 15, emptied afterwards.

Targets: makespan with stealing within 1.15x the ideal; per-task overhead under 0.5 ms on both
stores; at least 3,000 tasks/s from 4 processes. Results: ``benchmarks/results/bench_queue.json``.

    pip install -e '.[bench]'   # brings rq
    python benchmarks/bench_queue.py            # about 2 minutes
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common

NAME = "bench_queue"
REDIS = "redis://127.0.0.1:6379/0"
RQ_DB = 15
TARGET_RATIO, TARGET_OVERHEAD_MS, TARGET_TPS = 1.15, 0.5, 3000


def _store_url(kind: str, prefix: str) -> str | None:
    return None if kind == "sqlite" else f"{REDIS}?prefix={prefix}"


def _runtime(ctx: common.TaskContext, steal: bool = True) -> Any:
    from cross_instance.core.workqueue import QueueSettings

    url = _store_url(ctx.params["kind"], ctx.params["prefix"])
    rt, _ = common.start_runtime(
        ctx, 10_000_000, 10_000, 64, store=url,
        queue=QueueSettings(lease_ms=30_000, min_queued=2, steal=steal))
    return rt


def _settled(rt: Any) -> int:
    return sum(c.done + c.failed for c in rt.queue.stats())


def task_makespan(ctx: common.TaskContext) -> dict[str, Any]:
    rt = _runtime(ctx, steal=ctx.params["steal"])
    lengths = ctx.params["lengths_ms"]
    if ctx.index == 0:
        for i, ms in enumerate(lengths):
            rt.queue.put({"ms": ms}, task_id=f"t{i}")
    ctx.ready()
    start = time.perf_counter()
    last, did, work_ms = 0.0, 0, 0
    while True:
        run = rt.queue.next()
        if run is None:
            if _settled(rt) >= len(lengths):
                break
            time.sleep(0.002)
            continue
        time.sleep(run.payload["ms"] / 1000)
        run.complete(None)
        last = time.perf_counter() - start
        did += 1
        work_ms += run.payload["ms"]
    rt.close()
    return {"last_s": last, "did": did, "work_ms": work_ms}


def task_overhead(ctx: common.TaskContext) -> dict[str, Any]:
    rt = _runtime(ctx, steal=False)
    n, store, me = ctx.params["n"], rt.store, rt.instance_id
    ctx.ready()
    facade = []
    for _ in range(n):
        t = time.perf_counter_ns()
        rt.queue.put(None)
        run = rt.queue.take()
        run.complete(None)
        facade.append(time.perf_counter_ns() - t)
    fused = []  # a worker loop: put, then "done, next" in one call
    rt.queue.put(None)
    run = rt.queue.take()
    for _ in range(n):
        t = time.perf_counter_ns()
        rt.queue.put(None)
        _, run = run.complete_and_take(None)
        fused.append(time.perf_counter_ns() - t)
    run.complete(None)
    raw = []
    for i in range(n):
        t = time.perf_counter_ns()
        store.put_task(me, f"raw{i}", "", 0, "null", 3)
        task = store.take_task(me, 30_000_000_000)
        store.settle_task(task.task_id, task.fence, "done", "null")
        raw.append(time.perf_counter_ns() - t)
    rt.close()
    return {"facade_ns": facade, "fused_ns": fused, "store_ns": raw}


def task_loop(ctx: common.TaskContext) -> dict[str, Any]:
    rt = _runtime(ctx, steal=False)
    fused = ctx.params["fused"]
    ctx.ready()
    end = time.perf_counter() + ctx.duration
    done = 0
    start = time.perf_counter()
    if fused:  # put, then "done, next" in one call
        rt.queue.put(None)
        run = rt.queue.take()
        while time.perf_counter() < end:
            rt.queue.put(None)
            _, run = run.complete_and_take(None)
            done += 1
        run.complete(None)
    else:
        while time.perf_counter() < end:
            rt.queue.put(None)
            rt.queue.take().complete(None)
            done += 1
    elapsed = time.perf_counter() - start
    rt.close()
    return {"done": done, "elapsed_s": elapsed}


def task_drain(ctx: common.TaskContext) -> dict[str, Any]:
    rt = _runtime(ctx, steal=True)
    backlog, total = ctx.params["backlog"], ctx.params["backlog"] * ctx.n
    ctx.ready()
    start = time.perf_counter()
    for _ in range(backlog):
        rt.queue.put(None)
    done = 0
    while True:
        run = rt.queue.next()
        if run is None:
            if _settled(rt) >= total:
                break
            time.sleep(0.001)
            continue
        run.complete(None)
        done += 1
    elapsed = time.perf_counter() - start
    rt.close()
    return {"done": done, "elapsed_s": elapsed}


def task_floor(ctx: common.TaskContext) -> dict[str, Any]:
    """What one store call cannot go below on this machine today, in the same run: a Redis
    round trip (PING), and a SQLite write transaction of one row under this store's write
    discipline (its ``Database.write``), from each of ``ctx.n`` processes at once."""
    import redis

    from cross_instance.errors import StoreUnavailable
    from cross_instance.stores.sqlite.store import SqliteStore

    for _ in range(40):  # several processes creating one state at once: retried (_common)
        try:
            db = SqliteStore(Path(ctx.state_dir) / "floor").db
            break
        except StoreUnavailable:
            time.sleep(0.05)
    db.write(lambda c, now: c.execute("CREATE TABLE IF NOT EXISTS t(k INTEGER PRIMARY KEY, "
                                      "v INTEGER)"))
    db.write(lambda c, now: c.execute("INSERT OR IGNORE INTO t VALUES(?, 0)", (ctx.index,)))
    conn = redis.Redis(host="127.0.0.1", port=6379)
    conn.ping()
    ctx.ready()
    end = time.perf_counter() + ctx.duration / 2
    pings, writes = [], []
    while time.perf_counter() < end:
        t = time.perf_counter_ns()
        conn.ping()
        pings.append(time.perf_counter_ns() - t)
    end = time.perf_counter() + ctx.duration / 2
    while time.perf_counter() < end:
        t = time.perf_counter_ns()
        db.write(lambda c, now: c.execute("UPDATE t SET v=v+1 WHERE k=?", (ctx.index,)))
        writes.append(time.perf_counter_ns() - t)
    db.close()
    return {"ping_ns": pings, "write_ns": writes, "half_s": ctx.duration / 2}


def _rq(ctx: common.TaskContext) -> tuple[Any, Any]:
    import logging

    from redis import Redis
    from rq import Queue, SimpleWorker

    logging.getLogger("rq").setLevel(logging.WARNING)
    conn = Redis(host="127.0.0.1", port=6379, db=RQ_DB)
    queue = Queue(ctx.params["prefix"], connection=conn)
    worker = SimpleWorker([queue], connection=conn, name=f"w-{uuid.uuid4().hex[:8]}")
    return queue, worker


def task_rq(ctx: common.TaskContext) -> dict[str, Any]:
    """Each process enqueues ``n`` empty jobs on the shared queue, then drains it."""
    queue, worker = _rq(ctx)
    n = ctx.params["n"]
    ctx.ready()
    start = time.perf_counter()
    for _ in range(n):
        queue.enqueue("os.getpid")
    worker.work(burst=True, logging_level="WARNING")
    elapsed = time.perf_counter() - start
    return {"done": n, "elapsed_s": elapsed}


def _clean(kind: str, prefix: str) -> None:
    if kind == "redis":
        from cross_instance.stores.redis.store import RedisStore

        store = RedisStore(f"{REDIS}?prefix={prefix}")
        store.drop_everything()
        store.close()


def _rq_clean() -> None:
    from redis import Redis

    conn = Redis(host="127.0.0.1", port=6379, db=RQ_DB)
    for key in conn.scan_iter("rq:*", count=1000):
        conn.delete(key)


def _pct(ns: list[int], q: float) -> float:
    values = sorted(ns)
    return (common.percentile(values, q) or 0) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--tasks", type=int, default=240, help="tasks of the makespan load")
    parser.add_argument("--overhead-n", type=int, default=3000)
    parser.add_argument("--backlog", type=int, default=3000, help="tasks per process")
    parser.add_argument("--stores", default="sqlite,redis")
    parser.add_argument("--no-rq", action="store_true")
    args = parser.parse_args()
    info = common.machine_info()
    print(common.machine_line(info))
    rnd = random.Random(18)
    lengths = [rnd.randint(20, 80) for _ in range(args.tasks)]
    ideal_s = sum(lengths) / 1000 / 4
    pool = common.WorkerPool(4, [1, 4])
    results: dict[str, Any] = {"machine": info, "lengths_ms_total": sum(lengths),
                               "ideal_s": ideal_s, "rows": {}}
    rows = results["rows"]
    try:
        for kind in args.stores.split(","):
            for steal in (False, True):
                prefix = f"bench-q-{uuid.uuid4().hex[:8]}:"
                out = pool.run(task_makespan, 4, 120, {"kind": kind, "prefix": prefix,
                                                        "steal": steal, "lengths_ms": lengths})
                _clean(kind, prefix)
                makespan = max(r["last_s"] for r in out)
                rows[f"makespan {kind} {'with' if steal else 'without'} stealing"] = {
                    "makespan_s": makespan, "ratio": makespan / ideal_s,
                    "tasks_per_worker": [r["did"] for r in out]}
            prefix = f"bench-q-{uuid.uuid4().hex[:8]}:"
            out = pool.run(task_overhead, 1, 120, {"kind": kind, "prefix": prefix,
                                                    "n": args.overhead_n})
            _clean(kind, prefix)
            for part in ("facade", "fused", "store"):
                ns = out[0][f"{part}_ns"]
                rows[f"overhead {kind} {part}"] = {
                    "mean_ms": sum(ns) / len(ns) / 1e6, "p50_ms": _pct(ns, 50),
                    "p99_ms": _pct(ns, 99)}
            for fused in (False, True):
                prefix = f"bench-q-{uuid.uuid4().hex[:8]}:"
                out = pool.run(task_loop, 4, args.duration, {"kind": kind, "prefix": prefix,
                                                              "fused": fused})
                _clean(kind, prefix)
                name = "put + complete_and_take" if fused else "put + take + complete"
                rows[f"throughput {kind} loop {name}, 4 processes"] = {
                    "tasks_per_s": sum(r["done"] / r["elapsed_s"] for r in out)}
            prefix = f"bench-q-{uuid.uuid4().hex[:8]}:"
            out = pool.run(task_drain, 4, 120, {"kind": kind, "prefix": prefix,
                                                 "backlog": args.backlog})
            _clean(kind, prefix)
            rows[f"throughput {kind} drain, 4 processes"] = {
                "tasks_per_s": sum(r["done"] for r in out) / max(r["elapsed_s"] for r in out)}
        for n in (1, 4):
            out = pool.run(task_floor, n, 2 * min(args.duration, 3.0))
            pings = [x for r in out for x in r["ping_ns"]]
            writes = [x for r in out for x in r["write_ns"]]
            rows[f"floor, {n} process{'es' if n > 1 else ''}"] = {
                "redis_ping_p50_ms": _pct(pings, 50),
                "redis_pings_per_s": len(pings) / out[0]["half_s"],
                "sqlite_write_p50_ms": _pct(writes, 50),
                "sqlite_writes_per_s": len(writes) / out[0]["half_s"]}
        try:
            if args.no_rq:
                raise ImportError
            import rq
        except ImportError:
            print("- rq is not installed (pip install -e '.[bench]'): no comparison row")
        else:
            _rq_clean()
            out = pool.run(task_rq, 1, 120, {"prefix": "bench", "n": args.overhead_n})
            rows["overhead RQ SimpleWorker, enqueue + run"] = {
                "mean_ms": out[0]["elapsed_s"] / out[0]["done"] * 1000}
            _rq_clean()
            out = pool.run(task_rq, 4, 120, {"prefix": "bench", "n": args.backlog})
            rows["throughput RQ drain, 4 processes"] = {
                "tasks_per_s": sum(r["done"] for r in out) / max(r["elapsed_s"] for r in out)}
            results["rq_version"] = rq.__version__
            _rq_clean()
    finally:
        pool.close()
    _print(rows, ideal_s)
    common.write_results(NAME, results)


def _print(rows: dict[str, Any], ideal_s: float) -> None:
    table = []
    for name, r in rows.items():
        if name.startswith("makespan"):
            met = "met" if "with stealing" not in name or r["ratio"] <= TARGET_RATIO else "MISSED"
            table.append([name, f"{r['makespan_s']:.2f} s = {r['ratio']:.2f}x ideal "
                          f"({ideal_s:.2f} s); tasks per worker {r['tasks_per_worker']}",
                          f"<= {TARGET_RATIO}x: {met}" if "with stealing" in name else ""])
        elif name.startswith("floor"):
            table.append([name, f"Redis PING p50 {r['redis_ping_p50_ms']:.3f} ms "
                          f"({r['redis_pings_per_s']:,.0f}/s); one-row SQLite write "
                          f"transaction p50 {r['sqlite_write_p50_ms']:.3f} ms "
                          f"({r['sqlite_writes_per_s']:,.0f}/s)", "the machine today"])
        elif name.startswith("overhead"):
            detail = f"mean {r['mean_ms']:.3f} ms"
            if "p50_ms" in r:
                detail += f", p50 {r['p50_ms']:.3f}, p99 {r['p99_ms']:.3f} ms"
            target = ""
            if "store" not in name and "RQ" not in name:
                target = (f"< {TARGET_OVERHEAD_MS} ms: "
                          f"{'met' if r['mean_ms'] < TARGET_OVERHEAD_MS else 'MISSED'}")
            table.append([name, detail, target])
        else:
            target = ""
            if "loop" in name:
                target = (f">= {TARGET_TPS}: "
                          f"{'met' if r['tasks_per_s'] >= TARGET_TPS else 'MISSED'}")
            table.append([name, f"{r['tasks_per_s']:,.0f} tasks/s", target])
    print(common.markdown_table(["row", "result", "target"], table))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
