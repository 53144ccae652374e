"""The SQLite store's file handling: permissions, refused locations, damage, versions."""

from __future__ import annotations

import sqlite3
import stat

import pytest

from cross_instance import hostinfo
from cross_instance.errors import StoreCorrupt, StoreUnavailable, UnsupportedLocation
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
