"""Adaptive control against a provider whose true limit is lower than configured and unknown.

Three instance processes x 4 threads call a local fake provider (true limit 300/min, burst 5)
through the OpenAI SDK made coordinated by ``coordinated_client``; the runtime is configured
for 600/min, burst 20. Scenarios: (a) the provider sends OpenAI rate-limit headers, (b) it
sends none (429 + Retry-After only: AIMD). Compared, in the same run, with uncoordinated
processes each running the SDK's own retries (max_retries=2). A 429 that reaches the caller is
not retried by the coordinated clients; the next permit waits out the shared cooldown.

Reported per scenario: share of the true limit used after convergence (ok/s over the true
rate), 429s as a share of all requests (whole run and after convergence), and the convergence
time (first second after which every 5 s window runs at >= 80 % of the true rate without
429s... or, failing that, the end). Targets: with headers >= 95 % used and <= 1 % 429s;
without >= 85 % used and <= 3 % 429s. Run: ``python benchmarks/bench_adaptive.py``.
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing as mp
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import _common as common

TRUE_RPM, TRUE_BURST = 300, 5
CONFIGURED = (600, 20)
PROCESSES, THREADS = 3, 4
MESSAGES = [{"role": "user", "content": "hi"}]


def _worker(mode: str, base_url: str, state: str, name: str, seconds: float, barrier: Any,
            out: Any) -> None:
    import openai

    from cross_instance.config import Config
    from cross_instance.core.limits import ProviderLimits
    from cross_instance.integrations.httpx_transport import coordinated_client
    from cross_instance.runtime import Runtime

    rt = None
    if mode == "uncoordinated":
        client = openai.OpenAI(base_url=base_url, api_key="x", max_retries=2)
    else:
        cfg = dataclasses.replace(Config(), runtime_dir=Path(state), total_max_llm=64,
                                  providers={"openai": ProviderLimits(*CONFIGURED)})
        rt = Runtime.start(cwd=Path(state).parent, config=cfg, instance_id=name)
        client = coordinated_client(openai.OpenAI, rt, "openai", base_url=base_url,
                                    api_key="x", max_retries=0)
    barrier.wait()
    end = time.monotonic() + seconds

    def loop() -> None:
        while time.monotonic() < end:
            try:
                client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=4)
            except openai.RateLimitError:
                pass
            except Exception:
                if time.monotonic() < end:
                    raise

    threads = [threading.Thread(target=loop) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if rt is not None:
        rt.close()
    out.put(name)


def run(mode: str, headers: str, seconds: float) -> dict[str, Any]:
    from cross_instance.testing.fakeprovider import FakeProvider

    work = Path(tempfile.mkdtemp(prefix="pi-xi-bench-"))
    ctx = mp.get_context("spawn")
    try:
        with FakeProvider(requests_per_minute=TRUE_RPM, burst=TRUE_BURST, header_style=headers,
                          latency_s=(0.05, 0.15)) as fake:
            barrier, out = ctx.Barrier(PROCESSES + 1), ctx.Queue()
            procs = [ctx.Process(target=_worker, args=(
                mode, fake.base_url_openai, str(work / "state"), f"i{k}", seconds, barrier, out))
                for k in range(PROCESSES)]
            for p in procs:
                p.start()
            barrier.wait()
            fake.reset_stats()
            started = fake.stats(events=True)["events"]
            t0 = max((e[0] for e in started), default=0)
            for _ in procs:
                out.get(timeout=seconds + 120)
            for p in procs:
                p.join(timeout=30)
            events = fake.stats(events=True)["events"]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return summarise(mode, headers, events, t0, seconds)


def summarise(mode: str, headers: str, events: list[list[Any]], t0: int,
              seconds: float) -> dict[str, Any]:
    n = int(seconds)
    ok = [0] * n
    limited = [0] * n
    for t, _, status in events:
        sec = int((t - t0) / 1e9)
        if 0 <= sec < n:
            (ok if status == 200 else limited)[sec] += 1
    rate = TRUE_RPM / 60
    converged = n
    for s in range(n - 5):
        if all(sum(ok[w:w + 5]) >= 0.8 * rate * 5 and not any(limited[w:w + 5])
               for w in range(s, n - 5)):
            converged = s
            break
    after_ok, after_429 = sum(ok[converged:]), sum(limited[converged:])
    span = max(1, n - converged)
    total = sum(ok) + sum(limited)
    return {
        "mode": mode, "headers": headers, "ok": sum(ok), "rate_limited": sum(limited),
        "converged_after_s": converged,
        "used_after_convergence": after_ok / (rate * span),
        "used_whole_run": sum(ok) / (TRUE_BURST + rate * n),
        "share_429_whole_run": sum(limited) / total if total else 0.0,
        "share_429_after_convergence": after_429 / max(1, after_ok + after_429),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per scenario")
    args = parser.parse_args()
    started = time.monotonic()
    rows = [run("coordinated", "openai", args.duration), run("coordinated", "none", args.duration),
            run("uncoordinated", "openai", args.duration)]
    table = common.markdown_table(
        ["instances", "provider headers", "ok", "429s", "converged after", "used after",
         "used whole run", "429 share (whole / after)"],
        [[r["mode"], r["headers"], str(r["ok"]), str(r["rate_limited"]),
          f"{r['converged_after_s']} s", f"{r['used_after_convergence']:.1%}",
          f"{r['used_whole_run']:.1%}",
          f"{r['share_429_whole_run']:.1%} / {r['share_429_after_convergence']:.1%}"]
         for r in rows])
    info = common.machine_info()
    common.write_results("bench_adaptive", {
        "machine": info, "true_limit": [TRUE_RPM, TRUE_BURST], "configured": CONFIGURED,
        "processes": PROCESSES, "threads": THREADS, "duration_s": args.duration,
        "wall_time_s": round(time.monotonic() - started, 1), "results": rows})
    print(f"\n{common.machine_line(info)}\n\n{table}\n")


if __name__ == "__main__":
    main()
