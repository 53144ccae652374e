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
