"""``pi-xi demo``: N instance processes share one rate-limited provider account, first without
and then with cross-instance coordination; prints a table and writes a PNG.

Promises of :func:`run_demo`:

* arguments are checked first; a bad one raises ``ValueError`` with a one-line message naming it;
* one :class:`~cross_instance.testing.fakeprovider.FakeProvider` on loopback is the provider
  account;
  each run starts with its bucket full, and with every instance process ready (start-up time
  is not measured: all are released together);
* every child process is ended, every coordinated instance closes its runtime, and the temporary
  state and working directories are removed, whether the demo succeeds or fails;
* the only file left behind is ``out_dir/demo.png``.
"""

from __future__ import annotations

import math
import multiprocessing
import queue
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table

from cross_instance.demo.chart import Panel, write_chart
from cross_instance.demo.worker import CallRecord, Record, WorkerSpec, worker_main
from cross_instance.testing.fakeprovider import FakeProvider

START_TIMEOUT_S = 60.0
POLL_S = 0.25


@dataclass(frozen=True, slots=True)
class RunResult:
    """Totals of one run. ``requests``, ``ok``, ``rate_limited`` and ``errors`` count HTTP
    requests (attempts); ``calls`` and ``failed`` count calls as the application sees them
    (``failed``: still refused after the SDK's retries, so made again). Waits and latencies
    (from wanting an answer to getting it) are over answered calls; NaN when there were none."""

    name: str
    requests: int
    ok: int
    rate_limited: int
    errors: int
    throughput: float
    wait_p50_ms: float
    wait_p99_ms: float
    limit_used: float
    per_instance_ok: dict[str, int]
    records: dict[str, list[Record]] = field(repr=False, default_factory=dict)
    calls: int = 0
    failed: int = 0
    latency_p50_ms: float = math.nan
    latency_p99_ms: float = math.nan


@dataclass(frozen=True, slots=True)
class DemoResult:
    """Both runs (``uncoordinated`` first), the PNG written (None without matplotlib: the
    ``demo`` extra), and the demo's wall time."""

    runs: tuple[RunResult, ...]
    chart_path: Path | None
    elapsed_s: float

    def run(self, name: str) -> RunResult:
        """The run called ``name``; ``KeyError`` if there is none."""
        for r in self.runs:
            if r.name == name:
                return r
        raise KeyError(name)


def validate(instances: int, duration: float, rpm: int, burst: int,
             latency: tuple[float, float], concurrency: int) -> None:
    """Raise ``ValueError`` naming the first argument out of range."""
    checks: list[tuple[str, object, bool, str]] = [
        ("instances", instances, _int(instances) and 1 <= instances <= 32, "1..32"),
        ("duration", duration, 0 < duration <= 600, "> 0 and <= 600 seconds"),
        ("rpm", rpm, _int(rpm) and rpm >= 1, ">= 1"),
        ("burst", burst, _int(burst) and 1 <= burst <= 10_000, "1..10000"),
        ("concurrency", concurrency, _int(concurrency) and 1 <= concurrency <= 16, "1..16"),
        ("latency", latency, len(latency) == 2 and 0 <= latency[0] <= latency[1] <= 60,
         "(lo, hi) seconds with 0 <= lo <= hi <= 60"),
    ]
    for name, value, ok, want in checks:
        if not ok:
            raise ValueError(f"{name} must be {want} (got {value!r})")


def run_demo(*, instances: int = 3, duration: float = 12.0, rpm: int = 300, burst: int = 10,
             latency: tuple[float, float] = (0.05, 0.15), concurrency: int = 2,
             out_dir: Path = Path(".pi/demo"), console: Console | None = None,
             progress: bool = True) -> DemoResult:
    """Run the uncoordinated and the coordinated run, print the table, write the chart."""
    validate(instances, duration, rpm, burst, latency, concurrency)
    console = console if console is not None else Console()
    charting = _can_chart()
    if not charting:
        console.print("The chart needs matplotlib, which the 'demo' extra installs "
                      "(pip install 'pi-cross-instance[demo]'); running without it.",
                      markup=False)
    began = time.monotonic()
    names = [f"instance-{k}" for k in range(1, instances + 1)]
    results: list[RunResult] = []
    fake = FakeProvider(requests_per_minute=rpm, burst=burst, latency_s=latency,
                        header_style="openai").start()
    try:
        with tempfile.TemporaryDirectory(prefix="pi-xi-demo-",
                                         ignore_cleanup_errors=True) as tmp:
            for run_name in ("uncoordinated", "coordinated"):
                state = Path(tmp, f"state-{run_name}")
                cwd = Path(tmp, "cwd")
                cwd.mkdir(exist_ok=True)
                specs = [WorkerSpec(
                    name=n, url=fake.url, concurrency=concurrency, duration=duration,
                    runtime_dir=str(state) if run_name == "coordinated" else None,
                    cwd=str(cwd), rpm=rpm, burst=configured_burst(burst),
                    total_max_llm=instances * concurrency) for n in names]
                fake.refill()  # a fresh, full provider bucket per run
                records, calls = _run_once(run_name, specs, fake,
                                           console if progress else None)
                results.append(_summarize(run_name, records, calls, duration, rpm, burst))
    finally:
        fake.stop()
    headline = (f"{instances} instances x {concurrency} threads, one provider account "
                f"({rpm} requests/min, burst {burst})")
    chart = write_chart(Path(out_dir) / "demo.png", [
        Panel(f"{r.name}: {r.throughput:.2f} ok/s, {r.rate_limited} x 429",
              {n: [s / 1e9 for s, st, _ in recs if st == 200] for n, recs in r.records.items()},
              [s / 1e9 for recs in r.records.values() for s, st, _ in recs if st == 429],
              show_limited=r.name == "uncoordinated") for r in results],
        rpm / 60, duration, headline) if charting else None
    result = DemoResult(tuple(results), chart, time.monotonic() - began)
    _report(console, result, headline)
    return result


def _can_chart() -> bool:
    """Whether matplotlib (the ``demo`` extra) can be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def configured_burst(provider_burst: int) -> int:
    """The burst the coordinated instances are configured with: the provider's less one.
    The provider counts a request when it arrives, a little after the permit was granted and
    not always in the order granted; one token of room keeps that jitter from becoming a 429
    after the bucket has been drained, at the cost of one call per run. (The demo once
    configured half the provider's burst, and lost a twelfth of the run's capacity to it.)"""
    return max(1, provider_burst - 1)


def _run_once(run_name: str, specs: Sequence[WorkerSpec], fake: FakeProvider,
              console: Console | None
              ) -> tuple[dict[str, list[Record]], dict[str, list[CallRecord]]]:
    """Start one process per spec, release them together, return their request and call
    records by name."""
    ctx = multiprocessing.get_context("spawn")
    out: Any = ctx.Queue()
    go, start_ns = ctx.Event(), ctx.Value("q", 0)
    procs = [ctx.Process(target=worker_main, args=(s, go, start_ns, out), daemon=True,
                         name=f"pi-xi-demo-{s.name}") for s in specs]
    records: dict[str, list[Record]] = {}
    calls: dict[str, list[CallRecord]] = {}
    try:
        for p in procs:
            p.start()
        ready: set[str] = set()
        _collect(out, procs, ready, records, calls, len(specs), "ready",
                 time.monotonic() + START_TIMEOUT_S)
        fake.reset_stats()
        start_ns.value = time.monotonic_ns()
        go.set()
        t0 = time.monotonic()
        duration = specs[0].duration
        bar = _progress(console) if console is not None else None
        with bar if bar is not None else _Nothing():
            task = bar.add_task(run_name, total=duration, ok=0, limited=0) if bar else None
            until = t0 + duration + START_TIMEOUT_S
            while len(records) < len(specs):
                _collect(out, procs, ready, records, calls, len(specs), "result", until,
                         once=True)
                if bar is not None and task is not None:
                    stats = fake.stats()
                    finished = len(records) == len(specs)
                    elapsed = duration if finished else min(duration, time.monotonic() - t0)
                    bar.update(task, completed=elapsed, ok=stats["ok"],
                               limited=stats["rate_limited"])
        for p in procs:
            p.join(timeout=10)
        return records, calls
    finally:
        go.set()
        for p in procs:
            if p.is_alive():
                p.join(timeout=2)
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
        out.close()
        out.join_thread()


def _collect(out: Any, procs: Sequence[Any], ready: set[str], records: dict[str, list[Record]],
             calls: dict[str, list[CallRecord]], n: int, phase: str, until: float,
             once: bool = False) -> None:
    """Read worker messages until ``n`` have reached ``phase`` (or one poll, with ``once``).
    Raises ``RuntimeError`` if a worker reports an error, dies, or ``until`` passes."""
    done = ready if phase == "ready" else records
    while len(done) < n:
        try:
            msg = out.get(timeout=POLL_S)
        except queue.Empty:
            if time.monotonic() > until:
                raise RuntimeError(f"demo: instances not {phase} in time") from None
            dead = [p.name for p in procs if p.exitcode not in (None, 0)]
            if dead:
                raise RuntimeError(f"demo: instance process died: {', '.join(dead)}") from None
            if once:
                return
            continue
        if msg[0] == "error":
            raise RuntimeError(f"demo: {msg[1]} failed:\n{msg[2]}")
        if msg[0] == "ready":
            ready.add(msg[1])
        else:
            records[msg[1]], calls[msg[1]] = msg[2], msg[3]
        if once:
            return


def _progress(console: Console) -> Progress:
    return Progress(TextColumn("{task.description:<13}"), BarColumn(),
                    TextColumn("{task.completed:4.1f}/{task.total:.0f} s"),
                    TextColumn("ok [green]{task.fields[ok]}[/]  "
                               "429 [red]{task.fields[limited]}[/]"),
                    console=console, refresh_per_second=8)


class _Nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _summarize(name: str, records: dict[str, list[Record]], calls: dict[str, list[CallRecord]],
               duration: float, rpm: int, burst: int) -> RunResult:
    flat = [rec for recs in records.values() for rec in recs]
    made = [c for cs in calls.values() for c in cs]
    latencies = sorted(lat / 1e6 for _, ok, lat in made if ok)  # time to each answer
    ok = sum(1 for _, st, _ in flat if st == 200)
    limited = sum(1 for _, st, _ in flat if st == 429)
    waits = sorted(w / 1e6 for _, st, w in flat if st == 200)
    return RunResult(
        name=name, requests=len(flat), ok=ok, rate_limited=limited,
        errors=len(flat) - ok - limited, throughput=ok / duration,
        wait_p50_ms=_percentile(waits, 50), wait_p99_ms=_percentile(waits, 99),
        limit_used=ok / (burst + rpm / 60 * duration),
        per_instance_ok={n: sum(1 for _, st, _ in recs if st == 200)
                         for n, recs in sorted(records.items())},
        records=records, calls=len(made), failed=sum(1 for _, ok, _ in made if not ok),
        latency_p50_ms=_percentile(latencies, 50), latency_p99_ms=_percentile(latencies, 99))


def _percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    if not sorted_values:
        return math.nan
    return sorted_values[max(0, math.ceil(p / 100 * len(sorted_values)) - 1)]


def _report(console: Console, result: DemoResult, headline: str) -> None:
    table = Table(title=headline)
    for col in ("run", "SDK calls", "failed after SDK retries", "429s", "answers/s",
                "limit used", "time to answer p50", "p99"):
        table.add_column(col, justify="left" if col == "run" else "right", no_wrap=col == "run")
    for r in result.runs:
        table.add_row(r.name, str(r.calls), str(r.failed), str(r.rate_limited),
                      f"{r.throughput:.2f}", f"{r.limit_used:.0%}", _ms(r.latency_p50_ms),
                      _ms(r.latency_p99_ms))
    console.print(table)
    for r in result.runs:
        extra = f", {r.errors} other errors" if r.errors else ""
        console.print(f"{r.name}: {r.failed} of {r.calls} calls failed after the SDK's retries "
                      f"({r.rate_limited} rate-limit answers in all{extra}), "
                      f"{r.limit_used:.0%} of the provider limit used")
    console.print(f"chart: {result.chart_path}" if result.chart_path is not None
                  else "chart: not drawn (pip install 'pi-cross-instance[demo]')",
                  markup=False)


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.0f} ms"


def _int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
