"""A full disk in the middle of a write (FAULTS.md F17): the writer gets a named, retryable
error, nothing of the operation is kept, the database stays sound, and the same call succeeds
once there is room. The full disk is ``RLIMIT_FSIZE`` in the writer process (EFBIG)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from cross_instance.stores.sqlite.db import DB_NAME
from cross_instance.stores.sqlite.store import SqliteStore

ROOT = Path(__file__).resolve().parents[2]
WRITER = """
import json, os, resource, signal, sys
from pathlib import Path
from cross_instance.errors import StoreUnavailable
from cross_instance.stores.sqlite.store import SqliteStore
from tests.conftest import record
state = Path(sys.argv[1])
store = SqliteStore(state)
store.register_instance(record("a"))
epoch = store.claim_workflow("wf", "a").epoch
store.write_workflow_state("wf", "a", epoch, {"step": 1})
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a signal, as on ENOSPC
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
sizes = [os.path.getsize(p) for p in state.iterdir()]
resource.setrlimit(resource.RLIMIT_FSIZE, (max(sizes) + 4096, hard))
report = {}
try:
    store.write_workflow_state("wf", "a", epoch, {"step": 2, "big": "x" * 300_000})
    report["full"] = None
except StoreUnavailable as err:
    report["full"] = {"code": err.code, "retryable": err.retryable, "message": str(err)}
report["after_failure"] = store.read_workflow_state("wf")
report["claim_still_works"] = store.claim_workflow("wf", "a").epoch  # small: fits
resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
store.write_workflow_state("wf", "a", epoch, {"step": 2, "big": "x" * 300_000})
report["retried"] = sorted(store.read_workflow_state("wf"))
print(json.dumps(report), flush=True)
store.close()
"""


def test_a_full_disk_fails_the_write_whole_and_retryably(tmp_path):
    state = tmp_path / "state"
    out = subprocess.run([sys.executable, "-c", WRITER, str(state)], cwd=ROOT,
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    full = report["full"]
    assert full is not None, "the write past the file-size limit succeeded"
    assert full["code"] == "store_unavailable" and full["retryable"] is True
    assert str(state / DB_NAME) in full["message"]
    assert "full" in full["message"].replace(str(state), "")  # says why, not just "I/O error"
    assert report["after_failure"] == {"step": 1}  # nothing of the failed write
    assert report["claim_still_works"] == 1
    assert report["retried"] == ["big", "step"]
    with sqlite3.connect(state / DB_NAME) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    store = SqliteStore(state)  # and the next process finds it sound and complete
    try:
        assert store.read_workflow_state("wf")["step"] == 2
        assert store.get_workflow("wf").epoch == 1
    finally:
        store.close()
    assert os.path.exists(state / DB_NAME)
