"""Several real processes share one limit: windows, the concurrency cap, crashes."""

from __future__ import annotations

import os
import signal

from cross_instance.core.limiter import RateSpec
from cross_instance.runtime import Runtime
from tests.helpers_runtime import make_config
from tests.processes import workers
from tests.processes.spawn import CTX, run_together


def run_workers(target, n, args_for):
    return dict(run_together(target, [args_for(i) for i in range(n)]))


def test_every_window_stays_within_burst_plus_rate_and_nobody_starves(tmp_path, store_cfg):
    cfg = {"rpm": 1200, "burst": 5, "total": 16, **store_cfg}
    spec = RateSpec(1200, 5)
    results = run_workers(workers.saturate, 4,
                          lambda i: (str(tmp_path / "state"), f"w{i}", 3.0, cfg))
    grants = sorted(t for ts in results.values() for t in ts)
    for window_s in (0.1, 0.5, 1.0, 2.0):
        w = int(window_s * 1e9)
        bound = spec.burst + w // spec.interval_ns + 1  # +1: a closed window holds both ends
        j = 0
        for i, start in enumerate(grants):
            j = max(j, i)
            while j + 1 < len(grants) and grants[j + 1] <= start + w:
                j += 1
            assert j - i + 1 <= bound, f"{j - i + 1} grants in a {window_s}s window > {bound}"
    counts = [len(ts) for ts in results.values()]
    assert min(counts) >= 0.5 * (sum(counts) / len(counts)), counts  # first come first served


def test_concurrency_cap_is_never_exceeded(tmp_path, store_cfg):
    cfg = {"rpm": 600_000, "burst": 1000, "total": 3, **store_cfg}
    results = run_workers(workers.hold_briefly, 6,
                          lambda i: (str(tmp_path / "state"), f"h{i}", 25, cfg))
    events = sorted([(s, 1) for spans in results.values() for s, _ in spans]
                    + [(e, -1) for spans in results.values() for _, e in spans])
    level = peak = 0
    for _, delta in events:
        level += delta
        peak = max(peak, level)
    assert peak <= 3
    assert sum(len(s) for s in results.values()) == 150


def test_kill_9_of_a_holder_frees_its_permits(tmp_path, store_cfg):
    state = tmp_path / "state"
    cfg = {"rpm": 600_000, "burst": 1000, "total": 2, "interval_ms": 200, "timeout_ms": 1000,
           **store_cfg}
    ready = CTX.Queue()
    holder = CTX.Process(target=workers.hold_forever, args=(str(state), "victim", 2, cfg, ready))
    holder.start()
    pid, n = ready.get(timeout=60)
    assert n == 2
    cfg_survivor = make_config(state, **cfg)
    with Runtime.start(cwd=tmp_path, config=cfg_survivor, instance_id="survivor") as rt:
        assert rt.try_permit("p") is None  # both slots held by the victim
        os.kill(pid, signal.SIGKILL)
        holder.join(timeout=10)
        with rt.permit("p", timeout=10) as p:  # freed: the dead pid is noticed by the waiter
            assert p.permit_id
        view = rt.status()
        assert [i["instanceId"] for i in view["instances"]] == ["survivor"]
