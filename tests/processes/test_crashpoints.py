"""A process dying at a named point inside a store operation leaves it either not done or
done exactly once, never half done; whatever it held is freed (FAULTS.md F2)."""

from __future__ import annotations

import contextlib
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
rt.workflows.claim("wf")
rt.locks.try_acquire("res", ttl=60)
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


# --- every operation that changes ownership or liveness, on every store (issue 14 item 10) ---
OP_SCRIPT = """
import subprocess, sys
from cross_instance.core.limiter import RateSpec
from cross_instance.core.records import PermitRequest
from cross_instance.stores import open_store
from tests.conftest import record
url, op = sys.argv[1], sys.argv[2]
store = open_store(url)
store.register_instance(record("doomed", lease_s=60))
ghost = subprocess.Popen(["true"]); ghost.wait()  # a pid that is gone
store.register_instance(record("ghost", pid=ghost.pid, start_ticks=1, lease_s=60))
epoch = store.claim_workflow("wf", "doomed").epoch
store.write_workflow_state("wf", "doomed", epoch, {"step": 1})
lock = store.acquire_lock("res", "doomed", 30 * 10**9, None, False)
store.publish_limits("doomed", {"r:p": RateSpec(600, 5)}, {"*": 3})
permit = store.try_acquire(PermitRequest("doomed", "p", None, (("r:p", 1),), ("*",)))
beat = {r.instance_id: r.heartbeat_ns for r in store.list_instances()}["doomed"]
print("ready", beat, flush=True)
if op == "heartbeat":
    store.heartbeat("doomed")
elif op == "reap":
    store.reap()
elif op == "release_workflow":
    store.release_workflow("wf", "doomed", epoch)
elif op == "write_state":
    store.write_workflow_state("wf", "doomed", epoch, {"step": 2})
elif op == "renew_lock":
    store.renew_lock("res", lock.lock_id, 600 * 10**9)
elif op == "release_lock":
    store.release_lock("res", lock.lock_id)
elif op == "release":
    store.release("doomed", [permit.permit_id])
print("survived", flush=True)
"""


def _observe(store):
    """What each operation changes, as the next process sees it."""
    wf = store.get_workflow("wf")
    locks = store.list_locks()
    instances = {r.instance_id: r for r in store.list_instances()}
    return {
        "owner": wf.owner.instance_id if wf and wf.owner else None,
        "step": store.read_workflow_state("wf").get("step"),
        "lock_expires": locks[0].expires_ns if locks else None,
        "ghost": "ghost" in instances,
        "heartbeat": instances["doomed"].heartbeat_ns if "doomed" in instances else None,
        "permits": len(store.snapshot().permits),
    }


# op -> (the SQLite transaction, the Redis call), each with which of its passes in the run
OPS = {
    "heartbeat": ("heartbeat:1", "heartbeat:1"),
    "reap": ("reap:1", "reap:1"),
    "release_workflow": ("release_workflow:1", "release_workflow:1"),
    "write_state": ("write_state:2", "workflow_write:2"),
    "renew_lock": ("renew_lock:1", "lock_renew:1"),
    "release_lock": ("release_lock:1", "lock_release:1"),
    "release": ("release:1", "permit_release:1"),
}


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
@pytest.mark.parametrize("op", sorted(OPS))
@pytest.mark.parametrize("when", ["before", "after"])
def test_crash_in_each_operation_leaves_it_whole_or_absent(tmp_path, kind, op, when):
    from cross_instance.stores import open_store
    from tests.conftest import redis_prefix

    sqlite_name, redis_name = OPS[op]
    if kind == "sqlite":
        name, _, nth = sqlite_name.partition(":")
        point = f"sqlite.{name}.{when}_commit:{nth}"
        urls = contextlib.nullcontext(f"sqlite://{tmp_path / 'state'}")
    else:
        name, _, nth = redis_name.partition(":")
        point = f"redis.{name}.{'before_send' if when == 'before' else 'after_reply'}:{nth}"
        urls = redis_prefix("pi-crash")
    with urls as url:
        env = {**os.environ, "PI_XI_CRASHPOINT": point}
        proc = subprocess.run([sys.executable, "-c", OP_SCRIPT, url, op], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=60, check=False)
        assert proc.returncode == 137, proc.stderr
        assert "ready" in proc.stdout and "survived" not in proc.stdout
        if kind == "sqlite":
            with sqlite3.connect(tmp_path / "state" / DB_NAME) as conn:
                assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        store = open_store(url)
        try:
            seen = _observe(store)
            expected_before = {"owner": "doomed", "step": 1, "ghost": True, "permits": 1}
            if when == "before":  # absent: the state is the set-up's
                assert {k: seen[k] for k in expected_before} == expected_before
            else:  # whole: exactly the operation's own change
                want = dict(expected_before)
                want.update({"release_workflow": {"owner": None}, "write_state": {"step": 2},
                             "reap": {"ghost": False}, "release": {"permits": 0}}.get(op, {}))
                assert {k: seen[k] for k in want} == want
            beat = int(proc.stdout.split()[1])
            if op == "heartbeat" and when == "after":
                assert seen["heartbeat"] > beat
            else:
                assert seen["heartbeat"] == beat
            if op in ("renew_lock", "release_lock"):
                lock = seen["lock_expires"]
                now = store.now_ns()
                if when == "before":
                    assert lock is not None and lock - now < 31 * 10**9
                elif op == "renew_lock":
                    assert lock is not None and lock - now > 500 * 10**9
                else:
                    assert lock is None
        finally:
            store.close()
