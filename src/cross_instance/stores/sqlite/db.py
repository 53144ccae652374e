"""One SQLite database in the state directory, opened safely, written one transaction at a time.

Promises:
- the directory is 0700 and the files 0600; a network file system is refused (SQLite's locks are
  not trustworthy there), a damaged file is refused with its path named;
- every write is one ``BEGIN IMMEDIATE`` transaction taken under an exclusive ``flock`` on a
  side lock file. Writers queue in the kernel instead of spinning in SQLite's busy handler,
  whose sleeps starve processes and cap throughput; readers (WAL) never take the lock;
- ``now`` is read after the lock is held, so decisions are ordered the same way as their times;
- SQLite errors are mapped once to ``StoreUnavailable`` (retryable) or ``StoreCorrupt``.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from cross_instance import hostinfo
from cross_instance.core.liveness import UNKNOWN_BOOT
from cross_instance.crashpoints import crash_at
from cross_instance.errors import StoreCorrupt, StoreUnavailable, UnsupportedLocation
from cross_instance.hostfacts.system import require_posix_locks
from cross_instance.stores.sqlite.schema import MIGRATIONS, SCHEMA_VERSION

T = TypeVar("T")
DB_NAME = "coordinator.sqlite3"
LOCK_NAME = "coordinator.lock"

_CORRUPT_CODES = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}


def map_error(err: sqlite3.Error, path: Path) -> Exception:
    """The project error for a SQLite error, naming the database path."""
    code = getattr(err, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    if primary in _CORRUPT_CODES or "malformed" in str(err) or "not a database" in str(err):
        return StoreCorrupt(
            f"state database {path} is damaged ({err}); stop every instance, move the file "
            f"aside (it is safe to delete: it holds only leases and rate state) and start again",
            location=str(path),
        )
    if primary == sqlite3.SQLITE_FULL:
        return StoreUnavailable(f"disk full writing {path} ({err})", location=str(path))
    return StoreUnavailable(f"state database {path} unavailable: {err}", location=str(path))


def check_location(directory: Path, mountinfo: str | None = None) -> None:
    """Refuse a state directory on a network file system."""
    info = hostinfo.read_mountinfo() if mountinfo is None else mountinfo
    fs_type = hostinfo.filesystem_type(str(directory), info)
    if hostinfo.is_network_fs(fs_type):
        raise UnsupportedLocation(
            f"state directory {directory} is on a network file system ({fs_type}); SQLite "
            f"locking is unreliable there. Set PI_RUNTIME_DIR to a local directory, or use "
            f"the Redis store for several hosts",
            location=str(directory),
        )


def prepare_directory(directory: Path) -> None:
    """Create the state directory 0700 (or tighten it), refusing a file in its place."""
    if directory.exists() and not directory.is_dir():
        raise UnsupportedLocation(
            f"state directory {directory} exists but is not a directory", location=str(directory)
        )
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if directory.stat().st_mode & 0o077 and directory.stat().st_uid == os.getuid():
            directory.chmod(0o700)
    except OSError as err:
        raise StoreUnavailable(
            f"cannot create state directory {directory}: {err.strerror}", location=str(directory)
        ) from err


def _touch_private(path: Path) -> None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    if path.stat().st_mode & 0o077:
        path.chmod(0o600)


_OPEN: weakref.WeakSet[Database] = weakref.WeakSet()


def _mark_forked() -> None:
    for db in list(_OPEN):
        db._forked = True


if hasattr(os, "register_at_fork"):  # POSIX; elsewhere the store refuses to open
    os.register_at_fork(after_in_child=_mark_forked)


class Database:
    """A connection plus the write lock; safe to share between threads of one process."""

    def __init__(self, directory: Path, *, clock: Callable[[], int], create: bool = True,
                 mountinfo: str | None = None) -> None:
        self.directory = directory
        self.path = directory / DB_NAME
        self.clock = clock
        self._fcntl = require_posix_locks()  # on Windows: a clear error saying what works
        if not create and not self.path.exists():
            raise StoreUnavailable(f"no state database at {self.path}", location=str(self.path))
        check_location(directory, mountinfo)
        if create:
            prepare_directory(directory)
            for name in (DB_NAME, LOCK_NAME, DB_NAME + "-wal", DB_NAME + "-shm"):
                if name in (DB_NAME, LOCK_NAME) or (directory / name).exists():
                    _touch_private(directory / name)
        self._thread_lock = threading.Lock()
        self._open()
        self._migrate()

    def _reopen_after_fork(self) -> None:
        """A forked child never shares a connection or a flock with its parent."""
        self._forked = False
        self._thread_lock = threading.Lock()
        self._open()

    def _open(self) -> None:
        self._forked = False
        _OPEN.add(self)
        try:
            self._lock_fd = os.open(self.directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as err:
            raise StoreUnavailable(f"cannot open {self.directory / LOCK_NAME}: {err.strerror}",
                                   location=str(self.directory)) from err
        # Under the write lock: switching a new file to WAL needs it exclusively, and SQLite's
        # busy handler does not cover that step (processes starting together would fail).
        fcntl = self._fcntl
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            self.conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=10.0
            )
            # Small pages: a permit touches a handful of tiny rows, and a commit writes every
            # dirty page to the WAL. (page_size only applies while the file is still empty.)
            self.conn.execute("PRAGMA page_size=1024")
            self.conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL: no fsync per commit (a power cut may lose the last commits, never
            # consistency); rare checkpoints keep the fsync cost off the per-permit path.
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.execute("PRAGMA wal_autocheckpoint=8000")
            self.conn.execute("PRAGMA temp_store=MEMORY")
        except sqlite3.Error as err:
            os.close(self._lock_fd)
            raise map_error(err, self.path) from err
        finally:
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            except OSError:
                pass

    def _migrate(self) -> None:
        def step(conn: sqlite3.Connection, now: int) -> None:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreUnavailable(
                    f"state database {self.path} has schema version {version}, newer than this "
                    f"pi-cross-instance understands ({SCHEMA_VERSION}); upgrade the package"
                )
            for target in range(version, SCHEMA_VERSION):
                for statement in MIGRATIONS[target].split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version={target + 1}")
            if version == 0:
                integrity = "ok"
            else:
                integrity = conn.execute("PRAGMA quick_check").fetchone()[0]
            if integrity != "ok":
                raise sqlite3.DatabaseError(f"database disk image is malformed: {integrity}")
            self._check_boot(conn)

        self.write(step)

    def _check_boot(self, conn: sqlite3.Connection) -> None:
        """Times are on the host clock the database names: a process on another clock (another
        operating system sharing the directory) is refused. Boot-time values from an earlier
        boot mean nothing now: forget them."""
        clock = hostinfo.clock_name()
        recorded = conn.execute("SELECT value FROM meta WHERE key='clock'").fetchone()
        if recorded is not None and recorded[0] != clock:
            raise StoreUnavailable(
                f"state database {self.path} keeps time on {recorded[0]}, but this process's "
                f"clock is {clock}: processes sharing a state directory must run on one "
                f"host; use a directory of this system's own (PI_RUNTIME_DIR) or the Redis "
                f"store", location=str(self.path))
        if recorded is None:
            conn.execute("INSERT INTO meta(key, value) VALUES('clock', ?)", (clock,))
        row = conn.execute("SELECT value FROM meta WHERE key='boot_id'").fetchone()
        current = hostinfo.boot_id()
        if (row is not None and row[0] == current) or current == UNKNOWN_BOOT:
            return  # the same boot, or this process cannot tell: erase nothing
        for table in ("instances", "permits", "waiters", "limits", "active_models", "usage"):
            conn.execute(f"DELETE FROM {table}")  # noqa: S608 - fixed table names
        conn.execute("UPDATE buckets SET tat=0")
        conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES('boot_id', ?)", (current,))

    def write(self, fn: Callable[[sqlite3.Connection, int], T], op: str = "write") -> T:
        """Run ``fn(conn, now)`` as one immediate transaction under the write lock. ``op``
        names the crash points around its commit (``sqlite.<op>.before_commit`` and
        ``sqlite.<op>.after_commit``) for fault tests."""
        if self._forked:
            self._reopen_after_fork()
        fcntl = self._fcntl
        with self._thread_lock:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            try:
                conn = self.conn
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    try:
                        result = fn(conn, self.clock())
                        crash_at(f"sqlite.{op}.before_commit")
                        conn.execute("COMMIT")
                    except BaseException:
                        if conn.in_transaction:
                            conn.execute("ROLLBACK")
                        raise
                except sqlite3.Error as err:
                    raise map_error(err, self.path) from err
                crash_at(f"sqlite.{op}.after_commit")
                return result
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def read(self, fn: Callable[[sqlite3.Connection, int], T]) -> T:
        """Run ``fn(conn, now)`` in one consistent read transaction (no write lock)."""
        if self._forked:
            self._reopen_after_fork()
        with self._thread_lock:
            conn = self.conn
            try:
                conn.execute("BEGIN DEFERRED")
                try:
                    return fn(conn, self.clock())
                finally:
                    conn.execute("COMMIT")
            except sqlite3.Error as err:
                raise map_error(err, self.path) from err

    def close(self) -> None:
        """Close the connection and the lock file. Idempotent."""
        if self._lock_fd < 0:
            return
        try:
            self.conn.close()
        finally:
            fd, self._lock_fd = self._lock_fd, -1
            os.close(fd)
