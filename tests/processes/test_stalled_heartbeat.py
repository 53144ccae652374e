"""Heartbeats stalled while the process lives on (FAULTS.md F4): the lease runs out on every
store as it would for a dead process, nobody takes over before that, the takeover gets
epoch + 1, and the stalled owner's next fenced write is refused with ``stale_epoch``."""

from __future__ import annotations

import multiprocessing as mp
import os
import time

import pytest

from cross_instance.errors import WorkflowOwnedError
from cross_instance.runtime import Runtime
from tests.helpers_runtime import make_config
from tests.processes import ownership_workers as workers


@pytest.mark.timeout(120)
def test_a_stalled_heartbeat_loses_the_workflow_after_the_lease_and_is_fenced(tmp_path,
                                                                             store_cfg):
    ctx = mp.get_context("spawn")
    state = str(tmp_path / "state")
    commands, out = ctx.Queue(), ctx.Queue()
    store = store_cfg.get("store")
    proc = ctx.Process(target=workers.stalled_holder, args=(state, commands, out, store))
    proc.start()
    try:
        _, pid, epoch = out.get(timeout=60)
        cfg = make_config(tmp_path / "state", interval_ms=100, timeout_ms=1000, store=store)
        with Runtime.start(cwd=tmp_path, config=cfg, instance_id="successor") as rt:
            refused, taken, holder = 0, None, None
            deadline = time.monotonic() + 20  # "eventually": 20 leases
            while taken is None and time.monotonic() < deadline:
                seen = {r.instance_id: r for r in rt.store.list_instances()}.get("stalled")
                holder = seen or holder  # its last record (the reaper may remove it first)
                try:
                    taken = rt.workflows.claim("wf")
                    at = rt.store.now_ns()
                except WorkflowOwnedError:
                    refused += 1
                    time.sleep(0.05)
            assert taken is not None, "never taken over"
            # no takeover before the lease ran out: its last heartbeat plus the lease lies
            # before the take (the stalled thread never beat again)
            assert holder is not None and at >= holder.heartbeat_ns + holder.lease_ns
            assert refused > 0  # it was refused while the lease held
            assert taken.action == "auto_claimed" and taken.epoch == epoch + 1
            assert proc.is_alive()
            os.kill(pid, 0)  # the owner process lived on the whole time
            taken.write(step=10)
            commands.put("write")
            assert out.get(timeout=30) == ("write", "stale_epoch")
            assert taken.read() == {"step": 10}  # the late write changed nothing
            commands.put("stop")
            proc.join(timeout=30)
            assert proc.exitcode == 0
    finally:
        if proc.is_alive():
            proc.kill()
