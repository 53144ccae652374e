"""Slot hand-over between processes: how busy the concurrency cap stays when more callers wait
than there are slots, and how long a freed slot takes to reach a waiter in another process.

Busy slots: 3 processes, each with 20 threads (``permit``) or 20 / 60 asyncio tasks
(``apermit``), every caller looping on a permit held for a uniform 30-60 ms or 5-20 ms, under
``totalMaxLlm: 6`` (rate limits never bind: 10,000,000/min). Busy = the time permits were held
(from ``permit`` returning to ``release``) over 6 x the run's length; the ideal is 100 %, since
callers wait all the time. The sweep line of held intervals is checked against the cap (the
most in flight at once must stay <= 6).

Hand-over: 2 processes, one caller each, ``totalMaxLlm: 1``, holds of 2 ms: each release lets
the other process in (FIFO), so every grant follows a release in the other process; the
latency is from the ``release()`` call in one process to ``permit`` returning in the other
(``time.monotonic_ns``, one clock for the whole host on Linux and macOS).

Both stores (SQLite; Redis at 127.0.0.1:6379), sync and async. ``--rounds`` rounds, medians
reported. Targets: >= 90 % busy with 30-60 ms holds, median hand-over < 1 ms. Run:
``python benchmarks/bench_handover.py``. Results: ``benchmarks/results/bench_handover.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import random
import statistics
import threading
import time
import uuid
from typing import Any

import _common as common
from _common import TaskContext, WorkerPool

NAME = "bench_handover"
REDIS = "redis://127.0.0.1:6379/0"
RATE, BURST = 10_000_000, 10_000
CAP = 6
PROCESSES = 3
WARMUP_S = 0.3
HOLDS = {"30-60 ms": (0.030, 0.060), "5-20 ms": (0.005, 0.020)}
MODES = {"20 threads": ("sync", 20), "20 asyncio tasks": ("async", 20),
         "60 asyncio tasks": ("async", 60)}
STORES = ("sqlite", "redis")
TARGET_BUSY, TARGET_HANDOVER_MS = 0.90, 1.0


def _runtime(ctx: TaskContext, total: int) -> Any:
    settings: dict[str, Any] = {"heartbeat_timeout_ms": 30_000}
    if ctx.params["store"] == "redis":
        settings["store"] = f"{ctx.params['redis']}?prefix={ctx.params['prefix']}"
    rt, _ = common.start_runtime(ctx, RATE, BURST, total, **settings)
    return rt


HANDOVERS = (("sync", 1), ("async", 1), ("sync", 2), ("async", 2))


def _handover_name(mode: str, hosts: int) -> str:
    return mode if hosts == 1 else f"{mode}, 2 hosts"


def _wake_counts(rt: Any) -> dict[str, int]:
    wake = getattr(rt, "_wake", None)
    bell = getattr(rt, "_doorbell", None)
    return {"woken": getattr(wake, "woken", 0), "timed_out": getattr(wake, "timed_out", 0),
            "rings_received": getattr(bell, "rings_received", 0),
            "announced": getattr(getattr(rt, "_freed", None), "received", 0)}


def task_busy(ctx: TaskContext) -> dict[str, Any]:
    """Callers loop on permits for ``duration``; returns held intervals (monotonic ns)."""
    rt = _runtime(ctx, CAP)
    low, high = ctx.params["hold"]
    callers = ctx.params["callers"]
    spans: list[tuple[int, int]] = []
    try:
        ctx.ready()
        start = time.monotonic_ns()
        end = start + int(ctx.duration * 1e9)
        if ctx.params["mode"] == "sync":
            def caller(seed: int) -> None:
                rng = random.Random(seed)
                mine = []
                while time.monotonic_ns() < end:
                    with rt.permit("bench", timeout=60):
                        t0 = time.monotonic_ns()
                        time.sleep(rng.uniform(low, high))
                        mine.append((t0, time.monotonic_ns()))
                spans.extend(mine)

            threads = [threading.Thread(target=caller, args=(ctx.index * 1000 + i,))
                       for i in range(callers)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        else:
            async def acaller(seed: int) -> None:
                rng = random.Random(seed)
                while time.monotonic_ns() < end:
                    async with rt.apermit("bench", timeout=60):
                        t0 = time.monotonic_ns()
                        await asyncio.sleep(rng.uniform(low, high))
                        spans.append((t0, time.monotonic_ns()))

            async def main() -> None:
                await asyncio.gather(*(acaller(ctx.index * 1000 + i) for i in range(callers)))

            asyncio.run(main())
        return {"start": start, "end": end, "spans": spans, **_wake_counts(rt)}
    finally:
        rt.close()


def _as_host(name: str | None) -> None:
    """Register this worker under another host name (``PI_XI_HOSTNAME``; None: its own again):
    this host's doorbells cannot reach it, so a hand-over to it crosses hosts as far as the
    runtime can tell (only the store's announcements reach it)."""
    import os

    from cross_instance.hostfacts import identity as hostinfo

    if name is None:
        os.environ.pop("PI_XI_HOSTNAME", None)
    else:
        os.environ["PI_XI_HOSTNAME"] = name
    hostinfo.reset()


def task_pingpong(ctx: TaskContext) -> dict[str, Any]:
    """One caller, cap 1, short holds: returns (grant, release) times (monotonic ns). With
    ``two_hosts`` the second worker looks like another host's."""
    other = bool(ctx.params.get("two_hosts")) and ctx.index == 1
    if other:
        _as_host("bench-other-host")
    try:
        return _pingpong(ctx)
    finally:
        if other:
            _as_host(None)


def _pingpong(ctx: TaskContext) -> dict[str, Any]:
    from cross_instance.hostfacts import identity as hostinfo

    rt = _runtime(ctx, 1)
    grants: list[int] = []
    releases: list[int] = []
    try:
        ctx.ready()
        end = time.monotonic_ns() + int(ctx.duration * 1e9)
        if ctx.params["mode"] == "sync":
            while time.monotonic_ns() < end:
                p = rt.permit("bench", timeout=60)
                grants.append(time.monotonic_ns())
                time.sleep(0.002)
                releases.append(time.monotonic_ns())
                p.release()
        else:
            async def main() -> None:
                while time.monotonic_ns() < end:
                    p = await rt.apermit("bench", timeout=60)
                    grants.append(time.monotonic_ns())
                    await asyncio.sleep(0.002)
                    releases.append(time.monotonic_ns())
                    await p.arelease()

            asyncio.run(main())
        return {"grants": grants, "releases": releases, **_wake_counts(rt),
                "host": hostinfo.hostname()}
    finally:
        rt.close()


def busy_share(results: list[dict[str, Any]]) -> tuple[float, int, int]:
    """(busy share of the cap after the warm-up, most held at once, grants)."""
    lo = max(r["start"] for r in results) + int(WARMUP_S * 1e9)
    hi = min(r["end"] for r in results)
    spans = [s for r in results for s in r["spans"]]
    held = sum(max(0, min(b, hi) - max(a, lo)) for a, b in spans)
    events = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans],
                    key=lambda e: (e[0], e[1]))
    now = most = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return held / (CAP * (hi - lo)), most, len(spans)


def handover_ms(results: list[dict[str, Any]]) -> list[float]:
    """For each grant, the time since the other process's last release before it."""
    out = []
    for me, other in ((0, 1), (1, 0)):
        rel = results[other]["releases"]
        for g in results[me]["grants"]:
            i = bisect.bisect_left(rel, g)
            if i > 0 and g - rel[i - 1] < 50_000_000:  # a grant right after a release there
                out.append((g - rel[i - 1]) / 1e6)
    return sorted(out)


def _params(store: str, **params: Any) -> dict[str, Any]:
    """A scenario's parameters; on Redis its new prefix is declared empty, so that it starts
    without a restart's grace (nothing granted for one heartbeat timeout)."""
    out = {"store": store, "prefix": f"pi-bench-{uuid.uuid4().hex[:12]}:", "redis": REDIS,
           **params}
    if store == "redis":
        from cross_instance.stores.redis.store import RedisStore

        fresh = RedisStore(f"{REDIS}?prefix={out['prefix']}")
        fresh.declare_empty()
        fresh.close()
    return out


def _drop(params: dict[str, Any]) -> None:
    """Remove what a Redis scenario left under its prefix."""
    if params["store"] == "redis":
        from cross_instance.stores.redis.store import RedisStore

        store = RedisStore(f"{REDIS}?prefix={params['prefix']}")
        store.drop_everything()
        store.close()


def run(rounds: int, duration: float, stores: tuple[str, ...], modes: list[str] | None = None,
        holds: list[str] | None = None, handover: bool = True) -> dict[str, Any]:
    pool = WorkerPool(PROCESSES, (PROCESSES, 2))
    rows: list[dict[str, Any]] = []
    try:
        for rnd in range(rounds):
            for store in stores:
                for mode_name, (mode, callers) in MODES.items():
                    if modes is not None and mode_name not in modes:
                        continue
                    for hold_name, hold in HOLDS.items():
                        if holds is not None and hold_name not in holds:
                            continue
                        params = _params(store, mode=mode, callers=callers, hold=hold)
                        res = pool.run(task_busy, PROCESSES, duration, params)
                        _drop(params)
                        share, most, grants = busy_share(res)
                        rows.append({"kind": "busy", "round": rnd, "store": store,
                                     "callers": mode_name, "hold": hold_name, "busy": share,
                                     "most_held": most, "grants": grants,
                                     "woken": sum(r["woken"] for r in res),
                                     "timed_out": sum(r["timed_out"] for r in res),
                                     "rings_received": sum(r["rings_received"] for r in res)})
                        print(f"round {rnd} {store:6} {mode_name:16} {hold_name:8}: "
                              f"{share:6.1%} busy, most held {most}, {grants} grants, "
                              f"woken {rows[-1]['woken']}, polls {rows[-1]['timed_out']}",
                              flush=True)
                for mode, hosts in HANDOVERS if handover else ():
                    if hosts == 2 and store != "redis":
                        continue  # one host by construction
                    params = _params(store, mode=mode, two_hosts=hosts == 2)
                    mode = _handover_name(mode, hosts)
                    res = pool.run(task_pingpong, 2, duration, params)
                    _drop(params)
                    lat = handover_ms(res)
                    rows.append({"kind": "handover", "round": rnd, "store": store,
                                 "mode": mode, "n": len(lat),
                                 "p50_ms": common.percentile(lat, 50),
                                 "p90_ms": common.percentile(lat, 90),
                                 "p99_ms": common.percentile(lat, 99),
                                 "hosts": [r["host"] for r in res],
                                 "woken": sum(r["woken"] for r in res),
                                 "timed_out": sum(r["timed_out"] for r in res),
                                 "rings_received": sum(r["rings_received"] for r in res),
                                 "announced": sum(r["announced"] for r in res)})
                    print(f"round {rnd} {store:6} hand-over {mode:5}: n={len(lat)} "
                          f"p50 {rows[-1]['p50_ms']:.3f} ms p99 {rows[-1]['p99_ms']:.3f} ms, "
                          f"hosts {sorted(set(rows[-1]['hosts']))}, woken {rows[-1]['woken']} "
                          f"(announced {rows[-1]['announced']}, rings "
                          f"{rows[-1]['rings_received']}), polls {rows[-1]['timed_out']}",
                          flush=True)
    finally:
        pool.close()
    return {"rows": rows}


def summary(rows: list[dict[str, Any]]) -> tuple[str, str]:
    busy_rows, hand_rows = [], []
    keys = sorted({(r["store"], r["callers"], r["hold"]) for r in rows if r["kind"] == "busy"},
                  key=lambda k: (STORES.index(k[0]), list(MODES).index(k[1]),
                                 list(HOLDS).index(k[2])))
    for store, callers, hold in keys:
        got = [r["busy"] for r in rows if r["kind"] == "busy" and r["store"] == store
               and r["callers"] == callers and r["hold"] == hold]
        most = max(r["most_held"] for r in rows if r["kind"] == "busy" and r["store"] == store
                   and r["callers"] == callers and r["hold"] == hold)
        busy_rows.append([store, f"3 x {callers}", hold, "100 %",
                          f"**{statistics.median(got):.0%}** ({min(got):.0%}-{max(got):.0%})",
                          f"{most} (cap {CAP})"])
    for store in STORES:
        for mode in (_handover_name(m, h) for m, h in HANDOVERS):
            got = [r for r in rows if r["kind"] == "handover" and r["store"] == store
                   and r["mode"] == mode]
            if not got:
                continue
            hand_rows.append([store, mode,
                              f"**{statistics.median(r['p50_ms'] for r in got):.2f} ms**",
                              f"{statistics.median(r['p90_ms'] for r in got):.2f} ms",
                              f"{statistics.median(r['p99_ms'] for r in got):.2f} ms"])
    return (common.markdown_table(
                ["store", "processes x callers", "hold", "ideal", "slots busy (median, range)",
                 "most held at once"], busy_rows),
            common.markdown_table(["store", "API", "hand-over p50", "p90", "p99"], hand_rows))


def main() -> None:
    global REDIS
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--stores", default="sqlite,redis")
    parser.add_argument("--label", default="", help="a note stored with the results")
    parser.add_argument("--out", default=NAME, help="results file name (without .json)")
    parser.add_argument("--modes", default="", help="only these callers, e.g. '60 asyncio tasks'"
                        " (comma-separated)")
    parser.add_argument("--holds", default="", help="only these holds, e.g. '5-20 ms'")
    parser.add_argument("--no-handover", action="store_true", help="skip the hand-over runs")
    parser.add_argument("--redis", default="", help=f"the Redis URL (default: {REDIS})")
    args = parser.parse_args()
    REDIS = args.redis or REDIS
    started = time.time()
    out = run(args.rounds, args.duration, tuple(args.stores.split(",")),
              args.modes.split(",") if args.modes else None,
              args.holds.split(",") if args.holds else None, not args.no_handover)
    busy, hand = summary(out["rows"])
    print(busy)
    print()
    print(hand)
    common.write_results(args.out, {
        "benchmark": NAME, "label": args.label, "machine": common.machine_info(),
        "config": {"processes": PROCESSES, "cap": CAP, "holds": HOLDS,
                   "duration_s": args.duration, "rounds": args.rounds,
                   "warmup_s": WARMUP_S},
        "targets": {"busy": TARGET_BUSY, "handover_p50_ms": TARGET_HANDOVER_MS},
        "wall_time_s": time.time() - started, "rows": out["rows"],
        "tables": {"busy": busy, "handover": hand}})


if __name__ == "__main__":
    main()
