"""Processes that open a brand-new state directory at the same moment all succeed."""

from __future__ import annotations

import multiprocessing

from tests.processes.workers import open_store_together

CTX = multiprocessing.get_context("spawn")


def test_simultaneous_first_opens(tmp_path):
    for round_ in range(3):
        state = tmp_path / f"state{round_}"
        barrier, out = CTX.Barrier(8), CTX.Queue()
        procs = [CTX.Process(target=open_store_together, args=(str(state), barrier, out))
                 for _ in range(8)]
        for p in procs:
            p.start()
        results = [out.get(timeout=60) for _ in procs]
        for p in procs:
            p.join(timeout=30)
        assert results == ["ok"] * 8
