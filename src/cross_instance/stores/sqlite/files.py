"""The database file on disk: judged before SQLite opens it, and created whole or not at all.

SQLite treats a 0-byte file as a new empty database, and a ``-wal`` deleted after a crash as
"nothing was written since the last checkpoint": both would quietly hand out epochs and lock
tokens again from 1. These checks read the bytes SQLite would trust and refuse instead. They
run under the store's write lock (so no writer of ours is mid-commit), before the connection.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import struct
import time
from pathlib import Path

from cross_instance.errors import StoreCorrupt, StoreUnavailable
from cross_instance.stores.crashpoints import crash_at

HEADER = b"SQLite format 3\x00"
TEMP_MARK = ".new-"


def wal_path(path: Path) -> Path:
    return path.with_name(path.name + "-wal")


def shm_path(path: Path) -> Path:
    return path.with_name(path.name + "-shm")


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return None


def problem(path: Path) -> str | None:
    """Why the existing file at ``path`` cannot be trusted, or None. Not a full check:
    ``PRAGMA quick_check`` at open covers the pages themselves. Never call it while this
    process has a SQLite connection on ``path``: closing the file drops SQLite's locks."""
    try:
        with open(path, "rb") as f:
            head = f.read(100)
            size = os.fstat(f.fileno()).st_size
    except OSError as err:
        return f"cannot read it: {err.strerror}"
    if size == 0:
        return "the file is empty (0 bytes)"
    if len(head) < 100:
        return f"the file is truncated ({size} bytes, less than a SQLite header)"
    if not head.startswith(HEADER):
        return "the file does not start with a SQLite header (overwritten or not a database)"
    page_size = struct.unpack(">H", head[16:18])[0]
    page_size = 65536 if page_size == 1 else page_size
    pages, change, valid_for = struct.unpack(">I", head[28:32])[0], head[24:28], head[92:96]
    wal = _size(wal_path(path)) or 0
    # With frames in the -wal (a crash in the middle of a checkpoint, say), the file may
    # legitimately be shorter than page 1 says: SQLite completes it from the -wal.
    if change == valid_for and page_size and size < pages * page_size and wal <= 32:
        return (f"the file is truncated ({size} bytes; its header says {pages} pages of "
                f"{page_size} bytes)")
    return lost_wal(path)


def deep_problem(path: Path) -> str | None:
    """What SQLite itself finds wrong reading every page, or None (read-only). An error that
    is not about damage (a file it cannot open, say) is raised: it proves nothing."""
    conn = None
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        if conn.execute("PRAGMA user_version").fetchone()[0] == 0:
            return "it holds no schema"
        found = conn.execute("PRAGMA quick_check").fetchone()[0]
        return None if found == "ok" else str(found)
    except sqlite3.Error as err:
        code = getattr(err, "sqlite_errorcode", None)
        primary = code & 0xFF if isinstance(code, int) else None
        if primary in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB) or "malformed" in str(err):
            return str(err)
        raise StoreUnavailable(f"cannot judge state database {path}: {err}",
                               location=str(path)) from err
    finally:
        if conn is not None:
            conn.close()


def lost_wal(path: Path) -> str | None:
    """The ``-shm`` index says the ``-wal`` holds commits not yet copied into the database,
    but the ``-wal`` is gone or shorter than that: those commits are lost."""
    try:
        with open(shm_path(path), "rb") as f:
            index = f.read(136)
    except OSError:
        return None  # no index: SQLite rebuilds it from the -wal, which is all it has
    if len(index) < 136 or index[0:48] != index[48:96] or not index[12]:
        return None  # not initialised, or being rebuilt: nothing to compare with
    page_size = struct.unpack("=H", index[14:16])[0]
    page_size = 65536 if page_size == 1 else page_size
    frames = struct.unpack("=I", index[16:20])[0]
    backfilled = struct.unpack("=I", index[96:100])[0]
    if frames <= backfilled:
        return None  # every commit is in the database file already
    needed = 32 + frames * (24 + page_size)
    size = _size(wal_path(path))
    if size is None:
        return (f"its -wal file is missing while {wal_path(path).name[:-4]}-shm says it held "
                f"{frames - backfilled} uncheckpointed page(s): the latest commits are lost")
    if size < needed:
        return (f"its -wal file is {size} bytes while the -shm index says it held {needed}: "
                f"the latest commits are lost")
    return None


def file_id(path: Path | str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def create(path: Path, migrations: tuple[str, ...], boot_id: str, floor: int) -> bool:
    """Create the database at ``path`` whole: built and checkpointed under a temporary name,
    then linked into place (``link`` never replaces a file). False when another creator got
    there first. The caller holds the write lock, so leftover temporaries are a crashed
    creator's and are removed."""
    for stale in path.parent.glob(path.name + TEMP_MARK + "*"):
        with contextlib.suppress(OSError):
            stale.unlink()
    temp = path.with_name(f"{path.name}{TEMP_MARK}{os.getpid()}")
    os.close(os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
    try:
        conn = sqlite3.connect(temp, isolation_level=None)
        try:
            # Small pages: a permit touches a handful of tiny rows, and a commit writes every
            # dirty page to the WAL. (page_size only applies while the file is still empty.)
            conn.execute("PRAGMA page_size=1024")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("BEGIN IMMEDIATE")
            for version, migration in enumerate(migrations):
                for statement in migration.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version={version + 1}")
            conn.executemany("INSERT OR REPLACE INTO meta(key, value) VALUES(?, ?)",
                             [("boot_id", boot_id), ("floor", str(floor)),
                              ("created_wall_ms", str(time.time_ns() // 1_000_000))])
            conn.execute("COMMIT")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()
        fd = os.open(temp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        crash_at("sqlite.create.before_link")
        try:
            os.link(temp, path)
        except FileExistsError:
            return False
        return True
    finally:
        for leftover in (temp, wal_path(temp), shm_path(temp)):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()


def highest_issued(path: Path) -> int:
    """The highest epoch or lock token a (possibly damaged) database shows, best effort: 0
    when nothing can be read. Opened read-only; never repairs anything."""
    best = 0
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error:
        return 0
    try:
        for sql in ("SELECT MAX(epoch) FROM workflows", "SELECT MAX(token) FROM locks",
                    "SELECT CAST(value AS INTEGER) FROM meta WHERE key='floor'"):
            try:
                row = conn.execute(sql).fetchone()
            except sqlite3.Error:
                continue
            if row and isinstance(row[0], int):
                best = max(best, row[0])
    finally:
        conn.close()
    return best


def quarantine(path: Path, stamp: str) -> list[Path]:
    """Move the database and its ``-wal`` / ``-shm`` aside, kept together so SQLite still
    reads them as one; returns the new names."""
    target = path.with_name(f"{path.name}.damaged-{stamp}")
    moved = []
    for src, dst in ((path, target), (wal_path(path), wal_path(target)),
                     (shm_path(path), shm_path(target))):
        if src.exists():
            os.rename(src, dst)
            moved.append(dst)
    return moved


def check_same(path: Path, expected: tuple[tuple[int, int] | None, tuple[int, int] | None]
               ) -> str | None:
    """Why the files at ``path`` are no longer the ones this connection opened, or None."""
    db, wal = expected
    if file_id(path) != db:
        return "the database file was moved, deleted or replaced while in use"
    if wal is not None and file_id(wal_path(path)) != wal:
        return "its -wal file was deleted or replaced while in use: commits in it are lost"
    return None


def damaged(path: Path, why: str) -> StoreCorrupt:
    """The one error for a state database that cannot be trusted, with what to do."""
    return StoreCorrupt(
        f"state database {path} is damaged ({why}). It holds the workflows with their state "
        f"and epochs, the locks with their fencing tokens, the instance registry and the rate "
        f"state; nothing is reset silently. Stop every instance using {path.parent}, then run "
        f"`pi-xi store recover`: it moves the damaged files aside (kept for inspection) and "
        f"starts a new database whose epochs and lock tokens begin above any the old one "
        f"handed out. Lost: workflow ownership and state (claim again), held locks, learned "
        f"rates; permits and registrations come back as instances restart",
        location=str(path))
