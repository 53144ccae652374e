"""The provider gateway (``pi-xi serve``) beside LiteLLM's proxy and beside going straight to
the provider, all in one run, against the local fake provider.

Every system forwards the same OpenAI request (``POST .../chat/completions``, a short prompt,
``max_tokens`` 16) to one fake provider (``cross_instance.testing.fakeprovider``, in a process
of its own, controlled over a pipe: its limits are changed and its bucket refilled and its
counts cleared before every run). Clients use ``http.client`` with keep-alive connections:

* **direct**: ``http://127.0.0.1:<fake>/v1/chat/completions``, the floor.
* **gateway**: ``pi-xi serve --port P`` as a subprocess, its working directory a temporary one
  holding ``.pi/config.json`` with ``providers.openai = {baseUrl: <fake>/v1,
  requestsPerMinute, burst}``, ``totalMaxLlm`` 64 and ``gateway.maxWaitMs`` 60,000; clients
  call ``/openai/v1/chat/completions`` with ``Authorization: Bearer sk-bench-<n>``. The gateway
  waits for a permit (fairly, shared through its store), forwards, and answers as the provider
  did. Started afresh for each set of limits. When ``pi-xi serve`` does not answer that route
  (the gateway is not in this tree yet), its rows say "not available".
* **LiteLLM**: ``litellm --config <yaml> --host 127.0.0.1 --port P --num_workers 1`` from its
  own virtual environment (``--litellm PATH``, default ``litellm`` on PATH; without it, its
  rows say "not available"). One YAML, three deployments of ``openai/bench-model`` at the fake,
  differing only in their ``rpm`` (10,000,000, 1,200 and 600), and ``router_settings:
  routing_strategy: usage-based-routing-v2``, LiteLLM's documented way to hold a deployment to
  its ``rpm``: a counter per deployment and calendar minute, and past ``rpm`` in that minute
  LiteLLM answers 429 itself without calling the provider. A random ``master_key`` (1.108
  refuses to start without one), which clients send as their bearer token. Everything else is
  LiteLLM's default (e.g. the router's 2 retries). Nothing may reach the internet: the
  environment has ``LITELLM_LOCAL_MODEL_COST_MAP=True`` (no fetch of the remote cost map),
  ``LITELLM_LOG=ERROR``, ``LITELLM_TELEMETRY=False`` (telemetry is off by default since 1.107
  anyway) and ``NO_PROXY`` for loopback.

Measured, generous limits first (10,000,000/min, burst 10,000 everywhere; nothing waits; the
fake answers at once):

1. **Added latency**, non-streaming: one client process, sequential requests on one
   connection for ``--latency-duration`` s: p50/p99 of a request, and minus direct's (what
   the system adds). Target: gateway p50 added < 2 ms, and below LiteLLM's.
2. **Time to first streamed byte**: the same with ``"stream": true, "stream_options":
   {"include_usage": true}``; the time from sending the request until the first byte of the
   SSE body (``HTTPResponse.read1``); the rest is read and must end with ``data: [DONE]``.
   Target: gateway p50 within 2 ms of direct.
3. **Throughput**: 4 client processes x 2 threads, one keep-alive connection per thread,
   ``--duration`` s: answered requests per second in total, and the CPU time the fake, the
   proxy and the 4 client processes used (% of one CPU over the run, whole process trees), and
   the CPU time of the fake and of the proxy per request, to show which one is the bottleneck
   (per request is the fairer figure when other work on the machine takes CPU). Target:
   gateway >= 1,000 req/s and ahead of LiteLLM.

Then the provider's true limit is **below the configured one**: the fake admits 600/min with
burst 10, while the gateway is configured for 1,200/min (burst 20) and LiteLLM's deployment for
rpm 1,200. 4 processes x 2 threads send as fast as they can (the next request as soon as the
last is answered, no pause after a 429) for ``--duration`` s. Counted: the 200s and 429s the
clients get (a 429 whose body is the fake's is "from upstream", let through; any other is the
proxy's own), and the fake's own 200s and 429s from its ``stats()``, and the fake's 200s as a
share of what its limit allows in the run (burst + rate x time).

* The gateway starts at the configured 1,200/min, learns from the provider's 429s and its
  ``x-ratelimit-*`` / ``Retry-After`` headers that the true limit is lower, and slows down; its
  callers wait for a permit instead of getting errors.
* LiteLLM counts only its own requests against its configured rpm per calendar minute: below
  1,200 in the minute it forwards everything, and the provider's 429s come back to the
  callers (after its retries); past 1,200 it refuses by itself.
* direct: every request goes straight to the provider; what it refuses, the callers get.

And **within the limit**: the configured limit equals the true one (600/min, burst 10 for the
gateway, rpm 600 for LiteLLM). Direct clients here each respect the limit on their own (every
process paces itself with a local 600/min, burst 10 bucket, as an uncoordinated process
would), so together they send 4 x the limit and get 429s; gateway and LiteLLM clients send as
fast as they can. Target: 0 429s through the gateway.

Run: ``python benchmarks/bench_gateway.py --litellm /work/litellm-venv/bin/litellm`` (about 3
min with the defaults; ``--quick`` about 1.5 min; ``--duration`` and ``--latency-duration``
to choose). Install LiteLLM's proxy in a virtual environment of its own (``python3 -m venv
litellm-venv && litellm-venv/bin/pip install 'litellm[proxy]'``); it is not a dependency of
this project. Results: ``benchmarks/results/bench_gateway.json`` (every row, the fake's stats,
the LiteLLM version and config, the machine). With few CPUs, the 4 client processes, the fake
and the proxy share them, so compare only numbers from one quiet run.
"""

from __future__ import annotations

import argparse
import array
import http.client
import json
import multiprocessing as mp
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import _common as common
from _common import TaskContext, WorkerPool

NAME = "bench_gateway"
MODEL = "bench-model"
MESSAGES = [{"role": "user", "content": "Say hello to the benchmark, briefly."}]
GENEROUS = (10_000_000, 10_000)
TRUE_LIMIT = (600, 10)
OVER_CONFIGURED = (1_200, 20)
PROCESSES, THREADS = 4, 2
TOTAL_MAX_LLM, MAX_WAIT_MS = 64, 60_000
TARGET_ADDED_P50_MS, TARGET_TTFB_MS, TARGET_RPS = 2.0, 2.0, 1_000
CLIENT_TIMEOUT_S = 90.0
START_TIMEOUT_S = {"gateway": 30.0, "LiteLLM": 180.0}
SYSTEMS = ("direct", "gateway", "LiteLLM")
LITELLM_MODELS = {"bench-free": GENEROUS[0], "bench-1200": OVER_CONFIGURED[0],
                  "bench-600": TRUE_LIMIT[0]}
LOOPBACK_ENV = {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
LITELLM_MASTER_KEY = "sk-bench-master-" + os.urandom(16).hex()
LITELLM_ENV = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR",
               "LITELLM_TELEMETRY": "False", "LITELLM_MODE": "PRODUCTION"}


class Unavailable(Exception):
    """A system that cannot be measured in this run; ``str(err)`` says why."""


# -- the fake provider, in a process of its own --------------------------------------------

def fake_main(conn: Any) -> None:
    """Serve a ``FakeProvider`` until told to stop; commands arrive on the pipe ``conn``."""
    from cross_instance.testing.fakeprovider import FakeProvider

    fake = FakeProvider(requests_per_minute=GENEROUS[0], burst=GENEROUS[1], latency_s=0.0)
    fake.start()
    conn.send(fake.port)
    while True:
        cmd, *args = conn.recv()
        if cmd == "limits":  # new limits, a full bucket, no counts
            fake.set_limit(*args)
            fake.refill()
            fake.reset_stats()
            conn.send(fake.stats())
        elif cmd == "stats":
            conn.send(fake.stats())
        else:
            fake.stop()
            conn.send(None)
            return


class Fake:
    """The parent's handle on the fake provider process."""

    def __init__(self) -> None:
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=fake_main, args=(child,), daemon=True,
                                name="bench-fake-provider")
        self.proc.start()
        if not self._conn.poll(60):
            raise RuntimeError("the fake provider did not start within 60 s")
        self.port: int = self._conn.recv()

    def _ask(self, *msg: Any) -> Any:
        self._conn.send(msg)
        if not self._conn.poll(30):
            raise RuntimeError(f"the fake provider did not answer {msg[0]!r} within 30 s")
        return self._conn.recv()

    def limits(self, rpm: int, burst: int) -> None:
        self._ask("limits", rpm, burst)

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = self._ask("stats")
        out.pop("by_client", None)
        return out

    def close(self) -> None:
        try:
            self._ask("stop")
        except (OSError, EOFError, RuntimeError):
            pass
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()


# -- the proxies, as subprocesses ----------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(port: int, path: str, timeout: float = 2.0) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def request_body(model: str, stream: bool) -> bytes:
    body: dict[str, Any] = {"model": model, "messages": MESSAGES, "max_tokens": 16}
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    return json.dumps(body).encode()


def probe(port: int, path: str, model: str, key: str = "sk-bench-probe") -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", path, request_body(model, False),
                     {"Content-Type": "application/json", "Authorization": f"Bearer {key}"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _log_tail(log: Path, n: int = 1500) -> str:
    try:
        return log.read_text(errors="replace")[-n:]
    except OSError:
        return ""


class Server:
    """A proxy subprocess in a session of its own, stopped by its process group."""

    def __init__(self, system: str, argv: list[str], cwd: Path, env: dict[str, str],
                 port: int, health: str) -> None:
        self.system, self.port, self.log = system, port, cwd / f"{system}.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT_S[system]
        while True:
            if self.proc.poll() is not None:
                raise Unavailable(f"{system} exited with {self.proc.returncode} while starting: "
                                  f"{_log_tail(self.log)}")
            try:
                if http_get(port, health) == 200:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise Unavailable(f"{system} did not answer GET {health} within "
                                  f"{START_TIMEOUT_S[system]:.0f} s: {_log_tail(self.log)}")
            time.sleep(0.2)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


def start_gateway(pi_xi: str, root: Path, fake_port: int, rpm: int, burst: int) -> Server:
    work = Path(tempfile.mkdtemp(prefix=f"gw-{rpm}-", dir=root))
    (work / ".pi").mkdir()
    config = {"crossInstance": {
        "runtimeDir": str(work / "rt"), "totalMaxLlm": TOTAL_MAX_LLM,
        "providers": {"openai": {"baseUrl": f"http://127.0.0.1:{fake_port}/v1",
                                 "requestsPerMinute": rpm, "burst": burst}},
        "gateway": {"maxWaitMs": MAX_WAIT_MS}}}
    (work / ".pi" / "config.json").write_text(json.dumps(config, indent=2))
    port = free_port()
    env = os.environ | LOOPBACK_ENV
    for name in ("PI_COORDINATOR_ADDR", "PI_COORDINATOR_PORT", "PI_COORDINATOR_TOKEN",
                 "PI_COORDINATOR_TOKEN_FILE"):
        env.pop(name, None)
    return Server("gateway", [pi_xi, "serve", "--port", str(port)], work, env, port,
                  "/v1/health")


def litellm_config(fake_port: int) -> dict[str, Any]:
    return {
        "model_list": [
            {"model_name": name,
             "litellm_params": {"model": f"openai/{MODEL}",
                                "api_base": f"http://127.0.0.1:{fake_port}/v1",
                                "api_key": "sk-bench", "rpm": rpm}}
            for name, rpm in LITELLM_MODELS.items()],
        "router_settings": {"routing_strategy": "usage-based-routing-v2"},
        "litellm_settings": {"set_verbose": False, "telemetry": False},
        # 1.108 refuses to start without one; with no database, checking it is a comparison
        "general_settings": {"master_key": LITELLM_MASTER_KEY},
    }


def litellm_version(exe: str) -> str | None:
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=120,
                             env=os.environ | LITELLM_ENV | LOOPBACK_ENV)
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in (out.stdout + out.stderr).splitlines():
        if "Version" in line:
            return line.split("=")[-1].strip()
    return None


def start_litellm(exe: str, root: Path, fake_port: int) -> Server:
    work = Path(tempfile.mkdtemp(prefix="litellm-", dir=root))
    # JSON is YAML: LiteLLM reads it with yaml.safe_load
    (work / "config.yaml").write_text(json.dumps(litellm_config(fake_port), indent=2))
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OPENAI_", "LITELLM_", "DATABASE_URL"))}
    env |= LITELLM_ENV | LOOPBACK_ENV
    return Server("LiteLLM", [exe, "--config", str(work / "config.yaml"), "--host",
                              "127.0.0.1", "--port", str(port), "--num_workers", "1"],
                  work, env, port, "/health/liveliness")


def tree_cpu_s(pid: int | None) -> float | None:
    """User + system CPU seconds of ``pid`` and all its descendants (Linux ``/proc``)."""
    if pid is None:
        return None
    parent: dict[int, int] = {}
    cpu: dict[int, int] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return None
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", encoding="ascii", errors="replace") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent[int(name)] = int(fields[1])
        cpu[int(name)] = int(fields[11]) + int(fields[12])
    total, todo = 0, [pid]
    children: dict[int, list[int]] = {}
    for child, ppid in parent.items():
        children.setdefault(ppid, []).append(child)
    while todo:
        p = todo.pop()
        total += cpu.get(p, 0)
        todo += children.get(p, [])
    return total / os.sysconf("SC_CLK_TCK")


# -- the client workers --------------------------------------------------------------------

class Pacer:
    """A local GCRA bucket of ``rpm``/``burst`` shared by one process's threads: what an
    uncoordinated process that respects the limit on its own does."""

    def __init__(self, rpm: int, burst: int) -> None:
        self.interval = 60.0 / rpm
        self.tolerance = (burst - 1) * self.interval
        self.tat = time.monotonic()
        self.lock = threading.Lock()

    def wait(self, end: float) -> bool:
        with self.lock:
            now = time.monotonic()
            at = max(now, self.tat - self.tolerance)
            if at >= end:
                return False
            self.tat = max(self.tat, at) + self.interval
        if at > now:
            time.sleep(at - now)
        return True


class Client:
    """One keep-alive connection sending the benchmark's request; reconnects after a failure."""

    def __init__(self, port: int, path: str, body: bytes, headers: dict[str, str]) -> None:
        self.port, self.path, self.body, self.headers = port, path, body, headers
        self.conn: http.client.HTTPConnection | None = None

    def _conn(self) -> http.client.HTTPConnection:
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port,
                                                   timeout=CLIENT_TIMEOUT_S)
            self.conn.connect()
        return self.conn

    def drop(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def get(self, path: str) -> None:
        conn = self._conn()
        try:
            conn.request("GET", path)
            conn.getresponse().read()
        except BaseException:
            self.drop()
            raise

    def post(self) -> tuple[int, bytes, int]:
        """Send once: (status, body, ns from sending until the first body byte)."""
        conn = self._conn()
        pc = time.perf_counter_ns
        try:
            t0 = pc()
            conn.request("POST", self.path, self.body, self.headers)
            response = conn.getresponse()
            first = response.read1(65536)
            t_first = pc() - t0
            data = first + response.read()
            if response.will_close:
                self.drop()
            return response.status, data, t_first
        except BaseException:
            self.drop()
            raise


def _thread_loop(client: Client, end: float, stream: bool, pacer: Pacer | None,
                 out: dict[str, Any]) -> None:
    lat: array.array[int] = array.array("q")
    ttfb: array.array[int] = array.array("q")
    statuses: dict[str, int] = {}
    upstream_429 = errors = incomplete = 0
    first_error = sample = None
    pc = time.perf_counter_ns
    while time.monotonic() < end:
        if pacer is not None and not pacer.wait(end):
            break
        t0 = pc()
        try:
            status, data, t_first = client.post()
        except Exception as err:  # noqa: BLE001 - a benchmark counts failures
            errors += 1
            first_error = first_error or repr(err)
            time.sleep(0.01)
            continue
        elapsed = pc() - t0
        statuses[str(status)] = statuses.get(str(status), 0) + 1
        if status == 200:
            if stream and not data.rstrip().endswith(b"data: [DONE]"):
                incomplete += 1
                continue
            lat.append(elapsed)
            ttfb.append(t_first)
        else:
            if status == 429 and b"fake provider" in data:
                upstream_429 += 1
            sample = sample or f"{status}: {data[:300].decode(errors='replace')}"
    out.update(lat=lat, ttfb=ttfb, statuses=statuses, upstream_429=upstream_429, errors=errors,
               first_error=first_error, sample=sample, incomplete=incomplete)


def task_client(ctx: TaskContext) -> dict[str, Any]:
    """``params``: port, path, model, stream, threads, warm (POSTs per connection before the
    start, or GETs of ``warm_get`` when the run is rate limited), pace ([rpm, burst] or None)."""
    p = ctx.params
    headers = {"Content-Type": "application/json",
               "Authorization": f"Bearer {p.get('key') or f'sk-bench-{ctx.index}'}",
               "x-client-id": f"{p['system']}-{ctx.index}"}
    body = request_body(p["model"], p["stream"])
    clients = [Client(p["port"], p["path"], body, headers) for _ in range(p["threads"])]
    for c in clients:
        for _ in range(p["warm"]):
            if p.get("warm_get"):
                c.get(p["warm_get"])
            else:
                c.post()
    pacer = Pacer(*p["pace"]) if p.get("pace") else None
    outs: list[dict[str, Any]] = [{} for _ in clients]
    ctx.ready()
    start = time.monotonic()
    end = start + ctx.duration
    threads = [threading.Thread(target=_thread_loop, args=(c, end, p["stream"], pacer, o))
               for c, o in zip(clients, outs, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    for c in clients:
        c.drop()
    statuses: dict[str, int] = {}
    for o in outs:
        for k, v in o["statuses"].items():
            statuses[k] = statuses.get(k, 0) + v
    return {"elapsed_s": elapsed, "statuses": statuses,
            "lat": b"".join(o["lat"].tobytes() for o in outs),
            "ttfb": b"".join(o["ttfb"].tobytes() for o in outs),
            "upstream_429": sum(o["upstream_429"] for o in outs),
            "errors": sum(o["errors"] for o in outs),
            "incomplete": sum(o["incomplete"] for o in outs),
            "first_error": next((o["first_error"] for o in outs if o["first_error"]), None),
            "sample": next((o["sample"] for o in outs if o["sample"]), None)}


# -- running and summarising ---------------------------------------------------------------

def _ms(values: list[int], q: float) -> float | None:
    v = common.percentile(values, q)
    return None if v is None else v / 1e6


def run_case(pool: WorkerPool, fake: Fake, case: str, system: str, target: dict[str, Any],
             n: int, duration: float, fake_limits: tuple[int, int], proxy_pid: int | None,
             **params: Any) -> dict[str, Any]:
    fake.limits(*fake_limits)
    load = [round(x, 2) for x in os.getloadavg()]
    clients = [w.pid for w in pool._procs[:n]]  # the pool's workers, for CPU accounting

    def client_cpu() -> float | None:
        times = [tree_cpu_s(pid) for pid in clients]
        return None if None in times else sum(t for t in times if t is not None)

    cpu0 = (tree_cpu_s(fake.proc.pid), tree_cpu_s(proxy_pid), client_cpu())
    t0 = time.monotonic()
    results = pool.run(task_client, n, duration, {"system": system, **target, **params})
    wall = time.monotonic() - t0
    cpu1 = (tree_cpu_s(fake.proc.pid), tree_cpu_s(proxy_pid), client_cpu())
    fstats = fake.stats()
    elapsed = max(r["elapsed_s"] for r in results)
    lat = sorted(x for r in results for x in array.array("q", r["lat"]))
    ttfb = sorted(x for r in results for x in array.array("q", r["ttfb"]))
    statuses: dict[str, int] = {}
    for r in results:
        for k, v in r["statuses"].items():
            statuses[k] = statuses.get(k, 0) + v
    ok = len(lat)
    rate, burst = fake_limits

    def cpu_share(i: int, per: float | None = None) -> float | None:
        before, after = cpu0[i], cpu1[i]
        if before is None or after is None:
            return None
        return (after - before) / (wall if per is None else max(per, 1) / 1000)

    row = {
        "case": case, "system": system, "available": True, "processes": n,
        "threads": params.get("threads", 1), "duration_s": duration, "elapsed_s": elapsed,
        "load_average_before": load, "ok": ok, "ok_per_s": ok / elapsed if elapsed else 0.0,
        "statuses": statuses, "client_429": statuses.get("429", 0),
        "client_429_from_upstream": sum(r["upstream_429"] for r in results),
        "other_non_200": sum(v for k, v in statuses.items() if k not in ("200", "429")),
        "errors": sum(r["errors"] for r in results),
        "stream_incomplete": sum(r["incomplete"] for r in results),
        "first_error": next((r["first_error"] for r in results if r["first_error"]), None),
        "sample_non_200": next((r["sample"] for r in results if r["sample"]), None),
        "p50_ms": _ms(lat, 50), "p99_ms": _ms(lat, 99),
        "ttfb_p50_ms": _ms(ttfb, 50), "ttfb_p99_ms": _ms(ttfb, 99),
        "fake_limits": list(fake_limits), "fake_stats": fstats,
        "fake_bound": burst + rate * elapsed / 60.0,
        "fake_cpu_share": cpu_share(0), "proxy_cpu_share": cpu_share(1),
        "clients_cpu_share": cpu_share(2),
        "fake_cpu_ms_per_request": cpu_share(0, per=fstats["requests"]),
        "proxy_cpu_ms_per_request": cpu_share(1, per=ok),
        "start_failures": [],
    }
    row["client_429_own"] = row["client_429"] - row["client_429_from_upstream"]
    row["fake_ok_share_of_bound"] = fstats["ok"] / row["fake_bound"]
    return row


def unavailable_row(case: str, system: str, reason: str) -> dict[str, Any]:
    return {"case": case, "system": system, "available": False, "reason": reason,
            "start_failures": []}


def summarise_text(row: dict[str, Any]) -> str:
    if not row["available"]:
        return f"  {row['case']:22} {row['system']:8} not available"
    return (f"  {row['case']:22} {row['system']:8} {row['ok_per_s']:8,.0f} ok/s  "
            f"p50 {common.fmt(row['p50_ms'], 2)} ms  ttfb p50 {common.fmt(row['ttfb_p50_ms'], 2)}"
            f" ms  429 {row['client_429']} (fake {row['fake_stats']['rate_limited']})  "
            f"errors {row['errors']}")


# -- tables --------------------------------------------------------------------------------

NA = "not available"


def _minus(value: float | None, base: float | None) -> str:
    if value is None or base is None:
        return "-"
    return f"{value - base:+.2f}"


def latency_table(rows: list[dict[str, Any]], key: str) -> str:
    base = next((r for r in rows if r["system"] == "direct" and r["available"]), None)
    out = []
    for r in rows:
        if not r["available"]:
            out.append([r["system"], NA, NA, "-", "-", "-", "-"])
            continue
        p50, p99 = r[f"{key}p50_ms"], r[f"{key}p99_ms"]
        b50, b99 = (base[f"{key}p50_ms"], base[f"{key}p99_ms"]) if base else (None, None)
        out.append([r["system"], common.fmt(p50, 2), common.fmt(p99, 2),
                    _minus(p50, b50), _minus(p99, b99), f"{r['ok']:,}",
                    str(r["errors"] + r["other_non_200"] + r["client_429"]
                        + r["stream_incomplete"])])
    return common.markdown_table(["system", "p50 ms", "p99 ms", "added p50 ms", "added p99 ms",
                                  "requests", "failed"], out)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.0%}"


def throughput_table(rows: list[dict[str, Any]]) -> str:
    out = []
    for r in rows:
        if not r["available"]:
            out.append([r["system"], NA] + ["-"] * 8)
            continue
        out.append([r["system"], common.fmt(r["ok_per_s"]), common.fmt(r["p50_ms"], 2),
                    common.fmt(r["p99_ms"], 2),
                    str(r["errors"] + r["other_non_200"] + r["client_429"]),
                    _pct(r["fake_cpu_share"]), _pct(r["proxy_cpu_share"]),
                    _pct(r["clients_cpu_share"]), common.fmt(r["fake_cpu_ms_per_request"], 2),
                    common.fmt(r["proxy_cpu_ms_per_request"], 2)])
    return common.markdown_table(["system", "req/s", "p50 ms", "p99 ms", "failed", "fake CPU",
                                  "proxy CPU", "clients CPU", "fake CPU ms/req",
                                  "proxy CPU ms/req"], out)


def limit_table(rows: list[dict[str, Any]]) -> str:
    out = []
    for r in rows:
        label = f"{r['case']}: {r['system']}"
        if not r["available"]:
            out.append([label, NA] + ["-"] * 6)
            continue
        fs = r["fake_stats"]
        out.append([label, f"{r['ok']:,}",
                    f"{r['client_429']:,} ({r['client_429_from_upstream']:,} / "
                    f"{r['client_429_own']:,})",
                    str(r["errors"] + r["other_non_200"]), f"{fs['ok']:,}",
                    f"{fs['rate_limited']:,}", f"{r['fake_ok_share_of_bound']:.0%}",
                    common.fmt(r["p50_ms"], 1)])
    return common.markdown_table(
        ["case: system", "client 200s", "client 429s (from upstream / own)", "other failures",
         "fake 200s", "fake 429s", "fake 200s / its limit", "p50 ms of 200s"], out)


# -- main ----------------------------------------------------------------------------------

def _default_pi_xi() -> str | None:
    here = Path(sys.executable).parent / "pi-xi"
    return str(here) if here.exists() else shutil.which("pi-xi")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=None,
                        help="seconds of each throughput and rate-limit run (default 10)")
    parser.add_argument("--latency-duration", type=float, default=None,
                        help="seconds of each latency run (default 5)")
    parser.add_argument("--quick", action="store_true", help="3 s runs, 1.5 s latency runs")
    parser.add_argument("--litellm", default=shutil.which("litellm"),
                        help="the LiteLLM executable (default: litellm on PATH)")
    parser.add_argument("--pi-xi", default=_default_pi_xi(), help="the pi-xi executable")
    args = parser.parse_args()
    duration = args.duration or (3.0 if args.quick else 10.0)
    lat_duration = args.latency_duration or (1.5 if args.quick else 5.0)
    info = common.machine_info()
    started = time.monotonic()
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    litellm_info: dict[str, Any] = {"executable": args.litellm, "version": None,
                                    "available": False}
    gateway_info: dict[str, Any] = {"executable": args.pi_xi, "available": False}
    pool = WorkerPool(PROCESSES, (1, PROCESSES))
    fake = Fake()
    root = Path(tempfile.mkdtemp(prefix="pi-xi-bench-gateway-"))
    servers: dict[str, Server | None] = {"gateway": None, "LiteLLM": None}
    reasons: dict[str, str] = {}

    def stop(system: str) -> None:
        server = servers.get(system)
        if server is not None:
            server.stop()
            servers[system] = None

    def start(system: str, rpm: int, burst: int) -> None:
        stop(system)
        if system in reasons:
            return
        try:
            if system == "gateway":
                if not args.pi_xi:
                    raise Unavailable("no pi-xi executable")
                servers[system] = start_gateway(args.pi_xi, root, fake.port, rpm, burst)
            elif args.litellm:
                servers[system] = start_litellm(args.litellm, root, fake.port)
            else:
                raise Unavailable("no litellm executable (--litellm, or litellm on PATH)")
        except Unavailable as err:
            reasons[system] = str(err)
            print(f"  {system} not available: {str(err)[:300]}", flush=True)

    def target(system: str, litellm_model: str) -> dict[str, Any]:
        if system == "direct":
            return {"port": fake.port, "path": "/v1/chat/completions", "model": MODEL,
                    "warm_path": "/health"}
        server = servers[system]
        assert server is not None
        if system == "gateway":
            return {"port": server.port, "path": "/openai/v1/chat/completions", "model": MODEL,
                    "warm_path": "/v1/health"}
        return {"port": server.port, "path": "/v1/chat/completions", "model": litellm_model,
                "warm_path": "/health/liveliness", "key": LITELLM_MASTER_KEY}

    def measure(case: str, n: int, secs: float, fake_limits: tuple[int, int],
                litellm_model: str, limited: bool, systems: tuple[str, ...] = SYSTEMS,
                **params: Any) -> list[dict[str, Any]]:
        out = []
        for system in systems:
            if system != "direct" and servers[system] is None:
                row = unavailable_row(case, system, reasons.get(system, "not started"))
            else:
                tgt = target(system, litellm_model)
                warm_path = tgt.pop("warm_path")
                extra = dict(params)
                if system == "direct" and "direct_pace" in extra:
                    extra["pace"] = extra["direct_pace"]
                extra.pop("direct_pace", None)
                warm = {"warm": 2, "warm_get": warm_path} if limited else {"warm": 30}
                server = servers.get(system)
                row = run_case(pool, fake, case, system, tgt, n, secs, fake_limits,
                               server.pid if server else None, **warm, **extra)
            rows.append(row)
            out.append(row)
            print(summarise_text(row), flush=True)
        return out

    try:
        if args.litellm:
            litellm_info["version"] = litellm_version(args.litellm)
            litellm_info["config"] = litellm_config(fake.port)
            litellm_info["config"]["general_settings"]["master_key"] = "<random, per run>"
            litellm_info["argv_flags"] = ["--config", "<yaml>", "--host", "127.0.0.1",
                                          "--port", "<port>", "--num_workers", "1"]
            litellm_info["env"] = LITELLM_ENV
        t = time.monotonic()
        start("LiteLLM", 0, 0)
        if servers["LiteLLM"] is not None:
            litellm_info["start_s"] = round(time.monotonic() - t, 1)
            status, data = probe(servers["LiteLLM"].port, "/v1/chat/completions", "bench-free",
                                 LITELLM_MASTER_KEY)
            if status != 200:
                reasons["LiteLLM"] = f"probe answered {status}: {data[:300]!r}"
                stop("LiteLLM")
        litellm_info["available"] = servers["LiteLLM"] is not None
        fake.limits(*GENEROUS)
        start("gateway", *GENEROUS)
        if servers["gateway"] is not None:
            status, data = probe(servers["gateway"].port, "/openai/v1/chat/completions", MODEL)
            if status != 200:
                reasons["gateway"] = (f"pi-xi serve answered POST /openai/v1/chat/completions "
                                      f"with {status}: {data[:200]!r}")
                stop("gateway")
                print(f"  gateway not available: {reasons['gateway']}", flush=True)
        gateway_info["available"] = servers["gateway"] is not None

        latency = measure("latency", 1, lat_duration, GENEROUS, "bench-free", False,
                          threads=1, stream=False)
        ttfb = measure("first streamed byte", 1, lat_duration, GENEROUS, "bench-free", False,
                       threads=1, stream=True)
        tput = measure("throughput", PROCESSES, duration, GENEROUS, "bench-free", False,
                       threads=THREADS, stream=False)
        start("gateway", *OVER_CONFIGURED)
        over = measure("true limit below", PROCESSES, duration, TRUE_LIMIT, "bench-1200", True,
                       threads=THREADS, stream=False)
        start("gateway", *TRUE_LIMIT)
        within = measure("within limit", PROCESSES, duration, TRUE_LIMIT, "bench-600", True,
                         threads=THREADS, stream=False, direct_pace=list(TRUE_LIMIT))
    finally:
        stop("gateway")
        stop("LiteLLM")
        fake.close()
        pool.close()
        shutil.rmtree(root, ignore_errors=True)
    gateway_info["reason"] = reasons.get("gateway")
    litellm_info["reason"] = reasons.get("LiteLLM")

    def get(rs: list[dict[str, Any]], system: str) -> dict[str, Any] | None:
        return next((r for r in rs if r["system"] == system and r["available"]), None)

    verdicts = []
    d, g, llm = (get(latency, s) for s in SYSTEMS)
    if g and d:
        added = g["p50_ms"] - d["p50_ms"]
        beat = "" if not llm else (f", LiteLLM adds {llm['p50_ms'] - d['p50_ms']:.2f} ms: "
                                   f"{'PASS' if added < llm['p50_ms'] - d['p50_ms'] else 'MISS'}")
        verdicts.append(f"gateway adds {added:.2f} ms at p50 (target < {TARGET_ADDED_P50_MS} ms:"
                        f" {'PASS' if added < TARGET_ADDED_P50_MS else 'MISS'}{beat})")
    d, g = get(ttfb, "direct"), get(ttfb, "gateway")
    if g and d:
        added = g["ttfb_p50_ms"] - d["ttfb_p50_ms"]
        verdicts.append(f"gateway first streamed byte +{added:.2f} ms at p50 (target within "
                        f"{TARGET_TTFB_MS} ms: {'PASS' if added <= TARGET_TTFB_MS else 'MISS'})")
    d, g, llm = (get(tput, s) for s in SYSTEMS)
    if g:
        beat = "" if not llm else (f", LiteLLM {llm['ok_per_s']:,.0f} req/s: "
                                   f"{'PASS' if g['ok_per_s'] > llm['ok_per_s'] else 'MISS'}")
        verdicts.append(f"gateway throughput {g['ok_per_s']:,.0f} req/s (target >= {TARGET_RPS:,}"
                        f": {'PASS' if g['ok_per_s'] >= TARGET_RPS else 'MISS'}{beat})")
    for rs in (over, within):
        g = get(rs, "gateway")
        if g:
            verdicts.append(f"gateway, {g['case']}: {g['client_429']} 429s reached clients, "
                            f"the fake sent {g['fake_stats']['rate_limited']}, and admitted "
                            f"{g['fake_ok_share_of_bound']:.0%} of what its limit allows")
    for system in ("gateway", "LiteLLM"):
        if system in reasons:
            verdicts.append(f"{system}: not available ({reasons[system][:200]})")

    notes.append(f"Latency runs: 1 process, 1 connection, {lat_duration:g} s each; throughput "
                 f"and limit runs: {PROCESSES} processes x {THREADS} threads, {duration:g} s "
                 f"each. Generous limits: {GENEROUS[0]:,}/min, burst {GENEROUS[1]:,}.")
    notes.append(f"Limit runs: the fake admits {TRUE_LIMIT[0]}/min, burst {TRUE_LIMIT[1]}; "
                 f"'true limit below': gateway configured {OVER_CONFIGURED[0]:,}/min burst "
                 f"{OVER_CONFIGURED[1]}, LiteLLM rpm {OVER_CONFIGURED[0]:,}, direct unpaced; "
                 f"'within limit': gateway {TRUE_LIMIT[0]}/min burst {TRUE_LIMIT[1]}, LiteLLM "
                 f"rpm {TRUE_LIMIT[0]}, direct: each process paced alone at "
                 f"{TRUE_LIMIT[0]}/min burst {TRUE_LIMIT[1]}.")
    notes.append("LiteLLM " + (f"{litellm_info['version']}: usage-based-routing-v2, deployment "
                               "rpm, defaults otherwise" if litellm_info["available"]
                               else "not available: " + reasons.get("LiteLLM", "")[:200]))
    if not gateway_info["available"]:
        notes.append("gateway not available: " + reasons.get("gateway", "")[:200])
    print()
    print(common.machine_line(info))
    print()
    print("Added latency, non-streaming (1 client, sequential, keep-alive)\n")
    print(latency_table(latency, ""))
    print()
    print("Time to first streamed byte (stream: true, include_usage)\n")
    print(latency_table(ttfb, "ttfb_"))
    print()
    print(f"Throughput ({PROCESSES} processes x {THREADS} threads, keep-alive)\n")
    print(throughput_table(tput))
    print()
    print("429s with the provider's true limit below the configured one, and within it\n")
    print(limit_table(over + within))
    print()
    for v in verdicts:
        print(v)
    print()
    common.print_footnotes(notes, [])
    common.write_results(NAME, {
        "machine": info, "duration_s": duration, "latency_duration_s": lat_duration,
        "processes": PROCESSES, "threads": THREADS, "generous": GENEROUS,
        "true_limit": TRUE_LIMIT, "over_configured": OVER_CONFIGURED,
        "gateway": gateway_info, "litellm": litellm_info,
        "wall_time_s": round(time.monotonic() - started, 1), "rows": rows,
        "verdicts": verdicts, "notes": notes})


if __name__ == "__main__":
    main()
