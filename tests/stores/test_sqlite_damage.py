"""A damaged SQLite state never resets fencing (issue 14 item 5, FAULTS.md F16).

Only a missing file creates a database. Any other unreadable state is refused with
``StoreCorrupt`` naming the path and ``pi-xi store recover``; recovery starts epochs and lock
tokens above every one handed out before, and a process whose files were swapped or deleted
under it cannot act any more, so there are never two owners."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cross_instance.core.ownership import Action
from cross_instance.errors import StaleEpochError, StoreCorrupt, StoreUnavailable
from cross_instance.stores.sqlite.db import CHECK_FILES_S, DB_NAME, recover
from cross_instance.stores.sqlite.store import SqliteStore
from tests.conftest import record

ROOT = Path(__file__).resolve().parents[2]
SEC = 1_000_000_000


def at_epoch_4(state: Path) -> tuple[int, int]:
    """A workflow moved four times and a lock granted three times; returns (epoch, token)."""
    store = SqliteStore(state)
    try:
        store.register_instance(record("a"))
        for _ in range(4):
            epoch = store.claim_workflow("wf", "a").epoch
            store.write_workflow_state("wf", "a", epoch, {"step": epoch})
            store.release_workflow("wf", "a")
        store.claim_workflow("wf", "a")
        token = 0
        for _ in range(3):
            lock = store.acquire_lock("res", "a", 60 * SEC, None, False)
            token = lock.token
            store.release_lock("res", lock.lock_id)
        return store.get_workflow("wf").epoch, token
    finally:
        store.close()


def zero(path: Path) -> None:
    os.truncate(path, 0)


def half(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def first_page(path: Path) -> None:
    os.truncate(path, 1024)


def tiny(path: Path) -> None:
    os.truncate(path, 50)


def header(path: Path) -> None:
    with open(path, "r+b") as f:
        f.write(b"\0" * 100)


def garbage(path: Path) -> None:
    path.write_bytes(os.urandom(8192))


DAMAGE = [zero, half, first_page, tiny, header, garbage]


@pytest.mark.parametrize("damage", DAMAGE, ids=lambda f: f.__name__)
def test_damaged_file_is_refused_and_recovered_above_the_old_epochs(tmp_path, damage):
    state = tmp_path / "state"
    epoch, token = at_epoch_4(state)
    assert epoch == 5 and token == 3
    damage(state / DB_NAME)
    before = (state / DB_NAME).read_bytes()
    with pytest.raises(StoreCorrupt) as err:
        SqliteStore(state)
    message = str(err.value)
    assert str(state / DB_NAME) in message and "pi-xi store recover" in message
    assert "epochs" in message and "safe to delete" not in message
    assert err.value.location == str(state / DB_NAME)
    assert (state / DB_NAME).read_bytes() == before  # nothing written, nothing reset
    with pytest.raises(StoreCorrupt):  # and again: refusing is not a one-off
        SqliteStore(state)

    done = recover(state)
    assert done.moved[0].read_bytes() == before  # kept for inspection
    store = SqliteStore(state)
    try:
        store.register_instance(record("b"))
        claim = store.claim_workflow("wf", "b")
        assert claim.decision.action is Action.CLAIMED and claim.epoch > epoch
        assert claim.epoch == done.floor + 1
        assert store.acquire_lock("res", "b", SEC, None, False).token > token
        assert store.read_workflow_state("wf") == {}  # lost, and said so
    finally:
        store.close()


def test_recover_keeps_what_the_damaged_file_still_shows_and_a_given_floor(tmp_path):
    state = tmp_path / "state"
    at_epoch_4(state)
    with sqlite3.connect(state / DB_NAME) as conn:  # an epoch above the wall clock in µs
        conn.execute("UPDATE workflows SET epoch=? WHERE id='wf'", (10**17,))
        page = conn.execute("SELECT rootpage FROM sqlite_master WHERE name='spend'"
                            ).fetchone()[0]
    with open(state / DB_NAME, "r+b") as f:  # then damage a page other than the workflows'
        f.seek((page - 1) * 1024)
        f.write(b"\xff" * 1024)
    with pytest.raises(StoreCorrupt):
        SqliteStore(state)
    done = recover(state, floor=7)
    assert done.highest_seen == 10**17 and done.floor == 10**17
    store = SqliteStore(state)
    try:
        store.register_instance(record("b"))
        assert store.claim_workflow("wf", "b").epoch == 10**17 + 1
    finally:
        store.close()


def test_recover_refuses_a_sound_database_and_a_database_in_use(tmp_path):
    state = tmp_path / "state"
    at_epoch_4(state)
    with pytest.raises(StoreUnavailable, match="not damaged"):
        recover(state)
    store = SqliteStore(state)
    try:
        with pytest.raises(StoreUnavailable, match=r"still has .* open"):
            recover(state)
    finally:
        store.close()
    assert SqliteStore(state).get_workflow("wf").epoch == 5  # untouched


def test_recover_with_force_moves_a_sound_looking_database_aside_above_a_given_floor(tmp_path):
    """Both -wal and -shm deleted after a crash: the file looks sound but lost commits, so
    the user forces a recovery above the highest epoch the logs show."""
    state = tmp_path / "state"
    at_epoch_4(state)
    done = recover(state, 10**18, force=True)
    assert "--force" in done.problem and done.floor == 10**18
    store = SqliteStore(state)
    try:
        store.register_instance(record("x"))
        assert store.claim_workflow("wf", "x").epoch > 10**18
    finally:
        store.close()


def test_a_new_database_where_one_lived_starts_above_the_old_epochs(tmp_path):
    """The old advice was to delete the file: a missing file may be created again, but its
    epochs must not restart at 1 where an earlier database handed them out."""
    state = tmp_path / "state"
    epoch, _ = at_epoch_4(state)
    for suffix in ("", "-wal", "-shm"):
        (state / (DB_NAME + suffix)).unlink(missing_ok=True)
    store = SqliteStore(state)
    try:
        store.register_instance(record("b"))
        assert store.claim_workflow("wf", "b").epoch > 10**15 > epoch
        assert store.acquire_lock("res", "b", SEC, None, False).token > 10**15
    finally:
        store.close()


def test_the_first_database_of_a_directory_counts_from_one(tmp_path):
    store = SqliteStore(tmp_path / "state")
    try:
        store.register_instance(record("a"))
        assert store.claim_workflow("wf", "a").epoch == 1
        assert store.acquire_lock("res", "a", SEC, None, False).token == 1
    finally:
        store.close()


CRASH = """
import os, sys
from pathlib import Path
from cross_instance.stores.sqlite.store import SqliteStore
from tests.conftest import record
store = SqliteStore(Path(sys.argv[1]))
store.register_instance(record("a"))
for _ in range(3):
    store.claim_workflow("wf", "a"); store.release_workflow("wf", "a")
store.claim_workflow("wf", "a")
os._exit(9)  # no close: the commits stay in the -wal
"""


@pytest.mark.parametrize("damage", [zero, half, first_page], ids=lambda f: f.__name__)
def test_a_file_truncated_after_a_crash_is_refused_despite_its_wal(tmp_path, damage):
    """With the latest commits still in the -wal, SQLite would read the missing pages from
    it where it can: what it cannot is reported, never rebuilt."""
    state = tmp_path / "state"
    SqliteStore(state).close()
    subprocess.run([sys.executable, "-c", CRASH, str(state)], cwd=ROOT, check=False,
                   env={**os.environ}, timeout=60)
    damage(state / DB_NAME)
    with pytest.raises(StoreCorrupt) as err:
        SqliteStore(state)
    assert str(state / DB_NAME) in str(err.value)


def test_a_wal_deleted_after_a_crash_is_refused(tmp_path):
    state = tmp_path / "state"
    SqliteStore(state).close()
    subprocess.run([sys.executable, "-c", CRASH, str(state)], cwd=ROOT, check=False,
                   env={**os.environ}, timeout=60)
    assert (state / (DB_NAME + "-wal")).stat().st_size > 0
    (state / (DB_NAME + "-wal")).unlink()
    with pytest.raises(StoreCorrupt, match="-wal") as err:
        SqliteStore(state)
    assert str(state / DB_NAME) in str(err.value)
    recover(state)
    store = SqliteStore(state)
    try:
        store.register_instance(record("b"))
        assert store.claim_workflow("wf", "b").epoch > 4
    finally:
        store.close()


OPEN = """
import sys
from cross_instance.stores.sqlite.store import SqliteStore
try:
    SqliteStore(sys.argv[1]).close()
    print("opened")
except Exception as err:
    print(type(err).__name__, err)
"""


def open_elsewhere(state: Path) -> str:
    out = subprocess.run([sys.executable, "-c", OPEN, str(state)], cwd=ROOT,
                         capture_output=True, text=True, timeout=60, check=False)
    return out.stdout + out.stderr


@pytest.mark.parametrize("deleted", [("-wal",), ("-wal", "-shm")], ids="+".join)
def test_files_deleted_while_an_owner_runs_never_give_two_owners(tmp_path, deleted):
    state = tmp_path / "state"
    owner = SqliteStore(state)
    owner.register_instance(record("a"))
    for _ in range(3):
        owner.claim_workflow("wf", "a")
        owner.release_workflow("wf", "a")
    epoch = owner.claim_workflow("wf", "a").epoch
    owner.write_workflow_state("wf", "a", epoch, {"step": 1})
    for suffix in deleted:
        (state / (DB_NAME + suffix)).unlink()
    try:
        elsewhere = open_elsewhere(state)  # a newcomer in another process refuses
        assert "StoreCorrupt" in elsewhere and "deleted" in elsewhere
        with pytest.raises(StoreCorrupt, match="deleted") as err:  # and in this one
            SqliteStore(state)
        assert str(state / DB_NAME) in str(err.value)
        time.sleep(CHECK_FILES_S * 2)  # the owner looks again before its next operation
        with pytest.raises(StoreCorrupt):  # and cannot act on its orphaned copy
            owner.write_workflow_state("wf", "a", epoch, {"step": 2})
        with pytest.raises(StoreCorrupt):
            owner.validate_epoch("wf", "a", epoch)
        with pytest.raises(StoreCorrupt):
            owner.heartbeat("a")
    finally:
        owner.close()
    with pytest.raises(StoreCorrupt, match="deleted"):  # remembered once the owner is gone
        SqliteStore(state)
    recover(state)
    store = SqliteStore(state)
    try:
        store.register_instance(record("b"))
        assert store.claim_workflow("wf", "b").epoch > epoch
        with pytest.raises(StaleEpochError):
            store.write_workflow_state("wf", "a", epoch, {"step": 3})
    finally:
        store.close()


def test_a_database_moved_away_while_in_use_stops_its_users(tmp_path):
    state = tmp_path / "state"
    owner = SqliteStore(state)
    try:
        owner.register_instance(record("a"))
        epoch = owner.claim_workflow("wf", "a").epoch
        for suffix in ("", "-wal", "-shm"):  # all three, as a careless `mv` would
            os.rename(state / (DB_NAME + suffix), tmp_path / ("elsewhere" + suffix))
        elsewhere = open_elsewhere(state)  # a newcomer does not make a second database
        assert "StoreCorrupt" in elsewhere and "still have it open" in elsewhere
        assert not (state / DB_NAME).exists()
        time.sleep(CHECK_FILES_S * 2)
        with pytest.raises(StoreCorrupt, match="moved, deleted or replaced"):
            owner.write_workflow_state("wf", "a", epoch, {"step": 1})
    finally:
        owner.close()
    with pytest.raises(StoreCorrupt, match="still have it open"):  # remembered
        SqliteStore(state)
    with pytest.raises(StoreCorrupt, match="still have it open"):  # by readers (CLI) too
        SqliteStore(state, create=False)


def test_pi_xi_store_recover(tmp_path):
    from tests.cli.test_cli import cli

    state = tmp_path / "state"
    epoch, _ = at_epoch_4(state)
    zero(state / DB_NAME)
    refused = cli(tmp_path, "pi-xi", "status")
    assert refused.returncode == 1 and "pi-xi store recover" in refused.stderr
    assert "Traceback" not in refused.stderr
    out = cli(tmp_path, "pi-xi", "store", "recover", "--json")
    assert out.returncode == 0, out.stderr
    import json

    data = json.loads(out.stdout)
    assert data["problem"] == "the file is empty (0 bytes)" and data["floor"] > epoch
    again = cli(tmp_path, "pi-xi", "store", "recover")
    assert again.returncode == 1 and "not damaged" in again.stderr


PEEK = """
import sys
from cross_instance.stores.sqlite.store import SqliteStore
store = SqliteStore(sys.argv[1], create=False)
wf = store.get_workflow("wf")
print(wf.epoch if wf else 0)
store.close()
"""


def test_a_second_store_in_one_process_keeps_sqlites_locks(tmp_path):
    """Closing any descriptor of the database drops every POSIX lock of the process, SQLite's
    too: another process closing last would then delete the live -wal, and the commits made
    after it would vanish for everyone else (the epoch going back)."""
    state = tmp_path / "state"
    first = SqliteStore(state)
    second = SqliteStore(state)  # e.g. two runtimes, or a runtime and a status view
    try:
        first.register_instance(record("a"))
        first.claim_workflow("wf", "a")

        def peek() -> int:
            out = subprocess.run([sys.executable, "-c", PEEK, str(state)], cwd=ROOT,
                                 capture_output=True, text=True, timeout=60, check=False)
            assert out.returncode == 0, out.stderr
            return int(out.stdout)

        assert peek() == 1
        first.release_workflow("wf", "a")
        assert first.claim_workflow("wf", "a").epoch == 2
        assert peek() == 2
    finally:
        second.close()
        first.close()


def test_a_forked_child_closing_its_copy_keeps_the_parent_counted_as_a_user(tmp_path):
    state = tmp_path / "state"
    at_epoch_4(state)
    store = SqliteStore(state)  # the parent uses it
    try:
        pid = os.fork()
        if pid == 0:  # the child closes the copy it inherited, without using it
            try:
                store.close()
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        with pytest.raises(StoreUnavailable, match=r"still has .* open"):
            recover(state)  # the parent is still using it
    finally:
        store.close()
