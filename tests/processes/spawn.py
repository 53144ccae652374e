"""Starting worker processes together: each gets ``(*args, barrier, out)``, waits on the
barrier, and puts one result on ``out``; every worker must exit cleanly."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from typing import Any

CTX = multiprocessing.get_context("spawn")


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
