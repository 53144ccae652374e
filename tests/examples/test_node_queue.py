"""The Node client's work queue (issue 18): ``node queue.mjs`` against a real daemon puts
tasks as one instance, steals the best one as another (it moves and runs there), is refused a
stale completion (``task_lost``), and works through the rest. Skipped only when ``node`` is not
installed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from cross_instance.stores.sqlite.store import SqliteStore
from tests.daemon.served_app import served_app

CLIENT_DIR = Path(__file__).resolve().parents[2] / "examples" / "node-client"
NODE = shutil.which("node")


@pytest.mark.skipif(NODE is None, reason="`node` is not installed: the example needs Node 20+")
def test_node_puts_steals_and_completes_through_the_daemon(tmp_path: Path) -> None:
    assert NODE is not None
    store = SqliteStore(tmp_path / "state")
    with served_app(store) as run:
        env = {**os.environ, "PI_COORDINATOR_ADDR": run.addr, "QUEUE_PREFIX": "nq"}
        done = subprocess.run([NODE, "queue.mjs"], cwd=CLIENT_DIR, env=env,
                              capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        steps = {line["step"]: line for line in map(json.loads, done.stdout.splitlines())}
        assert steps["put"]["queued"] == 5
        stolen = steps["stolen"]
        assert stolen["taskId"] == "nq-t3" and stolen["owner"] == "nq-helper"  # priority 5
        assert stolen["state"] == "done" and stolen["result"] == {"square": 9}
        assert steps["stale"]["code"] == "task_lost"
        assert steps["worked"]["order"] == ["nq-t0", "nq-t1", "nq-t2", "nq-t4"]
        assert steps["worked"]["stealing"]["successfulSteals"] == 1
        tasks = store.list_tasks(state="done")
        assert sorted(t.task_id for t in tasks) == [f"nq-t{i}" for i in range(5)]


WIDE = """
const { Coordinator } = await import(process.env.CLIENT_URL);
const c = new Coordinator({ addr: process.env.PI_COORDINATOR_ADDR, retries: 0 });
await c.register({ instanceId: `wide-${process.pid}` });
const big = 2n ** 60n + 1n;
const put = await c.putTask({ big, small: 7, list: [big, -big] }, { taskId: "wide" });
const run = await c.takeTask();
const renewed = await c.renewTask(run);
const done = await c.completeTask(renewed, { back: run.payload.big + 1n });
const [listed] = await c.listTasks({ state: "done" });
console.log(JSON.stringify({
  put: typeof put.payload.big, exact: run.payload.big === big && run.payload.list[1] === -big,
  small: typeof run.payload.small, clock: [typeof run.leaseUntilNs, typeof renewed.leaseUntilNs,
    typeof run.enqueuedAt, typeof run.fence], leaseNs: run.leaseUntilNs,
  result: String(done.result.back), listed: String(listed.payload.big) }));
await c.close();
"""


@pytest.mark.skipif(NODE is None, reason="`node` is not installed: the example needs Node 20+")
def test_node_keeps_a_tasks_wide_integers_exact_and_its_clock_fields_numbers(tmp_path):
    """On Redis the store's clock is nanoseconds since the epoch (beyond 2^53): a task's
    ``leaseUntilNs`` is still a number, as the types say; the user's own integers beyond 2^53
    come as ``bigint``s and go back as JSON integers, never as strings."""
    from cross_instance.stores import open_store
    from tests.conftest import redis_prefix

    assert NODE is not None
    with redis_prefix("pi-node-wide") as url:
        store = open_store(url)
        try:
            with served_app(store) as run:  # (the daemon closes its store when it stops)
                env = {**os.environ, "PI_COORDINATOR_ADDR": run.addr,
                       "CLIENT_URL": (CLIENT_DIR / "client.mjs").as_uri()}
                done = subprocess.run([NODE, "--input-type=module", "-e", WIDE], cwd=tmp_path,
                                      env=env, capture_output=True, text=True, timeout=60,
                                      check=False)
                task = store.get_task("wide")
            assert done.returncode == 0, done.stdout + done.stderr
            out = json.loads(done.stdout)
            assert out["put"] == "bigint" and out["exact"] and out["small"] == "number"
            assert out["clock"] == ["number"] * 4 and out["leaseNs"] > 2**53
            assert out["result"] == str(2**60 + 2) and out["listed"] == str(2**60 + 1)
            assert json.loads(task.payload) == {"big": 2**60 + 1, "small": 7,
                                                "list": [2**60 + 1, -(2**60 + 1)]}
            assert json.loads(task.result) == {"back": 2**60 + 2}
        finally:
            store.close()
