"""Processes that open a brand-new state directory at the same moment all succeed."""

from __future__ import annotations

from tests.processes.spawn import run_together
from tests.processes.workers import open_store_together


def test_simultaneous_first_opens(tmp_path):
    for round_ in range(3):
        state = tmp_path / f"state{round_}"
        results = run_together(open_store_together, [(str(state),)] * 8, timeout=60)
        assert all(r[0] == "ok" for r in results), results
        assert len({r[1] for r in results}) == 1  # one database file for all eight
        won = sorted(r[2] for r in results if r[2])
        assert won == list(range(1, len(won) + 1))  # each epoch handed out once, from 1


def test_a_creator_killed_half_way_leaves_no_database_to_judge(tmp_path):
    """A creator dies after building the new database under its temporary name: no file
    appears at the real name, so the next opener creates one (from epoch 1: none was ever
    handed out) instead of refusing a half-made file as damaged."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from cross_instance.stores.sqlite.db import DB_NAME
    from cross_instance.stores.sqlite.store import SqliteStore
    from tests.conftest import record

    state = tmp_path / "state"
    env = {**os.environ, "PI_XI_CRASHPOINT": "sqlite.create.before_link"}
    code = "import sys; from cross_instance.stores.sqlite.store import SqliteStore; " \
           "SqliteStore(sys.argv[1])"
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-c", code, str(state)], env=env, cwd=root,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 137
    assert not (state / DB_NAME).exists()
    assert list(state.glob(DB_NAME + ".new-*"))  # the half-made one, under its own name
    store = SqliteStore(state)
    try:
        assert not list(state.glob(DB_NAME + ".new-*"))  # cleaned up
        store.register_instance(record("a"))
        assert store.claim_workflow("wf", "a").epoch == 1
    finally:
        store.close()
