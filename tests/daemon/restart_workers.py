"""Worker processes of the daemon restart test (importable by ``spawn``)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from cross_instance import Runtime, StoreUnavailable
from tests.helpers_runtime import make_config


def permit_taker(state: str, name: str, store: str, seconds: float, barrier: Any,
                 out: Any) -> None:
    """Take permits (cap 1 across everyone) for ``seconds``, each held a few ms; report the
    spans held (monotonic, one clock for every process of the host) and the failures."""
    cfg = make_config(Path(state), store=store, total=1, rpm=600_000, burst=10_000,
                      interval_ms=200, timeout_ms=3000)
    spans: list[tuple[float, float]] = []
    unavailable = 0
    rt = Runtime.start(cwd=state, config=cfg, instance_id=name)
    barrier.wait(60)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            with rt.permit("p", timeout=10):
                start = time.monotonic()
                time.sleep(0.003)
                spans.append((start, time.monotonic()))
        except StoreUnavailable:
            unavailable += 1
            time.sleep(0.05)
    try:
        rt.close()
    except StoreUnavailable:
        pass
    out.put((name, spans, unavailable))
