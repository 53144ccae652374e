"""One SQLite database in the state directory, opened safely, written one transaction at a time.

Promises:
- the directory is 0700 and the files 0600; a network file system is refused (SQLite's locks are
  not trustworthy there);
- only a *missing* file creates a database, and a new one appears whole: it is built under a
  temporary name and linked into place, so a racing opener never sees a half-made file. Any
  other unreadable state (0 bytes, truncated, a foreign header, no schema, a ``-wal`` that the
  ``-shm`` says held uncheckpointed commits) is refused with ``StoreCorrupt`` naming the path:
  the file holds epochs and fencing tokens, and starting over from an empty one would hand
  them out again. A database replaced, moved or deleted (or its ``-wal``) while open is noticed
  before the next operation, which fails the same way, so two processes never act on two copies;
- a database created where an earlier one lived (or by ``recover``) starts its epochs and lock
  tokens above a floor: the wall clock in microseconds, like every Redis incarnation;
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
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from cross_instance.core.liveness import UNKNOWN_BOOT
from cross_instance.errors import StoreUnavailable, UnsupportedLocation
from cross_instance.hostfacts import identity as hostinfo
from cross_instance.hostfacts.system import require_posix_locks
from cross_instance.stores.crashpoints import crash_at
from cross_instance.stores.sqlite import files
from cross_instance.stores.sqlite.files import damaged
from cross_instance.stores.sqlite.schema import MIGRATIONS, SCHEMA_VERSION

T = TypeVar("T")
DB_NAME = "coordinator.sqlite3"
LOCK_NAME = "coordinator.lock"
USERS_NAME = "coordinator.users"  # every open Database holds a shared flock on it
CHECK_FILES_S = 0.02  # how stale "the files are still ours" may be before an operation
DAMAGED_NAME = "coordinator.damaged"  # why, when damage was seen while running; until recover

MARK = b"pi-cross-instance state directory: a database has lived here\n"

_CORRUPT_CODES = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}


def map_error(err: sqlite3.Error, path: Path) -> Exception:
    """The project error for a SQLite error, naming the database path."""
    code = getattr(err, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    if primary in _CORRUPT_CODES or "malformed" in str(err) or "not a database" in str(err):
        return damaged(path, str(err))
    if primary == sqlite3.SQLITE_FULL or code == sqlite3.SQLITE_IOERR_WRITE:
        # ENOSPC, or EFBIG past a file-size limit: the transaction was rolled back whole.
        return StoreUnavailable(f"cannot write {path}, the disk or the file-size limit is "
                                f"full ({err}); nothing of the operation was kept, retry once "
                                f"there is space", location=str(path))
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


def wall_floor() -> int:
    """Wall-clock microseconds: above every epoch and token an earlier database could have
    handed out, unless it averaged more than a million per second since its own floor."""
    return time.time_ns() // 1000


def _damage_seen(directory: Path) -> str | None:
    try:
        return (directory / DAMAGED_NAME).read_text(encoding="utf-8", errors="replace").strip()
    except FileNotFoundError:
        return None


def _remember_damage(directory: Path, why: str) -> str:
    """Damage seen by a running process outlives it: every later open refuses until
    ``recover`` (the files may look sound again once the process that noticed is gone)."""
    if _damage_seen(directory) is None:
        fd = os.open(directory / DAMAGED_NAME, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.write(fd, why.encode("utf-8") + b"\n")
        finally:
            os.close(fd)
    return why


def _make_private(path: Path) -> None:
    """0600 without opening the file: closing a descriptor of the database would drop the
    POSIX locks SQLite holds on it for the other connections of this process."""
    try:
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)
    except FileNotFoundError:
        pass


_OPEN: weakref.WeakSet[Database] = weakref.WeakSet()


def _mark_forked() -> None:
    for db in list(_OPEN):
        db._forked = True


if hasattr(os, "register_at_fork"):  # POSIX; elsewhere the store refuses to open
    os.register_at_fork(after_in_child=_mark_forked)


class Database:
    """A connection plus the write lock; safe to share between threads of one process."""

    def __init__(self, directory: Path, *, clock: Callable[[], int], create: bool = True,
                 mountinfo: str | None = None, floor: int | None = None,
                 lock_wait_s: float | None = None) -> None:
        self.directory = directory
        # None: wait for the write lock as long as its holder keeps it (every process of a
        # host queues behind it); a bound: StoreUnavailable past it (the daemon's choice)
        self.lock_wait_s = lock_wait_s
        self.path = directory / DB_NAME
        self.clock = clock
        self._fcntl = require_posix_locks()  # on Windows: a clear error saying what works
        seen = _damage_seen(directory)
        if seen:
            raise damaged(self.path, seen)
        if not create and not self.path.exists():
            raise StoreUnavailable(f"no state database at {self.path}", location=str(self.path))
        check_location(directory, mountinfo)
        if create:
            prepare_directory(directory)
            for name in (DB_NAME, DB_NAME + "-wal", DB_NAME + "-shm"):
                _make_private(directory / name)
        self._thread_lock = threading.Lock()
        self._lock_fd = -1
        self._open(create, floor)
        try:
            self._migrate()
        except BaseException:
            self.close()  # a refused database keeps no lock and no connection
            raise

    def _reopen_after_fork(self) -> None:
        """A forked child never shares a connection or a flock with its parent."""
        self._forked = False
        self._thread_lock = threading.Lock()
        self._open(False, None)

    def _open(self, create: bool, floor: int | None) -> None:
        self._forked = False
        _OPEN.add(self)
        try:
            self._users_fd = os.open(self.directory / USERS_NAME, os.O_RDWR | os.O_CREAT, 0o600)
            self._lock_fd = os.open(self.directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as err:
            raise StoreUnavailable(f"cannot open the lock files in {self.directory}: "
                                   f"{err.strerror}", location=str(self.directory)) from err
        # Under the write lock: creating the file, judging it, and switching it to WAL all
        # need it exclusively (processes starting together must agree on one database).
        fcntl = self._fcntl
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            self._create_or_judge(create, floor)
            self.conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=10.0
            )
            self.conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL: no fsync per commit (a power cut may lose the last commits, never
            # consistency); rare checkpoints keep the fsync cost off the per-permit path.
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.execute("PRAGMA wal_autocheckpoint=8000")
            self.conn.execute("PRAGMA temp_store=MEMORY")
            self.conn.execute("PRAGMA user_version").fetchone()  # maps the -wal and its index
            # From now on this connection holds the -wal open, so nobody else deletes it:
            # if the name ever points elsewhere, the file was replaced under us.
            self._files = (files.file_id(self.path), files.file_id(files.wal_path(self.path)))
            self._checked_at = time.monotonic()
            # Held while connected (taken after connecting, dropped before closing): a
            # holder always has the -wal and -shm open, and `recover` waits for no holder.
            fcntl.flock(self._users_fd, fcntl.LOCK_SH)
            if os.fstat(self._lock_fd).st_size == 0:
                os.pwrite(self._lock_fd, MARK, 0)
        except BaseException as err:
            fd, self._lock_fd = self._lock_fd, -1
            if hasattr(self, "conn"):
                self.conn.close()
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            os.close(self._users_fd)
            if isinstance(err, sqlite3.Error):
                raise map_error(err, self.path) from err
            raise
        fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _create_or_judge(self, create: bool, floor: int | None) -> None:
        """Only a missing file makes a new database; any other file must look sound."""
        seen = _damage_seen(self.directory)
        if seen:
            raise damaged(self.path, seen)
        if self.path.exists():
            # Closing any descriptor of a file drops every POSIX lock this process holds on
            # it, SQLite's included: while another connection of this process is open on
            # the database, its bytes are not read here (that connection judged them, and
            # notices any swap before each operation).
            sharing = [db for db in list(_OPEN)
                       if db is not self and db.path == self.path and db._lock_fd >= 0]
            if sharing:
                why = files.check_same(self.path, sharing[0]._files)
                if why:
                    raise damaged(self.path, _remember_damage(self.directory, why))
                return
            why = files.problem(self.path) or self._sidecars_deleted()
            if why:
                raise damaged(self.path, why)
            return
        if not create:
            raise StoreUnavailable(f"no state database at {self.path}", location=str(self.path))
        gone = self._database_gone()
        if gone:
            raise damaged(self.path, _remember_damage(self.directory, gone))
        if floor is None:
            # A database lived here before (the lock file carries the mark): its epochs and
            # tokens are unknown, so start above any it could have handed out.
            lived = os.fstat(self._lock_fd).st_size > 0
            floor = wall_floor() if lived else 0
        files.create(self.path, MIGRATIONS, hostinfo.boot_id(), floor)

    def _sidecars_deleted(self) -> str | None:
        """The -wal and -shm are gone although a process is connected (a connection keeps
        both): someone deleted them under it, with whatever commits they held."""
        if files.wal_path(self.path).exists() or files.shm_path(self.path).exists():
            return None
        try:
            self._fcntl.flock(self._users_fd, self._fcntl.LOCK_EX | self._fcntl.LOCK_NB)
        except BlockingIOError:
            return _remember_damage(
                self.directory, "its -wal and -shm files were deleted while another process "
                "had it open: the commits they held are lost")
        self._fcntl.flock(self._users_fd, self._fcntl.LOCK_UN)
        return None

    def _database_gone(self) -> str | None:
        """The database is missing but its -wal / -shm are here, or a process is connected
        (it has the file open): it was deleted or moved under them, not never made."""
        if files.wal_path(self.path).exists() or files.shm_path(self.path).exists():
            return ("the database file is missing but its -wal or -shm is still there: it "
                    "was deleted or moved away")
        try:
            self._fcntl.flock(self._users_fd, self._fcntl.LOCK_EX | self._fcntl.LOCK_NB)
        except BlockingIOError:
            return ("the database file is missing while processes still have it open: it was "
                    "deleted or moved away under them")
        self._fcntl.flock(self._users_fd, self._fcntl.LOCK_UN)
        return None

    def _check_files(self) -> None:
        """Before an operation, at most every ``CHECK_FILES_S``: two ``stat`` calls cost as
        much as a quarter of a heartbeat. A newcomer refuses such files at open in any case,
        so an orphaned process only ever acts on a copy nobody else reads."""
        now = time.monotonic()
        if now - self._checked_at < CHECK_FILES_S:
            return
        why = files.check_same(self.path, self._files)
        if why:
            raise damaged(self.path, _remember_damage(self.directory, why))
        self._checked_at = now

    def _migrate(self) -> None:
        def step(conn: sqlite3.Connection, now: int) -> None:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreUnavailable(
                    f"state database {self.path} has schema version {version}, newer than this "
                    f"pi-cross-instance understands ({SCHEMA_VERSION}); upgrade the package"
                )
            if version == 0:
                raise damaged(self.path, "it holds no schema: its creator stopped half way, "
                              "or the -wal that held everything was lost")
            for target in range(version, SCHEMA_VERSION):
                for statement in MIGRATIONS[target].split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version={target + 1}")
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
            conn.execute(f"DELETE FROM {table}")  # fixed table names
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
            self._check_open()
            self._take_write_lock()
            try:
                self._check_files()
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

    def _take_write_lock(self) -> None:
        fcntl = self._fcntl
        if self.lock_wait_s is None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            return
        deadline = time.monotonic() + self.lock_wait_s
        pause = 0.0005
        while True:
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise StoreUnavailable(
                        f"the state database {self.path} stayed locked by another process for "
                        f"{self.lock_wait_s:g}s (a paused or stuck process holds its write "
                        "lock)", location=str(self.path)) from None
            time.sleep(pause)
            pause = min(pause * 2, 0.01)

    def read(self, fn: Callable[[sqlite3.Connection, int], T]) -> T:
        """Run ``fn(conn, now)`` in one consistent read transaction (no write lock)."""
        if self._forked:
            self._reopen_after_fork()
        with self._thread_lock:
            self._check_open()
            self._check_files()
            conn = self.conn
            try:
                conn.execute("BEGIN DEFERRED")
                try:
                    return fn(conn, self.clock())
                finally:
                    conn.execute("COMMIT")
            except sqlite3.Error as err:
                raise map_error(err, self.path) from err

    def _check_open(self) -> None:
        """``StoreUnavailable`` once closed (not the raw error of a closed file, nor the
        "damaged" verdict that error would draw)."""
        if self._lock_fd < 0:
            raise StoreUnavailable(f"the state database {self.path} is closed (its runtime "
                                   "closed)", location=str(self.path))

    def close(self) -> None:
        """Close the connection and the lock file, once no thread is inside a transaction
        (one that is waits for it). Idempotent."""
        with self._thread_lock:
            self._close()

    def _close(self) -> None:
        if self._lock_fd < 0:
            return
        if not self._forked:  # a forked child's copy shares its parent's lock: keep it held
            self._fcntl.flock(self._users_fd, self._fcntl.LOCK_UN)
        try:
            self.conn.close()
        finally:
            fd, self._lock_fd = self._lock_fd, -1
            os.close(fd)
            os.close(self._users_fd)


@dataclass(frozen=True, slots=True)
class Recovery:
    """What ``recover`` did: where the damaged files went and where epochs start now."""

    path: Path
    problem: str
    moved: tuple[Path, ...]
    highest_seen: int
    floor: int


def recover(directory: Path, floor: int | None = None, *, force: bool = False) -> Recovery:
    """Move a damaged database aside and create a new one whose epochs and lock tokens start
    above every one the old database handed out: above the highest it still shows, above
    ``floor`` when given (one remembered from a log), and above the wall clock in
    microseconds. Refused while any process has the database open, and for a sound one
    unless ``force``: a database whose -wal and -shm were both deleted after a crash looks
    sound although commits (and the epochs they handed out) are lost."""
    fcntl = require_posix_locks()
    path = directory / DB_NAME
    if not path.exists() and _damage_seen(directory) is None:
        raise StoreUnavailable(f"no state database at {path}: nothing to recover (the next "
                               f"instance creates one)", location=str(path))
    users = os.open(directory / USERS_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    lock = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StoreUnavailable(
                f"a process still has {path} open; stop every instance using {directory} "
                f"first (they cannot act on a database that is moved away: their next "
                f"operation fails)", location=str(path)) from None
        why = _damage_seen(directory) or files.problem(path) or files.deep_problem(path)
        if why is None and force:
            why = "moved aside on request (--force): it looked sound"
        if why is None:
            raise StoreUnavailable(f"state database {path} is not damaged: nothing to "
                                   f"recover (--force moves a sound one aside too)",
                                   location=str(path))
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        moved = tuple(files.quarantine(path, stamp))
        seen = files.highest_issued(moved[0]) if moved and moved[0].name.endswith(stamp) else 0
        start = max(wall_floor(), seen, floor or 0)
        files.create(path, MIGRATIONS, hostinfo.boot_id(), start)
        if os.fstat(lock).st_size == 0:
            os.pwrite(lock, MARK, 0)
        (directory / DAMAGED_NAME).unlink(missing_ok=True)
        return Recovery(path, why, moved, seen, start)
    finally:
        os.close(lock)
        os.close(users)
