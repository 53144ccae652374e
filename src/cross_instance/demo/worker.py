"""The body of one demo instance: a process whose threads call the fake provider flat out.

Runs in a ``spawn``-ed child process (so :func:`worker_main` and :class:`WorkerSpec` are
module-level and picklable). Protocol with the parent, over one ``Queue``:

* ``("ready", name)`` once start-up (runtime registration, connection warm-up) is done;
* the parent then sets ``start_ns`` (a ``time.monotonic_ns()`` reading, a system-wide clock on
  Linux) and the ``go`` event; every thread then sends for ``duration`` seconds from that instant;
* ``("result", name, records, calls)`` with one :data:`Record` per request sent and one
  :data:`CallRecord` per call made, or ``("error", name, text)`` if anything failed. The runtime
  is closed in every case.

A thread makes one call after another, each as an application using the official OpenAI SDK
does: the SDK's default retry policy (:class:`SdkRetries`: 2 retries; it waits what
``retry-after-ms`` / ``retry-after`` say when that is at most two minutes, else an exponential
backoff with jitter) and, when all three attempts were refused, the call *fails*: the user sees
the 429. Coordinated, each attempt first takes a permit (as ``CoordinatedTransport`` does for
every request the SDK sends). The application needs every answer, so after a failed call it
calls again. The wait of a successful call is from wanting the answer to sending the attempt
that succeeded; its latency is from wanting the answer to getting it (failed calls, retries,
permit waits and the provider's latency included).
"""

from __future__ import annotations

import dataclasses
import random
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
#: ``(wanted_ns, ok, latency_ns)``: one SDK call as the application sees it: when the
#: application first wanted this answer (relative to the run start), whether the call
#: succeeded within the SDK's retries, and the time from wanting the answer to this call's end.
#: A call that failed is made again (the application still needs the answer), so an ``ok``
#: record's latency is the time to the answer, failed calls before it included.
CallRecord = tuple[int, bool, int]


@dataclass(frozen=True, slots=True)
class SdkRetries:
    """The OpenAI Python SDK's default retry policy, as documented and as its client applies
    it (``max_retries=2``; a server's ``retry-after-ms`` or ``retry-after`` seconds is honoured
    when it is above 0 and at most 120 s; otherwise 0.5 s doubled per retry, at most 8 s, less
    up to 25 % of jitter). The anthropic SDK's default is the same."""

    max_retries: int = 2
    honour_up_to_s: float = 120.0
    initial_s: float = 0.5
    max_backoff_s: float = 8.0

    def wait_s(self, retry: int, headers: httpx.Headers) -> float | None:
        """Seconds to wait before retry number ``retry`` (0 for the first retry), or None when
        the call is not retried (the retries are spent, or the server asks for too long)."""
        if retry >= self.max_retries:
            return None
        hinted = retry_after_s(headers)
        if hinted is not None:
            if hinted > self.honour_up_to_s:
                return None
            if hinted > 0:
                return hinted
        backoff = min(self.initial_s * 2.0 ** retry, self.max_backoff_s)
        return backoff * (1 - 0.25 * random.random())


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


def retry_after_s(headers: httpx.Headers) -> float | None:
    """Seconds a 429 asks us to wait, read as the OpenAI SDK reads them: ``retry-after-ms``
    first, then ``Retry-After`` seconds; None when neither is a number."""
    for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        raw = headers.get(name)
        if raw is not None:
            try:
                return float(raw) * scale
            except ValueError:
                continue
    return None


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
        calls: list[list[CallRecord]] = [[] for _ in clients]
        errors: list[str] = []
        threads = [threading.Thread(target=_guard, args=(_loop, errors, c, rt, t0, deadline, r,
                                                         k),
                                    name=f"{spec.name}-{i}")
                   for i, (c, r, k) in enumerate(zip(clients, results, calls, strict=True))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            out.put(("error", spec.name, errors[0]))
        else:
            out.put(("result", spec.name, [rec for r in results for rec in r],
                     [call for k in calls for call in k]))
    except BaseException:  # noqa: BLE001 - reported to the parent, which says what failed
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
    except BaseException:  # noqa: BLE001 - a worker thread's failure, reported by its process
        errors.append(traceback.format_exc())


def _loop(client: httpx.Client, rt: Any, t0: int, deadline: int, out: list[Record],
          calls: list[CallRecord], policy: SdkRetries = SdkRetries()) -> None:
    """Get answers until ``deadline`` (monotonic ns); one record per request sent and one per
    SDK call (a call that the deadline cut short is not counted)."""
    from cross_instance.errors import RateLimitExceeded

    while (want := time.monotonic_ns()) < deadline:
        retry, answered = 0, False
        while not answered:
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
                    status, headers = resp.status_code, resp.headers
                except httpx.HTTPError:
                    status, headers = 0, httpx.Headers()
            finally:
                if permit is not None:
                    permit.release()
            done = time.monotonic_ns()
            out.append((sent - t0, status, sent - want if status == 200 else -1))
            if status == 200:
                calls.append((want - t0, True, done - want))
                answered = True
                continue
            wait = policy.wait_s(retry, headers)
            if wait is None:  # the SDK gives up: the application sees the error, calls again
                calls.append((want - t0, False, done - want))
                retry = 0
                continue
            retry += 1
            if done + wait * 1e9 >= deadline:
                return
            time.sleep(wait)
