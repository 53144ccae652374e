"""Worker processes of the work-queue tests (importable by the forkserver).

Each worker is a runtime of its own: the producer puts every task on its own queue, the others
start idle and take work by stealing (and from the pool a dead instance's tasks went to).
A worker writes the id of each task it completed (after the store accepted the completion) to
a file of its own, flushed at once, so the completions of a worker killed later are known too.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

from cross_instance.core.workqueue import QueueSettings
from cross_instance.errors import NotRegisteredError, StoreUnavailable, TaskLostError
from cross_instance.runtime import Runtime
from tests.helpers_runtime import make_config


def _runtime(state: str, name: str, cfg: dict[str, Any]) -> Runtime:
    base = {k: v for k, v in cfg.items() if k not in ("lease_ms", "min_queued", "total_tasks")}
    config = dataclasses.replace(
        make_config(Path(state), **base),
        queue=QueueSettings(lease_ms=cfg.get("lease_ms", 1000),
                            min_queued=cfg.get("min_queued", 2)))
    return Runtime.start(cwd=Path(state).parent, config=config, instance_id=name)


def work(state: str, name: str, cfg: dict[str, Any], tasks: int, work_s: float,
         logs: str, ready: Any, go: Any, out: Any) -> None:
    """Put ``tasks`` tasks (when ``tasks`` > 0: the producer), then run tasks until the store
    holds every one of them settled; report (name, completed, lost runs, stolen runs)."""
    with _runtime(state, name, cfg) as rt:
        for i in range(tasks):
            rt.queue.put({"i": i}, tool_name="square", task_id=f"t{i:05d}")
        ready.put((name, os.getpid()))
        go.wait()
        total = cfg["total_tasks"]
        completed = lost = stolen = 0
        with open(Path(logs) / f"{name}.done", "a", encoding="utf-8") as done:
            while True:
                try:
                    run = rt.queue.next()
                    if run is None:
                        settled = sum(c.done + c.failed for c in rt.queue.stats())
                        if settled >= total:
                            break
                        time.sleep(0.005)
                        continue
                except (NotRegisteredError, StoreUnavailable):  # judged dead while stopped
                    time.sleep(0.05)
                    continue
                stolen += run.stolen
                time.sleep(work_s)  # the task's work
                try:
                    run.complete({"by": name, "square": run.payload["i"] ** 2})
                except TaskLostError:
                    lost += 1
                    continue
                done.write(run.task_id + "\n")
                done.flush()
                completed += 1
        out.put((name, completed, lost, stolen))
