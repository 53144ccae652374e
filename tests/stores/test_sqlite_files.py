"""The SQLite store's file handling: permissions, refused locations, damage, versions."""

from __future__ import annotations

import sqlite3
import stat

import pytest

from cross_instance.errors import StoreCorrupt, StoreUnavailable, UnsupportedLocation
from cross_instance.hostfacts import identity as hostinfo
from cross_instance.stores.sqlite.db import DB_NAME
from cross_instance.stores.sqlite.store import SqliteStore
from tests.conftest import record


def test_private_modes(tmp_path):
    SqliteStore(tmp_path / "state").close()
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "state" / DB_NAME).stat().st_mode) == 0o600


def test_network_file_system_is_refused(tmp_path):
    fake = (f"36 25 0:32 / {tmp_path} rw,relatime shared:1 - nfs4 server:/export rw\n"
            "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n")
    with pytest.raises(UnsupportedLocation, match="nfs4") as err:
        SqliteStore(tmp_path / "state", mountinfo=fake)
    assert str(tmp_path) in str(err.value)
    assert not (tmp_path / "state").exists()  # nothing written
    assert hostinfo.is_network_fs("fuse.sshfs") and not hostinfo.is_network_fs("fuseblk")


def test_damaged_database_is_refused_naming_it(tmp_path):
    state = tmp_path / "state"
    SqliteStore(state).close()
    (state / DB_NAME).write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreCorrupt) as err:
        SqliteStore(state)
    assert str(state / DB_NAME) in str(err.value)


def test_newer_schema_is_refused(tmp_path):
    state = tmp_path / "state"
    SqliteStore(state).close()
    with sqlite3.connect(state / DB_NAME) as conn:
        conn.execute("PRAGMA user_version=99")
    with pytest.raises(StoreUnavailable, match="schema version 99"):
        SqliteStore(state)


def test_missing_state_is_not_created_for_readers(tmp_path):
    with pytest.raises(StoreUnavailable, match="no state database"):
        SqliteStore(tmp_path / "nothing", create=False)
    assert not (tmp_path / "nothing").exists()


def test_state_from_an_earlier_boot_is_forgotten(tmp_path):
    state = tmp_path / "state"
    store = SqliteStore(state)
    store.register_instance(record("before-reboot"))
    store.close()
    with sqlite3.connect(state / DB_NAME) as conn:
        conn.execute("UPDATE meta SET value='old-boot' WHERE key='boot_id'")
    store = SqliteStore(state)
    assert store.list_instances() == []
    store.close()


def test_migration_from_version_1_keeps_the_state(tmp_path):
    """A v1 database (as the first release wrote it) is migrated in place, state kept."""
    from cross_instance.core.limiter import RateSpec
    from cross_instance.stores.sqlite.schema import MIGRATIONS, SCHEMA_VERSION

    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    with sqlite3.connect(state / DB_NAME) as conn:
        for statement in MIGRATIONS[0].split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute("INSERT INTO buckets(key, per_minute, burst, tat) VALUES('r:p', 60, 2, 7)")
        conn.execute("INSERT INTO groups(key, lim) VALUES('*', 3)")
        conn.execute("INSERT INTO meta(key, value) VALUES('boot_id', ?)", (hostinfo.boot_id(),))
        conn.execute("PRAGMA user_version=1")
    store = SqliteStore(state)
    try:
        snap = store.snapshot()
        assert [(b.key, b.spec, b.tat_ns) for b in snap.buckets] == [("r:p", RateSpec(60, 2), 7)]
        assert [(g.key, g.limit) for g in snap.groups] == [("*", 3)]
    finally:
        store.close()
    with sqlite3.connect(state / DB_NAME) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
