"""What the Redis lane's kernel-kept socket timeout saves over Python's: permit cycles from one
process on the Redis at 127.0.0.1:6379, the same runtime with the lane's timeout in the kernel
(``SO_RCVTIMEO``/``SO_SNDTIMEO`` on a blocking socket, the default where redis-py allows it)
and in Python (the fallback when it does not: a ``poll`` before every send and receive).

The two run in turn, ``--rounds`` times, each round starting with the other one (this
machine's speed drifts); the medians are reported. Then the client CPU of a bare lane round
trip (a call the server answers at once) on both paths, in interleaved blocks: the part of
the difference that does not depend on the rest of the runtime. Run:
``python benchmarks/bench_redis_timeout.py``.
Results: ``benchmarks/results/bench_redis_timeout.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import _common as common

NAME = "bench_redis_timeout"


def _cycles(path: str, duration: float) -> dict[str, Any]:
    from cross_instance.config import Config, ProviderLimits
    from cross_instance.runtime import Runtime
    from cross_instance.stores.redis import lane

    wanted = path == "kernel"
    original = lane.ScriptLane.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **{**kwargs, "kernel_timeout": wanted})

    lane.ScriptLane.__init__ = init  # type: ignore[method-assign]
    try:
        with tempfile.TemporaryDirectory(prefix="xi-bench-") as tmp:
            cfg = dataclasses.replace(
                Config(), runtime_dir=Path(tmp) / "state", total_max_llm=64,
                heartbeat_timeout_ms=30_000,
                providers={"bench": ProviderLimits(10_000_000, 10_000)},
                store=f"redis://127.0.0.1:6379/0?prefix=pi-bench-{uuid.uuid4().hex[:8]}:")
            rt = Runtime.start(cwd=tmp, config=cfg, instance_id="bench-timeout")
            try:
                got = rt.store._lane.timeout_path  # type: ignore[union-attr]
                assert got == path, f"asked for {path}, the lane uses {got}"
                for _ in range(200):
                    with rt.permit("bench"):
                        pass
                count, t0 = 0, time.perf_counter()
                cpu0 = time.process_time()
                while time.perf_counter() - t0 < duration:
                    for _ in range(100):
                        with rt.permit("bench"):
                            pass
                    count += 100
                wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
            finally:
                rt.close()
    finally:
        lane.ScriptLane.__init__ = original  # type: ignore[method-assign]
    return {"cycles_per_s": count / wall, "client_cpu_us_per_cycle": cpu / count * 1e6}


def _lane_blocks(rounds: int, calls: int) -> dict[str, list[float]]:
    """Client CPU (µs) per bare lane round trip (a ``heartbeat`` of an unknown instance: the
    server does next to nothing), in interleaved blocks of ``calls``, on both paths at once."""
    from cross_instance.stores.redis.connection import connect, parse_url
    from cross_instance.stores.redis.lane import ScriptLane

    loc = parse_url("redis://127.0.0.1:6379/0?prefix=pi-bench-lane:")
    lanes = {}
    for path in ("kernel", "python"):
        lane = ScriptLane(connect(loc), ("heartbeat",), loc, kernel_timeout=path == "kernel")
        lane.prepare()
        assert lane.timeout_path == path, lane.timeout_fallback
        lanes[path] = lane
    out: dict[str, list[float]] = {"kernel": [], "python": []}
    for r in range(rounds):
        for path in (("kernel", "python") if r % 2 == 0 else ("python", "kernel")):
            run = lanes[path].run
            cpu0 = time.process_time()
            for _ in range(calls):
                run("heartbeat", "pi-bench-lane:", "", "nobody", "", "")
            out[path].append((time.process_time() - cpu0) / calls * 1e6)
    for lane in lanes.values():
        lane.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per run")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--lane-rounds", type=int, default=21)
    args = parser.parse_args()
    runs: dict[str, list[dict[str, Any]]] = {"kernel": [], "python": []}
    for r in range(args.rounds):
        for path in (("kernel", "python") if r % 2 == 0 else ("python", "kernel")):
            runs[path].append(_cycles(path, args.duration))
    summary = {
        path: {key: statistics.median(run[key] for run in rs) for key in rs[0]}
        for path, rs in runs.items()}
    lane_cpu = _lane_blocks(args.lane_rounds, 2000)
    summary["lane_client_cpu_us_per_call"] = {
        path: statistics.median(v) for path, v in lane_cpu.items()}
    k, p = summary["kernel"], summary["python"]
    summary["python_vs_kernel"] = {
        "throughput": p["cycles_per_s"] / k["cycles_per_s"] - 1,
        "client_cpu_us": p["client_cpu_us_per_cycle"] - k["client_cpu_us_per_cycle"]}
    payload = {"machine": common.machine_info(), "duration_s": args.duration,
               "rounds": args.rounds, "runs": runs, "lane_blocks": lane_cpu, "median": summary}
    out = common.write_results(NAME, payload)
    print(common.markdown_table(
        ["socket timeout kept by", "permit cycles/s (median)", "client CPU per cycle"],
        [[path, f"{summary[path]['cycles_per_s']:,.0f}",
          f"{summary[path]['client_cpu_us_per_cycle']:.1f} µs"] for path in ("kernel", "python")]))
    d = summary["python_vs_kernel"]
    lc = summary["lane_client_cpu_us_per_call"]
    print(f"Python's timeout: {d['throughput']:+.1%} throughput, "
          f"{d['client_cpu_us']:+.1f} µs client CPU per cycle; a bare lane round trip "
          f"{lc['kernel']:.1f} µs (kernel) against {lc['python']:.1f} µs (Python) of client "
          f"CPU. Written to {out}")


if __name__ == "__main__":
    main()
