"""The daemon killed (SIGKILL) while clients take permits through it, then restarted on the
same port, after the clients' leases ran out: clients see ``StoreUnavailable`` meanwhile
(after a bounded wait, never a hang), re-register and carry on afterwards on their own, and
no permit is ever held twice at once (cap 1 across every process)."""

from __future__ import annotations

import itertools
import time

import pytest

from cross_instance.stores import open_store
from tests.daemon.restart_workers import permit_taker
from tests.daemon_process import DaemonProcess
from tests.processes.spawn import CTX

SECONDS = 14.0
DOWN_S = 6.5  # longer than the clients' bound (5 s) and their lease (3 s)


@pytest.mark.timeout(180)
def test_a_killed_daemon_restarts_and_nothing_is_granted_twice(tmp_path):
    daemon = DaemonProcess(tmp_path / "daemon").start()
    store = f"http://{daemon.addr}"
    names = ["w0", "w1", "w2"]
    barrier, out = CTX.Barrier(len(names) + 1), CTX.Queue()
    procs = [CTX.Process(target=permit_taker,
                         args=(str(tmp_path / "client"), n, store, SECONDS, barrier, out))
             for n in names]
    try:
        for p in procs:
            p.start()
        barrier.wait(60)
        time.sleep(2.0)
        killed_at = time.monotonic()
        daemon.kill()  # SIGKILL, mid-request for somebody
        time.sleep(DOWN_S)
        daemon.start()
        restarted_at = time.monotonic()
        results = [out.get(timeout=120) for _ in procs]
        for p in procs:
            p.join(30)
            assert p.exitcode == 0
    finally:
        daemon.kill()
    spans = sorted(s for _, got, _ in results for s in got)
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end, "two permits held at once (cap 1)"
    assert sum(n for *_, n in results) > 0  # they met the daemon's absence
    for name, got, _ in results:
        assert any(s < killed_at for s, _ in got), name
        assert any(s > restarted_at for s, _ in got), f"{name} never came back"
    daemon.start()
    try:
        remote = open_store(f"http://{daemon.addr}")
        try:
            snap = remote.snapshot()
            assert snap.permits == ()  # all released (or freed with their closed instances)
        finally:
            remote.close()
    finally:
        daemon.kill()
