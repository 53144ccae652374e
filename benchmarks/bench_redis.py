"""The Redis store: permit throughput and latency, and window accuracy, beside the libraries
a team would otherwise put on the same Redis (127.0.0.1:6379), in the same run.

Throughput (capacity always free: 10,000,000/min, burst 10,000), 1, 2, 4 and 8 processes, one
thread each, ``--duration`` s per run. The systems run side by side for each process count,
``--rounds`` times in turn, each round starting with the next system (this machine's speed
drifts; interleaving spreads the drift over all of them), and the median round of each is
reported:

* ours: ``with rt.permit("bench"): pass`` with ``PI_STORE_URL`` on the Redis (one EVALSHA per
  cycle: the release travels with the next acquire);
* ``limits`` (moving window on Redis): ``MovingWindowRateLimiter.hit``;
* pyrate-limiter 4 ``RedisBucket`` (its Redis bucket): ``Limiter.try_acquire``;
* a raw ``EVALSHA`` of ``return 1`` (the floor of one round trip through redis-py).

Window accuracy (limit 1200/min = 20/s, burst 20, 4 processes, 10 s, every process looping as
fast as it is allowed): the most grants in any window of 0.1 / 0.5 / 1 / 2 / 5 s against
burst + rate*W, the share of the bound used and Jain's fairness, for ours and for ``limits``
(moving window of 20 per second) and pyrate-limiter (20 per second), both retried every 5 ms.

Targets: at least the best peer's throughput; zero window violations and >= 95 % of the bound
used. Run: ``python benchmarks/bench_redis.py``. Results: ``benchmarks/results/bench_redis.json``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import _common as common
import bench_permits
import bench_window
from _common import TaskContext, WorkerPool

NAME = "bench_redis"
REDIS = "redis://127.0.0.1:6379/0"
COUNTS = (1, 2, 4, 8)
RETRY_SLEEP_S = 0.005


def _prefix(ctx: TaskContext) -> str:
    return f"pi-bench-{Path(ctx.state_dir).name}:"


def _ours(ctx: TaskContext, rpm: int, burst: int) -> Any:
    from cross_instance.stores.redis.store import RedisStore

    url = f"{REDIS}?prefix={_prefix(ctx)}"
    fresh = RedisStore(url)  # a new prefix: no restart grace (False if a peer declared it)
    fresh.declare_empty()
    fresh.close()
    rt, _ = common.start_runtime(ctx, rpm, burst, 64, heartbeat_timeout_ms=30_000, store=url)
    return rt


def task_ours(ctx: TaskContext) -> dict[str, Any]:
    rt = _ours(ctx, bench_permits.RATE_PER_MIN, bench_permits.BURST)
    try:
        return bench_permits.warmed_loop(ctx, bench_permits.permit_cycle(rt))
    finally:
        rt.close()


def _peer(ctx: TaskContext, per: str, amount: int) -> tuple[Any, Any]:
    """A ``try once`` callable for the peer ``ctx.params['peer']``, and its cleanup."""
    import redis

    key = f"{_prefix(ctx)}peer"
    if ctx.params["peer"] == "limits":
        from limits import parse, storage, strategies

        store = storage.RedisStorage(REDIS)
        limiter = strategies.MovingWindowRateLimiter(store)
        item = parse(f"{amount}/{per}")
        return (lambda: limiter.hit(item, key)), (lambda: None)
    if ctx.params["peer"] == "pyrate":
        from pyrate_limiter import Duration, Limiter, Rate, RedisBucket

        client = redis.Redis.from_url(REDIS)
        duration = Duration.SECOND if per == "second" else Duration.MINUTE
        bucket = RedisBucket.init([Rate(amount, duration)], client, key)
        pyrate = Limiter(bucket)
        return (lambda: pyrate.try_acquire("bench", blocking=True, timeout=0)), client.close
    client = redis.Redis.from_url(REDIS)
    script = client.register_script("return 1")
    return (lambda: script(keys=[], args=[]) == 1), client.close


def task_peer(ctx: TaskContext) -> dict[str, Any]:
    once, close = _peer(ctx, "minute", bench_permits.RATE_PER_MIN)
    try:
        return bench_permits.warmed_loop(ctx, bench_permits.timed_try(once))
    finally:
        close()


def task_window_ours(ctx: TaskContext) -> dict[str, Any]:
    from cross_instance.hostfacts import identity as hostinfo

    rt = _ours(ctx, bench_window.RATE_PER_MIN, bench_window.BURST)
    seen: list[int] = []
    ctx.ready()
    t_start = hostinfo.boottime_ns()
    end = time.monotonic() + ctx.duration
    try:
        while time.monotonic() < end:
            try:
                with rt.permit("bench", timeout=max(0.01, end - time.monotonic())):
                    seen.append(hostinfo.boottime_ns())
            except Exception:  # noqa: BLE001 - the last wait may time out at the end
                break
    finally:
        rt.close()
    return {"seen": seen, "decided": [], "stop": "", "start_failures": [],
            "t_start": t_start, "t_end": t_start + int(ctx.duration * 1e9)}


def task_window_peer(ctx: TaskContext) -> dict[str, Any]:
    from cross_instance.hostfacts import identity as hostinfo

    once, close = _peer(ctx, "second", int(bench_window.RATE_PER_S))
    seen: list[int] = []
    tries = 0
    ctx.ready()
    t_start = hostinfo.boottime_ns()
    end = time.monotonic() + ctx.duration
    try:
        while time.monotonic() < end:
            tries += 1
            if once():
                seen.append(hostinfo.boottime_ns())
            else:
                time.sleep(RETRY_SLEEP_S)
    finally:
        close()
    return {"seen": seen, "decided": [], "tries": tries, "stop": "", "start_failures": [],
            "t_start": t_start, "t_end": t_start + int(ctx.duration * 1e9)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per throughput run")
    parser.add_argument("--rounds", type=int, default=3,
                        help="runs of each system per process count (the median is kept)")
    parser.add_argument("--window-duration", type=float, default=10.0)
    args = parser.parse_args()
    info = common.machine_info()
    started = time.monotonic()
    pool = WorkerPool(max(COUNTS), (*COUNTS,))
    rows: list[dict[str, Any]] = []
    windows: list[dict[str, Any]] = []
    systems = [("ours permit (Redis)", task_ours, {}),
               ("limits moving window (Redis)", task_peer, {"peer": "limits"}),
               ("pyrate-limiter RedisBucket", task_peer, {"peer": "pyrate"}),
               ("raw EVALSHA 'return 1'", task_peer, {"peer": "raw"})]
    try:
        for n in COUNTS:  # systems side by side, round after round: drift hits all alike
            runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in systems}
            for r in range(args.rounds):  # each round starts with the next system
                first = r % len(systems)
                for system, task, params in systems[first:] + systems[:first]:
                    runs[system].append(bench_permits.summarize(
                        system, n, pool.run(task, n, args.duration, params)))
            for system, _, _ in systems:
                row = _median_run(runs[system])
                rows.append(row)
                print(f"  {system:32} {n} proc: {row['ok_per_s']:>10,.0f}/s "
                      f"(rounds: {', '.join(f'{r:,.0f}' for r in row['rounds_ok_per_s'])})",
                      flush=True)
        for system, task, params in [
                ("ours (Redis)", task_window_ours, {}),
                ("limits moving window (Redis)", task_window_peer, {"peer": "limits"}),
                ("pyrate-limiter RedisBucket", task_window_peer, {"peer": "pyrate"})]:
            result = bench_window.analyse(system, 4, pool.run(task, 4, args.window_duration,
                                                               params))
            windows.append(result)
            print(f"  window {system:32} violations {result['violations_seen']}, "
                  f"utilisation {result['utilisation']:.1%}", flush=True)
    finally:
        pool.close()
        _cleanup()
    peers = [r for r in rows if r["system"].startswith(("limits", "pyrate"))]
    for r in rows:
        if r["system"].startswith("ours"):
            best = max((p["ok_per_s"] for p in peers if p["processes"] == r["processes"]),
                       default=0.0)
            r["target"] = (f">= best peer {best:,.0f}/s: "
                           f"{'PASS' if r['ok_per_s'] >= best else 'MISS'}")
    table = common.markdown_table(
        ["system", "procs", "ok/s total", "cycle p50 µs", "cycle p99 µs", "errors", "target"],
        [[r["system"], str(r["processes"]), common.fmt(r["ok_per_s"]),
          common.fmt(r["cycle_us"]["p50"], 1), common.fmt(r["cycle_us"]["p99"], 1),
          common.fmt(r["errors"]), r.get("target", "")] for r in rows])
    wtable = common.markdown_table(
        ["system", "grants", "most in 0.1 / 0.5 / 1 / 2 / 5 s (bound)", "violations",
         "utilisation", "Jain"],
        [[w["system"], str(w["grants"]),
          " / ".join(f"{x['max_seen']} ({x['bound']:.0f})" for x in w["windows"]),
          str(w["violations_seen"]), f"{w['utilisation']:.1%}",
          common.fmt(w["jain"], 3)] for w in windows])
    common.write_results(NAME, {
        "benchmark": NAME, "machine": info, "redis": REDIS, "duration_s": args.duration,
        "rounds": args.rounds,
        "window_duration_s": args.window_duration,
        "wall_time_s": round(time.monotonic() - started, 1), "throughput": rows,
        "windows": windows})
    print(f"\n{common.machine_line(info)}\n\n{table}\n\n{wtable}\n")


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median throughput, noting every round's."""
    ordered = sorted(runs, key=lambda r: r["ok_per_s"])
    return ordered[len(ordered) // 2] | {"rounds_ok_per_s": [r["ok_per_s"] for r in runs]}


def _cleanup() -> None:
    import redis

    client = redis.Redis.from_url(REDIS)
    keys = [k for pattern in ("pi-bench-*", "LIMITER/pi-bench-*")
            for k in client.scan_iter(match=pattern, count=1000)]
    for i in range(0, len(keys), 500):
        client.delete(*keys[i:i + 500])
    client.close()


if __name__ == "__main__":
    main()
