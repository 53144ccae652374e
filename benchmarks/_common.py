"""Shared benchmark plumbing: machine facts, a pool of spawned workers started once and released
together through a barrier, percentiles, markdown tables and JSON result files.

Nothing here is measured itself. The pool exists so that interpreter start-up and imports are
never inside a measurement: workers are spawned once, each scenario does its set-up in the
workers, every participant (the parent included) meets at a barrier, and only then does the
timed loop start.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import platform
import queue
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
import timeit
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cross_instance.runtime import Runtime

RESULTS_DIR = Path(__file__).resolve().parent / "results"
BARRIER_TIMEOUT_S = 60.0


@dataclass
class TaskContext:
    """What one worker gets for one scenario. Call ``ready()`` once set-up is done: it returns
    when every worker of the scenario (and the parent) is ready, i.e. at the common start."""

    index: int
    n: int
    state_dir: str
    duration: float
    params: dict[str, Any]
    ready: Callable[[], None] = field(repr=False)


Task = Callable[[TaskContext], dict[str, Any]]


def _worker_main(inbox: Any, outbox: Any, barriers: dict[int, Any]) -> None:
    """Worker loop: run tasks until a ``None`` arrives."""
    while True:
        msg = inbox.get()
        if msg is None:
            return
        fn, index, n, state_dir, duration, params = msg
        barrier = barriers[n]
        waited = False

        def ready(barrier: Any = barrier) -> None:
            nonlocal waited
            waited = True
            barrier.wait(BARRIER_TIMEOUT_S)

        try:
            result = fn(TaskContext(index, n, state_dir, duration, params, ready))
            outbox.put((index, True, result))
        except BaseException:  # noqa: BLE001 - report everything; the parent decides
            if not waited:
                barrier.abort()
            outbox.put((index, False, traceback.format_exc()))


class WorkerPool:
    """``size`` spawned processes; ``run(task, n)`` runs ``task`` in the first ``n`` of them."""

    def __init__(self, size: int, counts: Sequence[int]) -> None:
        ctx = mp.get_context("spawn")
        self._barriers = {n: ctx.Barrier(n + 1) for n in counts}
        self._inboxes = [ctx.Queue() for _ in range(size)]
        self._outbox = ctx.Queue()
        self._procs = [ctx.Process(target=_worker_main, args=(q, self._outbox, self._barriers),
                                   daemon=True, name=f"bench-worker-{i}")
                       for i, q in enumerate(self._inboxes)]
        for p in self._procs:
            p.start()

    def run(self, task: Task, n: int, duration: float, params: dict[str, Any] | None = None,
            ) -> list[dict[str, Any]]:
        """Run ``task`` in ``n`` workers at once, with a fresh state directory that is removed
        afterwards. Returns the workers' results ordered by worker index."""
        with temp_state_dir() as state_dir:
            for i in range(n):
                self._inboxes[i].put((task, i, n, state_dir, duration, dict(params or {})))
            barrier = self._barriers[n]
            try:
                barrier.wait(BARRIER_TIMEOUT_S)
            except threading.BrokenBarrierError:
                barrier.reset()
            results: dict[int, dict[str, Any]] = {}
            errors: list[str] = []
            deadline = time.monotonic() + duration + BARRIER_TIMEOUT_S
            while len(results) + len(errors) < n:
                try:
                    index, ok, value = self._outbox.get(timeout=max(0.1, deadline
                                                                    - time.monotonic()))
                except queue.Empty:
                    raise RuntimeError(f"{n} workers of {task.__name__} did not finish") from None
                if ok:
                    results[index] = value
                else:
                    errors.append(str(value))
            if errors:
                barrier.reset()
                raise RuntimeError(f"{task.__name__} failed in a worker:\n{errors[0]}")
            return [results[i] for i in range(n)]

    def close(self) -> None:
        for q in self._inboxes:
            q.put(None)
        for p in self._procs:
            p.join(10)
            if p.is_alive():
                p.terminate()


def start_runtime(ctx: TaskContext, per_minute: int, burst: int, total_max_llm: int,
                  attempts: int = 40, **settings: Any) -> tuple[Runtime, list[str]]:
    """``Runtime.start`` for worker ``ctx.index`` with provider ``bench`` limited to
    ``per_minute``/``burst`` (and any other config ``settings``), retried every 50 ms while it
    raises ``StoreUnavailable`` (seen when many processes open a fresh state directory at
    once). Returns the runtime and the errors of the failed attempts, so results can report
    them."""
    import dataclasses

    from cross_instance.config import Config, ProviderLimits
    from cross_instance.errors import StoreUnavailable
    from cross_instance.runtime import Runtime

    cfg = dataclasses.replace(
        Config(), runtime_dir=Path(ctx.state_dir) / "state", total_max_llm=total_max_llm,
        providers={"bench": ProviderLimits(per_minute, burst)}, **settings)

    failures: list[str] = []
    while True:
        try:
            rt = Runtime.start(cwd=ctx.state_dir, config=cfg, instance_id=f"bench-{ctx.index}")
            return rt, failures
        except StoreUnavailable as err:
            failures.append(str(err))
            if len(failures) >= attempts:
                raise
            time.sleep(0.05)


@contextmanager
def temp_state_dir() -> Iterator[str]:
    """A fresh private directory for one scenario, removed afterwards."""
    path = tempfile.mkdtemp(prefix="xi-bench-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _mem_total_bytes() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _fs_type(path: str) -> str | None:
    try:
        from cross_instance.hostfacts import identity as hostinfo
        return hostinfo.filesystem_type(path, hostinfo.read_mountinfo())
    except Exception:  # noqa: BLE001 - informational only
        return None


def machine_info() -> dict[str, Any]:
    """The facts needed to compare results between machines."""
    mem = _mem_total_bytes()
    return {
        "cpu_count": os.cpu_count(),
        "mem_total_bytes": mem,
        "mem_total_gib": None if mem is None else round(mem / 2**30, 1),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "sqlite": sqlite3.sqlite_version,
        "platform": platform.platform(),
        "temp_dir": tempfile.gettempdir(),
        "temp_dir_fs": _fs_type(tempfile.gettempdir()),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "cpu_probe_us": cpu_probe_us(),
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def cpu_probe_us() -> float:
    """How fast one CPU is right now: the best of 5 timings of ``sum(range(1000))``, in µs.

    The same 2-CPU machine has measured 9 µs one day and 28 µs another; results from
    different days compare only beside this number.
    """
    return round(min(timeit.repeat("sum(range(1000))", number=2000, repeat=5)) / 2000 * 1e6, 1)


def machine_line(info: dict[str, Any]) -> str:
    probe = f", sum(range(1000)) {info['cpu_probe_us']} µs" if "cpu_probe_us" in info else ""
    return (f"Machine: {info['cpu_count']} CPUs, {info['mem_total_gib']} GiB RAM, "
            f"Python {info['python']}, SQLite {info['sqlite']}, temp dir on "
            f"{info['temp_dir_fs']} ({info['platform']}){probe}")


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100) of an already sorted sequence."""
    if not sorted_values:
        return None
    rank = max(1, -(-len(sorted_values) * q // 100))
    return float(sorted_values[min(len(sorted_values), int(rank)) - 1])


def fmt(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, int) or digits == 0:
        return f"{round(value):,}"
    return f"{value:,.{digits}f}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |",
             "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def write_results(name: str, payload: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path


def print_footnotes(notes: Sequence[str], rows: Sequence[dict[str, Any]]) -> None:
    """The notes under a results table, and any retried ``Runtime.start`` failures."""
    for note in notes:
        print(f"- {note}")
    for r in rows:
        if r["start_failures"]:
            print(f"- {r['system']}, {r['processes']} processes: Runtime.start failed "
                  f"{len(r['start_failures'])} time(s) and was retried: {r['start_failures'][0]}")
