"""Permit throughput and latency when capacity is always available.

Measured, from 1, 2, 4 and 8 processes (one thread each, ~3 s per run, all released together):

* ours, ``permit``: ``with rt.permit("bench"): pass`` in a loop (limit 10,000,000/min, burst
  10,000, totalMaxLlm 64, so nothing ever waits). Cycles/s in total and per process, p50/p99 of
  the acquire (call until the permit is held) and of the whole cycle (acquire + release), in µs.
* ours, ``try_permit``: the same with ``rt.try_permit``; a ``None`` is a spurious refusal
  (capacity always exists), so the target is 0.
* pyrate-limiter 4 ``SQLiteBucket.init_from_file(..., use_file_lock=True)`` (its ready-made
  cross-process option) with a Rate that never limits: successful ``try_acquire`` per second and
  refused tries. Its ``blocking=False`` mode is probed first and reported if it cannot run; the
  closest working non-waiting call (``blocking=True, timeout=0``) and the default waiting call
  are measured instead.
* ours, ``permit``, **shell-started**: the same loop in separate processes started as users
  start agents (``shell_agent.py``: a fresh ``python`` per agent, each in its own working
  directory reading ``.pi/config.json``, logging to ``.pi/logs/`` as usual, one shared state
  directory), beside the warm pool's run so the two can be compared in one run.
* raw SQLite WAL baseline (synchronous=NORMAL): ``BEGIN IMMEDIATE; UPDATE one row; COMMIT``
  per op, relying on SQLite's busy handler; plus the same under an exclusive ``flock`` (the
  write discipline our store uses), to separate lock-handling cost from our own work.

Targets printed beside the results: ours >= 10,000 cycles/s from 1 process, >= 8,000/s in
total from 2, 4 and 8 processes, 0 spurious refusals. Run: ``python benchmarks/bench_permits.py``
(``--duration`` to change the run length). Results: ``benchmarks/results/bench_permits.json``.
"""

from __future__ import annotations

import argparse
import array
import base64
import fcntl
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common as common
from _common import TaskContext, WorkerPool

NAME = "bench_permits"
COUNTS = (1, 2, 4, 8)
RATE_PER_MIN, BURST, TOTAL_MAX_LLM = 10_000_000, 10_000, 64
TARGET_ONE, TARGET_MANY = 10_000, 8_000
SHELL = "ours permit, shell-started"


def _timed_loop(ctx: TaskContext, op: Any) -> dict[str, Any]:
    """Call ``op(acq, cyc)`` until the duration ends; ``op`` returns True for a success and
    appends its latencies (ns). Exceptions are counted, not fatal."""
    acq: array.array[int] = array.array("q")
    cyc: array.array[int] = array.array("q")
    ok = refused = errors = 0
    first_error = None
    ctx.ready()
    start = time.perf_counter_ns()
    end = start + int(ctx.duration * 1e9)
    while time.perf_counter_ns() < end:
        try:
            if op(acq, cyc):
                ok += 1
            else:
                refused += 1
        except Exception as err:  # noqa: BLE001 - a benchmark counts failures
            errors += 1
            first_error = first_error or repr(err)
    elapsed = (time.perf_counter_ns() - start) / 1e9
    return {"ok": ok, "refused": refused, "errors": errors, "first_error": first_error,
            "elapsed_s": elapsed, "acq": acq.tobytes(), "cyc": cyc.tobytes()}


def warmed_loop(ctx: TaskContext, op: Any) -> dict[str, Any]:
    """``_timed_loop`` after 20 untimed calls (limits published, statements and scripts
    cached)."""
    for _ in range(20):
        op(array.array("q"), array.array("q"))
    return _timed_loop(ctx, op)


def timed_try(once: Any) -> Any:
    """An op timing one ``once()`` call, a success when it returns true (acquire = cycle)."""
    pc = time.perf_counter_ns

    def op(acq: array.array[int], cyc: array.array[int]) -> bool:
        t0 = pc()
        got = once()
        t1 = pc()
        if got:
            acq.append(t1 - t0)
            cyc.append(t1 - t0)
        return bool(got)

    return op


def permit_cycle(rt: Any) -> Any:
    """One timed ``with rt.permit("bench"): pass`` (acquire and whole-cycle latencies, ns)."""
    pc = time.perf_counter_ns

    def cycle(acq: array.array[int], cyc: array.array[int]) -> bool:
        t0 = pc()
        with rt.permit("bench"):
            t1 = pc()
        t2 = pc()
        acq.append(t1 - t0)
        cyc.append(t2 - t0)
        return True

    return cycle


def task_ours(ctx: TaskContext) -> dict[str, Any]:
    rt, start_failures = common.start_runtime(ctx, RATE_PER_MIN, BURST, TOTAL_MAX_LLM)
    pc = time.perf_counter_ns
    cycle = permit_cycle(rt)

    def try_cycle(acq: array.array[int], cyc: array.array[int]) -> bool:
        t0 = pc()
        p = rt.try_permit("bench")
        t1 = pc()
        if p is None:
            return False
        with p:
            pass
        t2 = pc()
        acq.append(t1 - t0)
        cyc.append(t2 - t0)
        return True

    op = try_cycle if ctx.params["mode"] == "try_permit" else cycle
    try:
        return warmed_loop(ctx, op) | {"start_failures": start_failures}
    finally:
        rt.close()


def _pyrate_limiter(ctx: TaskContext) -> Any:
    from pyrate_limiter import Duration, Limiter, Rate, SQLiteBucket

    bucket = SQLiteBucket.init_from_file(
        [Rate(RATE_PER_MIN, Duration.MINUTE)], table="bench",
        db_path=os.path.join(ctx.state_dir, "pyrate.sqlite"), use_file_lock=True)
    return Limiter(bucket)


def task_pyrate(ctx: TaskContext) -> dict[str, Any]:
    limiter = _pyrate_limiter(ctx)
    kwargs: dict[str, Any] = ({"blocking": True, "timeout": 0} if ctx.params["mode"] == "timeout0"
                              else {"blocking": True})
    try:
        return warmed_loop(ctx, timed_try(lambda: limiter.try_acquire("bench", **kwargs)))
    finally:
        limiter.close()


def task_raw_sqlite(ctx: TaskContext) -> dict[str, Any]:
    db = os.path.join(ctx.state_dir, "raw.sqlite3")
    lock_fd = os.open(os.path.join(ctx.state_dir, "raw.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    # Set-up under the flock: concurrent "PRAGMA journal_mode=WAL" on a new file fails with
    # "database is locked" at once (SQLite's busy handler does not cover it).
    fcntl.flock(lock_fd, fcntl.LOCK_EX)
    try:
        conn = sqlite3.connect(db, isolation_level=None, timeout=30.0)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("CREATE TABLE IF NOT EXISTS c(id INTEGER PRIMARY KEY, v INTEGER NOT NULL)")
        conn.execute("INSERT OR IGNORE INTO c(id, v) VALUES(1, 0)")
    finally:
        fcntl.flock(lock_fd, fcntl.LOCK_UN)
    use_flock = ctx.params["mode"] == "flock"
    pc = time.perf_counter_ns

    def op(acq: array.array[int], cyc: array.array[int]) -> bool:
        t0 = pc()
        if use_flock:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("UPDATE c SET v=v+1 WHERE id=1")
            conn.execute("COMMIT")
        finally:
            if use_flock:
                fcntl.flock(lock_fd, fcntl.LOCK_UN)
        t1 = pc()
        acq.append(t1 - t0)
        cyc.append(t1 - t0)
        return True

    try:
        return _timed_loop(ctx, op)
    finally:
        conn.close()
        os.close(lock_fd)


def probe_pyrate_nonblocking() -> str | None:
    """None if ``try_acquire(blocking=False)`` works with the file-locked SQLite bucket, else
    the error it raises."""
    from pyrate_limiter import Duration, Limiter, Rate, SQLiteBucket

    with common.temp_state_dir() as d:
        limiter = Limiter(SQLiteBucket.init_from_file(
            [Rate(10, Duration.SECOND)], db_path=os.path.join(d, "p.sqlite"), use_file_lock=True))
        try:
            limiter.try_acquire("probe", blocking=False)
            return None
        except Exception as err:  # noqa: BLE001 - reported as a finding
            return f"{type(err).__name__}: {err}"
        finally:
            limiter.close()


def run_shell_started(n: int, duration: float) -> list[dict[str, Any]]:
    """``n`` agents started as a shell starts them (see ``shell_agent.py``), released
    together once every one is ready; their results as the pool's tasks return them."""
    agent = Path(__file__).resolve().parent / "shell_agent.py"
    with tempfile.TemporaryDirectory() as tmp:
        procs = []
        for i in range(n):
            cwd = Path(tmp) / f"agent{i}"
            (cwd / ".pi").mkdir(parents=True)
            (cwd / ".pi" / "config.json").write_text(json.dumps({"crossInstance": {
                "runtimeDir": str(Path(tmp) / "state"), "totalMaxLlm": TOTAL_MAX_LLM,
                "providers": {"bench": {"requestsPerMinute": RATE_PER_MIN, "burst": BURST}}}}))
            env = {k: v for k, v in os.environ.items() if not k.startswith("PI_")}
            env["PI_INSTANCE_ID"] = f"agent-{i}"
            procs.append(subprocess.Popen([sys.executable, str(agent)], cwd=cwd, env=env,
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          text=True))
        try:
            for p in procs:
                assert p.stdout is not None and p.stdout.readline().strip() == "ready"
            for p in procs:
                assert p.stdin is not None
                p.stdin.write(f"go {duration}\n")
                p.stdin.flush()
            results = []
            for p in procs:
                assert p.stdout is not None
                r = json.loads(p.stdout.readline())
                r["acq"], r["cyc"] = base64.b64decode(r["acq"]), base64.b64decode(r["cyc"])
                results.append(r)
        finally:
            for p in procs:
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
        return results


def summarize(system: str, n: int, results: list[dict[str, Any]]) -> dict[str, Any]:
    acq: list[int] = []
    cyc: list[int] = []
    for r in results:
        acq.extend(array.array("q", r["acq"]))
        cyc.extend(array.array("q", r["cyc"]))
    acq.sort()
    cyc.sort()
    elapsed = max(r["elapsed_s"] for r in results)
    ok = sum(r["ok"] for r in results)

    def us(values: list[int], q: float) -> float | None:
        v = common.percentile(values, q)
        return None if v is None else v / 1000

    return {
        "system": system, "processes": n, "ok_total": ok, "elapsed_s": round(elapsed, 3),
        "ok_per_s": ok / elapsed, "per_process_ok": [r["ok"] for r in results],
        "refused": sum(r["refused"] for r in results),
        "errors": sum(r["errors"] for r in results),
        "start_failures": [f for r in results for f in r.get("start_failures", [])],
        "first_error": next((r["first_error"] for r in results if r["first_error"]), None),
        "acquire_us": {f"p{q}": us(acq, q) for q in (50, 90, 99, 99.9)} | {"max": us(acq, 100)},
        "cycle_us": {f"p{q}": us(cyc, q) for q in (50, 90, 99, 99.9)} | {"max": us(cyc, 100)},
    }


def target_of(row: dict[str, Any]) -> str:
    if row["system"] not in ("ours permit", "ours try_permit", SHELL):
        return ""
    need = TARGET_ONE if row["processes"] == 1 else TARGET_MANY
    rate_ok = row["ok_per_s"] >= need
    text = f">= {need:,}/s: {'PASS' if rate_ok else 'MISS'}"
    if row["system"] == "ours try_permit":
        text += f"; 0 refusals: {'PASS' if row['refused'] == 0 else 'MISS'}"
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per run")
    parser.add_argument("--only", default="", help="run only the systems whose name has this")
    args = parser.parse_args()
    info = common.machine_info()
    nonblocking_error = probe_pyrate_nonblocking()
    systems = [
        ("ours permit", task_ours, {"mode": "permit"}),
        ("ours try_permit", task_ours, {"mode": "try_permit"}),
        (SHELL, None, {}),
        ("pyrate try_acquire(timeout=0)", task_pyrate, {"mode": "timeout0"}),
        ("pyrate try_acquire(blocking)", task_pyrate, {"mode": "blocking"}),
        ("raw SQLite WAL", task_raw_sqlite, {"mode": "busy_handler"}),
        ("raw SQLite WAL + flock", task_raw_sqlite, {"mode": "flock"}),
    ]
    systems = [s for s in systems if args.only in s[0]]
    rows: list[dict[str, Any]] = []
    pool = WorkerPool(max(COUNTS), COUNTS)
    started = time.monotonic()
    try:
        for system, task, params in systems:
            for n in COUNTS:
                t0 = time.monotonic()
                load = os.getloadavg()[0]
                results = (run_shell_started(n, args.duration) if task is None
                           else pool.run(task, n, args.duration, params))
                row = summarize(system, n, results)
                row["target"] = target_of(row)
                row["scenario_wall_s"] = round(time.monotonic() - t0, 2)
                row["load1_before"] = load
                rows.append(row)
                print(f"  {system:32} {n} proc: {row['ok_per_s']:>10,.0f}/s "
                      f"({row['scenario_wall_s']} s)", flush=True)
    finally:
        pool.close()
    table = common.markdown_table(
        ["system", "procs", "ok/s total", "per-process ok", "acq p50 µs", "acq p99 µs",
         "cycle p50 µs", "cycle p99 µs", "refused", "errors", "target"],
        [[r["system"], str(r["processes"]), common.fmt(r["ok_per_s"]),
          " / ".join(f"{c:,}" for c in r["per_process_ok"]),
          common.fmt(r["acquire_us"]["p50"], 1), common.fmt(r["acquire_us"]["p99"], 1),
          common.fmt(r["cycle_us"]["p50"], 1), common.fmt(r["cycle_us"]["p99"], 1),
          common.fmt(r["refused"]), common.fmt(r["errors"]), r["target"]] for r in rows])
    notes = [
        "pyrate-limiter try_acquire(blocking=False) with SQLiteBucket(use_file_lock=True): "
        + ("works" if nonblocking_error is None else f"cannot run ({nonblocking_error}); "
           "measured blocking=True, timeout=0 instead (one lock attempt, no wait)"),
        ("pyrate rows: 'refused' = try_acquire returned False although the Rate never limits "
        "(the file lock was busy, or the wait timed out); acquire = cycle = one try_acquire call."),
        "raw rows: one op = one write transaction; acquire = cycle = its duration.",
    ]
    common.write_results(NAME, {
        "benchmark": NAME, "machine": info,
        "config": {"duration_s": args.duration, "process_counts": list(COUNTS),
                   "requests_per_minute": RATE_PER_MIN, "burst": BURST,
                   "total_max_llm": TOTAL_MAX_LLM,
                   "targets": {"one_process_per_s": TARGET_ONE, "many_processes_per_s":
                               TARGET_MANY, "spurious_refusals": 0}},
        "pyrate_nonblocking_error": nonblocking_error, "notes": notes,
        "wall_time_s": round(time.monotonic() - started, 1), "results": rows})
    print(f"\n{common.machine_line(info)}\n\n{table}\n")
    common.print_footnotes(notes, rows)


if __name__ == "__main__":
    main()
