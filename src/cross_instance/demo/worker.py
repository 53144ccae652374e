"""The body of one demo instance: a process whose threads call the fake provider flat out.

Runs in a ``spawn``-ed child process (so :func:`worker_main` and :class:`WorkerSpec` are
module-level and picklable). Protocol with the parent, over one ``Queue``:

* ``("ready", name)`` once start-up (runtime registration, connection warm-up) is done;
* the parent then sets ``start_ns`` (a ``time.monotonic_ns()`` reading, a system-wide clock on
  Linux) and the ``go`` event; every thread then sends for ``duration`` seconds from that instant;
* ``("result", name, records)`` with one :data:`Record` per request sent, or
  ``("error", name, text)`` if anything failed. The runtime is closed in every case.

A thread loops "want a call -> (coordinated: get a permit) -> POST -> on 429 sleep the provider's
retry hint and try again"; the wait of a successful call is from wanting it to sending the
attempt that succeeded, so it includes 429 retries and, coordinated, the permit wait.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

PROVIDER = "demo"
BODY: dict[str, Any] = {"model": "gpt-demo", "max_tokens": 16,
                        "messages": [{"role": "user", "content": "hello"}]}

#: ``(sent_ns, status, wait_ns)``: ``sent_ns`` relative to the run start; ``status`` is the HTTP
#: status (0 = transport error); ``wait_ns`` is set for status 200 only, else -1.
Record = tuple[int, int, int]


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """Everything one instance process needs. ``runtime_dir`` set means coordinated."""

    name: str
    url: str
    concurrency: int
    duration: float
    runtime_dir: str | None = None
    cwd: str | None = None
    rpm: int = 60
    burst: int = 1
    total_max_llm: int = 1


def retry_after_s(headers: httpx.Headers) -> float:
    """Seconds a 429 asks us to wait, read like the OpenAI SDK does: ``retry-after-ms`` first,
    then ``Retry-After`` seconds; 0.05 s when neither is usable."""
    for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        raw = headers.get(name)
        if raw is not None:
            try:
                value = float(raw) * scale
            except ValueError:
                continue
            if 0 <= value <= 60:
                return value
    return 0.05


def worker_main(spec: WorkerSpec, go: Any, start_ns: Any, out: Any) -> None:
    """Process entry point (see the module docstring). Never raises; reports errors on ``out``."""
    rt = None
    clients: list[httpx.Client] = []
    try:
        if spec.runtime_dir is not None:
            rt = _start_runtime(spec)
        for _ in range(spec.concurrency):
            client = httpx.Client(base_url=spec.url, timeout=30.0,
                                  headers={"x-client-id": spec.name})
            client.get("/health")  # open the keep-alive connection before the clock starts
            clients.append(client)
        out.put(("ready", spec.name))
        if not go.wait(timeout=120):
            return
        t0 = int(start_ns.value)
        deadline = t0 + int(spec.duration * 1e9)
        results: list[list[Record]] = [[] for _ in clients]
        errors: list[str] = []
        threads = [threading.Thread(target=_guard, args=(_loop, errors, c, rt, t0, deadline, r),
                                    name=f"{spec.name}-{i}")
                   for i, (c, r) in enumerate(zip(clients, results, strict=True))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            out.put(("error", spec.name, errors[0]))
        else:
            out.put(("result", spec.name, [rec for r in results for rec in r]))
    except BaseException:
        out.put(("error", spec.name, traceback.format_exc()))
    finally:
        for client in clients:
            client.close()
        if rt is not None:
            rt.close()


def _start_runtime(spec: WorkerSpec) -> Any:
    from cross_instance.config import Config, ProviderLimits
    from cross_instance.runtime import Runtime

    assert spec.runtime_dir is not None
    config = dataclasses.replace(
        Config(), runtime_dir=Path(spec.runtime_dir),
        providers={PROVIDER: ProviderLimits(spec.rpm, spec.burst)},
        total_max_llm=spec.total_max_llm)
    return Runtime.start(cwd=spec.cwd, config=config, instance_id=spec.name)


def _guard(fn: Any, errors: list[str], *args: Any) -> None:
    try:
        fn(*args)
    except BaseException:
        errors.append(traceback.format_exc())


def _loop(client: httpx.Client, rt: Any, t0: int, deadline: int, out: list[Record]) -> None:
    """Send calls until ``deadline`` (monotonic ns); append one record per request sent."""
    from cross_instance.errors import RateLimitExceeded

    while (want := time.monotonic_ns()) < deadline:
        while True:
            left = (deadline - time.monotonic_ns()) / 1e9
            if left <= 0:
                return
            permit = None
            if rt is not None:
                try:
                    permit = rt.permit(PROVIDER, timeout=left)
                except RateLimitExceeded:
                    return
            try:
                sent = time.monotonic_ns()
                try:
                    resp = client.post("/v1/chat/completions", json=BODY)
                    status, hint = resp.status_code, retry_after_s(resp.headers)
                except httpx.HTTPError:
                    status, hint = 0, 0.05
            finally:
                if permit is not None:
                    permit.release()
            out.append((sent - t0, status, sent - want if status == 200 else -1))
            if status == 200:
                break
            time.sleep(max(0.0, min(hint, (deadline - time.monotonic_ns()) / 1e9)))
