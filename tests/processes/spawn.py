"""Starting worker processes together: each gets ``(*args, barrier, out)``, waits on the
barrier, and puts one result on ``out``; every worker must exit cleanly."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from typing import Any

#: forkserver: each worker is a process of its own (its own pid and start time), forked from a
#: server that imported the package and the workers once, not from the test process (none of
#: its threads, locks or sockets come along). A fresh interpreter per worker, as "spawn" gave,
#: spent most of these tests' time importing. Linux and macOS alike.
CTX = multiprocessing.get_context("forkserver")
PRELOAD = ["cross_instance", "cross_instance.stores.sqlite.store",
           "cross_instance.stores.redis.store", "cross_instance.stores.remote.store",
           "tests.processes.workers", "tests.processes.ownership_workers",
           "tests.processes.handover_workers", "tests.processes.cap_workers",
           "tests.processes.queue_workers"]
CTX.set_forkserver_preload(PRELOAD)


def run_together(target: Callable[..., None], args: Sequence[tuple[Any, ...]],
                 timeout: float = 120) -> list[Any]:
    """The workers' results in the order they arrived."""
    barrier, out = CTX.Barrier(len(args)), CTX.Queue()
    procs = [CTX.Process(target=target, args=(*a, barrier, out)) for a in args]
    for p in procs:
        p.start()
    results = [out.get(timeout=timeout) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    return results
