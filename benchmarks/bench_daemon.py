"""Permit cycles through the coordinator daemon, beside the embedded store and beside a bare
endpoint on the same server stack, all in one run.

Measured, from 1, 2, 4 and 8 client processes (one thread each, ~3 s per run, all released
together), cycles/s in total and p50/p99 of one cycle (µs):

* **daemon, Python**: ``with rt.permit("bench"): pass`` in a ``Runtime`` whose store is the
  daemon (``store: http://127.0.0.1:<port>``, what ``PI_COORDINATOR_ADDR`` selects). Its
  releases ride on the next acquire, so a cycle is one HTTP request.
* **daemon, HTTP API**: what a client in another language does, over ``http.client`` with
  keep-alive: ``POST /v1/permits/acquire`` carrying the previous permit in ``release``.
* **embedded store**: the same ``rt.permit`` loop on the SQLite store directly (no daemon).
* **bare endpoint**: ``POST /bench/noop`` on the same app, server and process as the daemon
  (uvicorn with httptools and uvloop, the same token and request-id layers), answered where
  the store protocol is answered, with a JSON body of the same size: the ceiling of the HTTP
  layer for the Python clients' requests. **bare FastAPI route**: the same as a FastAPI route,
  as the public API's routes are (the ceiling for the HTTP API clients).

Limits: 10,000,000/min with burst 10,000 and totalMaxLlm 64, so nothing ever waits; the
daemon serves a SQLite store in a temporary directory and runs in a process of its own,
started once for the whole run. Then the window accuracy and fairness run of
``bench_window.py`` (4 and 8 processes at 1,200/min, burst 20) through the daemon, beside the
same run on the embedded store.

Targets: daemon >= 3,000 cycles/s from 4 processes, and >= 40 % of the bare endpoint's rate;
window: 0 violations, Jain >= 0.95, as on the embedded store. Run: ``python
benchmarks/bench_daemon.py`` (``--duration``). Results: ``benchmarks/results/bench_daemon.json``.
"""

from __future__ import annotations

import argparse
import array
import http.client
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common as common
import bench_window as window
from _common import TaskContext, WorkerPool

NAME = "bench_daemon"
COUNTS = (1, 2, 4, 8)
RATE_PER_MIN, BURST, TOTAL_MAX_LLM = 10_000_000, 10_000, 64
TARGET_CYCLES_4, TARGET_SHARE = 3_000, 0.40
HERE = Path(__file__).resolve().parent


def _loop(ctx: TaskContext, once: Any) -> dict[str, Any]:
    for _ in range(20):  # warm: limits published, connections open
        once()
    cyc: array.array[int] = array.array("q")
    errors = 0
    first_error = None
    pc = time.perf_counter_ns
    ctx.ready()
    start = pc()
    end = start + int(ctx.duration * 1e9)
    while (t0 := pc()) < end:
        try:
            once()
        except Exception as err:  # noqa: BLE001 - a benchmark counts failures
            errors += 1
            first_error = first_error or repr(err)
            continue
        cyc.append(pc() - t0)
    return {"ok": len(cyc), "errors": errors, "first_error": first_error,
            "elapsed_s": (pc() - start) / 1e9, "cyc": cyc.tobytes(), "start_failures": []}


def task_runtime(ctx: TaskContext) -> dict[str, Any]:
    store = ctx.params.get("store")
    rt, failures = common.start_runtime(ctx, RATE_PER_MIN, BURST, TOTAL_MAX_LLM,
                                        **({"store": store} if store else {}))

    def once() -> None:
        with rt.permit("bench"):
            pass

    try:
        return _loop(ctx, once) | {"start_failures": failures}
    finally:
        rt.close()


def _post(conn: http.client.HTTPConnection, path: str, body: dict[str, Any]) -> Any:
    conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    response = conn.getresponse()
    data = response.read()
    if response.status != 200:
        raise RuntimeError(f"HTTP {response.status}: {data[:200]!r}")
    return json.loads(data)


def task_http(ctx: TaskContext) -> dict[str, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", ctx.params["port"])
    iid = f"http-bench-{ctx.index}-{os.getpid()}"
    if ctx.params["path"].startswith("/bench/"):
        body = {"instanceId": iid, "provider": "bench", "release": [1]}

        def once() -> None:
            _post(conn, ctx.params["path"], body)
    else:
        _post(conn, "/v1/instances/register", {"instanceId": iid})
        held: list[int] = []

        def once() -> None:
            got = _post(conn, "/v1/permits/acquire",
                        {"instanceId": iid, "provider": "bench", "release": held})
            held[:] = [got["permitId"]]

    try:
        return _loop(ctx, once)
    finally:
        conn.close()


def summarise(system: str, n: int, results: list[dict[str, Any]]) -> dict[str, Any]:
    cyc = sorted(x for r in results for x in array.array("q", r["cyc"]))
    ok = sum(r["ok"] for r in results)
    elapsed = max(r["elapsed_s"] for r in results)
    return {"system": system, "processes": n, "cycles": ok,
            "cycles_per_s": ok / elapsed if elapsed else 0.0,
            "p50_us": (common.percentile(cyc, 50) or 0) / 1000,
            "p99_us": (common.percentile(cyc, 99) or 0) / 1000,
            "errors": sum(r["errors"] for r in results),
            "first_error": next((r["first_error"] for r in results if r["first_error"]), None),
            "start_failures": [f for r in results for f in r["start_failures"]]}


def start_daemon(state: str) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen([sys.executable, str(HERE / "daemon_server.py"), state],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    return proc, port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per run")
    parser.add_argument("--window-duration", type=float, default=10.0)
    args = parser.parse_args()
    info = common.machine_info()
    rows: list[dict[str, Any]] = []
    windows: list[dict[str, Any]] = []
    pool = WorkerPool(max(COUNTS), COUNTS)
    with tempfile.TemporaryDirectory(prefix="pi-xi-bench-daemon-") as state:
        daemon, port = start_daemon(state)
        store = f"http://127.0.0.1:{port}"
        try:
            for n in COUNTS:
                for system, task, params in (
                        ("bare endpoint", task_http, {"port": port, "path": "/bench/noop"}),
                        ("bare FastAPI route", task_http,
                         {"port": port, "path": "/bench/noop-route"}),
                        ("daemon, Python", task_runtime, {"store": store}),
                        ("daemon, HTTP API", task_http, {"port": port, "path": "acquire"}),
                        ("embedded store", task_runtime, {})):
                    row = summarise(system, n, pool.run(task, n, args.duration, params))
                    rows.append(row)
                    print(f"  {system:18} {n} proc: {row['cycles_per_s']:,.0f}/s", flush=True)
            for n in window.COUNTS:
                for system, params in (("daemon", {"store": store}), ("embedded", {})):
                    w = window.analyse(system, n, pool.run(window.task_ours, n,
                                                           args.window_duration, params))
                    windows.append(w)
                    print(f"  window {system:9} {n} proc: {w['violations_seen']} violations, "
                          f"Jain {w['jain']:.3f}", flush=True)
        finally:
            daemon.kill()
            daemon.wait()
            pool.close()
    rate = {(r["system"], r["processes"]): r["cycles_per_s"] for r in rows}
    for r in rows:
        bare = rate.get(("bare endpoint", r["processes"]))
        r["share_of_bare"] = r["cycles_per_s"] / bare if bare else None
    four = rate.get(("daemon, Python", 4), 0.0)
    four_share = four / rate[("bare endpoint", 4)]
    table = common.markdown_table(
        ["system", "procs", "cycles/s", "share of bare", "p50 µs", "p99 µs", "errors"],
        [[r["system"], str(r["processes"]), common.fmt(r["cycles_per_s"]),
          f"{r['share_of_bare']:.0%}", common.fmt(r["p50_us"]), common.fmt(r["p99_us"]),
          str(r["errors"])] for r in rows])
    wtable = common.markdown_table(
        ["system", "procs", "grants", "violations (seen / store clock)", "utilisation", "Jain"],
        [[w["system"], str(w["processes"]), str(w["grants"]),
          f"{w['violations_seen']} / {common.fmt(w['violations_decided'])}",
          f"{w['utilisation']:.1%}", common.fmt(w["jain"], 3)] for w in windows])
    verdicts = (f"daemon (Python) from 4 processes: {four:,.0f}/s (target >= {TARGET_CYCLES_4:,}"
                f": {'PASS' if four >= TARGET_CYCLES_4 else 'MISS'}), {four_share:.0%} of the "
                f"bare endpoint (target >= {TARGET_SHARE:.0%}: "
                f"{'PASS' if four_share >= TARGET_SHARE else 'MISS'})")
    print()
    print(common.machine_line(info))
    print()
    print(table)
    print()
    print(wtable)
    print()
    print(verdicts)
    common.print_footnotes([], rows)
    common.write_results(NAME, {"machine": info, "duration_s": args.duration, "rows": rows,
                                "windows": windows, "verdict": verdicts})


if __name__ == "__main__":
    main()
