"""A process dying at a named point inside a store operation leaves it either not done or
done exactly once, never half done; whatever it held is freed (FAULTS.md F2)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from cross_instance.stores.sqlite.db import DB_NAME
from cross_instance.stores.sqlite.store import SqliteStore

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = """
import sys
from pathlib import Path
from cross_instance.runtime import Runtime
from tests.helpers_runtime import make_config
state = Path(sys.argv[1])
rt = Runtime.start(cwd=state.parent, config=make_config(state), instance_id="doomed")
rt.permit("p")
print("survived", flush=True)
"""


@pytest.mark.parametrize("point, permits_left", [
    ("sqlite.acquire.before_commit", 0),
    ("sqlite.acquire.after_commit", 1),
    ("sqlite.register.before_commit", 0),
])
def test_crash_inside_an_operation(tmp_path, point, permits_left):
    state = tmp_path / "state"
    env = {**os.environ, "PI_XI_CRASHPOINT": point}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(state)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 137 and "survived" not in proc.stdout
    with sqlite3.connect(state / DB_NAME) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    store = SqliteStore(state)
    try:
        assert len(store.snapshot().permits) == permits_left  # all or nothing
        store.reap()  # the crashed process is gone: anything it held is freed
        snap = store.snapshot()
        assert snap.permits == () and snap.instances == ()
    finally:
        store.close()


CLAIM_SCRIPT = """
import sys
from pathlib import Path
from cross_instance.runtime import Runtime
from tests.helpers_runtime import make_config
state = Path(sys.argv[1])
rt = Runtime.start(cwd=state.parent, config=make_config(state), instance_id="doomed")
rt.claim_workflow("wf")
rt.try_acquire_lock("res", ttl=60)
print("survived", flush=True)
"""


@pytest.mark.parametrize("point, epoch, locked", [
    ("sqlite.claim.before_commit", 0, False),
    ("sqlite.claim.after_commit", 1, False),
    ("sqlite.acquire_lock.before_commit", 1, False),
    ("sqlite.acquire_lock.after_commit", 1, True),
])
def test_crash_inside_a_claim_or_lock(tmp_path, point, epoch, locked):
    state = tmp_path / "state"
    env = {**os.environ, "PI_XI_CRASHPOINT": point}
    proc = subprocess.run([sys.executable, "-c", CLAIM_SCRIPT, str(state)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 137 and "survived" not in proc.stdout
    store = SqliteStore(state)
    try:
        wf = store.get_workflow("wf")
        assert (wf.epoch if wf else 0) == epoch  # all or nothing
        assert bool(store.list_locks()) is locked
        from tests.conftest import record

        store.register_instance(record("next"))
        taken = store.claim_workflow("wf", "next")  # the dead owner's workflow moves on
        assert taken.allowed and taken.epoch == epoch + 1
        assert store.acquire_lock("res", "next", 10**9, None, False).token == int(locked) + 1
    finally:
        store.close()
