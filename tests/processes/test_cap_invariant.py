"""The concurrency cap as an invariant, on every store, with real processes doing everything
at once: threads and asyncio tasks taking permits, timeouts of a few ms, cancel events,
``asyncio.wait_for`` giving up mid-call, ``try_permit``, releases handed to waiters and doorbells
ringing between processes, and a holder killed with kill -9 mid-run.

Checked: the most permits held at once (the sweep line of the intervals the callers held)
never passes the cap; while the run goes, the store never counts more held permits than the
cap, and on Redis its slot counter (``u:*`` in the gate hash, which the scripts decide by)
equals the permits its records hold, read in one atomic step; afterwards nothing is held and
nobody queues (no permit or wait leaked, the killed holder's permits came back)."""

from __future__ import annotations

import os
import queue
import signal
import threading
import time
from pathlib import Path
from typing import Any

from cross_instance.stores.sqlite.store import SqliteStore
from tests.checkers import most_at_once
from tests.processes import cap_workers as cw
from tests.processes.spawn import CTX  # forkserver, the package preloaded

CAP = 3
SECONDS = 1.5
# a lease far longer than the test: only a pid probe (the killed holder) removes an instance,
# never a worker slowed down by a busy machine (which would lose its permits by design)
CFG = {"total": CAP, "rpm": 6_000_000, "burst": 100_000, "interval_ms": 200,
       "timeout_ms": 60_000}

# u:* and the permits held under the prefix, in one atomic step
AUDIT = """
local P = ARGV[1]
local held = 0
for _, key in ipairs(redis.call('KEYS', P .. 'pm:*')) do held = held + redis.call('HLEN', key) end
return {tonumber(redis.call('HGET', P .. 'gate', 'u:*') or '0'), held,
        redis.call('ZCARD', P .. 'waiters')}
"""


class Auditor:
    """Reads the store every few ms in a thread of the test; ``problems`` lists what broke."""

    def __init__(self, state: Path, cfg: dict[str, Any]) -> None:
        self.problems: list[Any] = []
        self.reads = 0
        self._stop = threading.Event()
        if cfg.get("store", "").startswith("http:"):  # the daemon's view, over HTTP
            from cross_instance.stores import open_store

            self._client = None
            self._store = open_store(cfg["store"])
        elif "store" in cfg:
            import redis

            from cross_instance.stores.redis.connection import parse_url

            location = parse_url(cfg["store"])
            self._client = redis.Redis.from_url(location.url)
            self._script = self._client.register_script(AUDIT)
            self._prefix = location.prefix
            self._store: Any = None
        else:
            self._client = None
            self._store = SqliteStore(state)
        self._thread = threading.Thread(target=self._run, daemon=True)

    def read(self) -> tuple[int, int, int]:
        """(slot counter, permits held, waits queued): the counter is the permits' count on
        SQLite, where it is counted from them."""
        if self._client is not None:
            counted, held, waiting = self._script(args=[self._prefix])
            return int(counted), int(held), int(waiting)
        snap = self._store.snapshot()
        return len(snap.permits), len(snap.permits), snap.waiting

    def _run(self) -> None:
        while not self._stop.is_set():
            counted, held, _ = self.read()
            self.reads += 1
            if counted != held or held > CAP:
                self.problems.append((counted, held))
            time.sleep(0.003)

    def __enter__(self) -> Auditor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        else:
            self._store.close()


def test_the_cap_is_never_exceeded_and_the_store_counts_what_is_held(tmp_path, store_cfg):
    state = tmp_path / "state"
    cfg = {**CFG, **store_cfg}
    crowd = [("s0", "sync", 6), ("s1", "sync", 6), ("a0", "async", 8)]
    barrier, out, close = CTX.Barrier(len(crowd) + 2), CTX.Queue(), CTX.Event()
    procs = [CTX.Process(target=cw.crowd, args=(str(state), name, cfg, api, n, SECONDS,
                                                 barrier, out, close))
             for name, api, n in crowd]
    doomed = CTX.Process(target=cw.victim, args=(str(state), "doomed", cfg, barrier, out))
    for p in [*procs, doomed]:
        p.start()
    auditor = Auditor(state, cfg)
    try:
        barrier.wait(120)
        spans: list[tuple[int, int]] = []
        done = 0
        with auditor:
            killed = False
            while done < len(crowd):
                try:
                    kind, _name, value = out.get(timeout=120)
                except queue.Empty:
                    raise AssertionError("the workers never finished") from None
                if kind == "holding" and not killed:
                    time.sleep(0.3)  # mid-run, holding
                    os.kill(doomed.pid, signal.SIGKILL)
                    doomed.join()  # gone, not a zombie (which a pid probe finds alive)
                    killed = True
                elif kind == "done":
                    spans += value
                    done += 1
            assert killed
            end = time.monotonic() + 10
            while auditor.read() != (0, 0, 0) and time.monotonic() < end:
                time.sleep(0.02)  # queued releases sent, the killed holder found dead
            left = auditor.read()
        close.set()
        assert auditor.problems == [], auditor.problems[:5]
        assert auditor.reads > 20
        assert len(spans) > 50
        assert most_at_once(spans) <= CAP
        assert left == (0, 0, 0)  # (counter, held, queued): nothing leaked
    finally:
        close.set()
        for p in [*procs, doomed]:
            p.join(30)
            if p.is_alive():
                p.kill()
                p.join()
        auditor.close()
    assert all(p.exitcode == 0 for p in procs)
