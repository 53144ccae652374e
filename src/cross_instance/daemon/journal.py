"""What the daemon applied, by request id, on disk: so a request resent after the daemon was
killed and restarted is never applied twice.

Before a request that carries ``X-Pi-Request-Id`` is applied, its key is written (an intent);
after, its reply. A resent request whose reply is there gets that reply; one whose intent is
there without a reply was being applied when the daemon stopped, so whether it took effect is
not known: it is refused with ``request_outcome_unknown`` (409) rather than applied a second
time, and the client reads the state to see. Requests that are safe to apply twice by their
nature (a permit's wait, named in the store by its request id; a permit's or a lock's
release, by its id; a heartbeat) skip the journal. Entries are kept ``TTL_S`` (10 minutes,
as the in-memory replies).

A small SQLite file of the daemon's own (``coordinator-requests.sqlite3`` in its state
directory), written on the event loop: two short transactions per journaled request.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

TTL_S = 600.0
UNKNOWN = "unknown"
#: POST paths that are applied twice with the effect of once: no journal needed. (Not a
#: workflow's state write or release: a write resent after a later one would undo it, and a
#: release resent after a later claim of the same instance would release that claim.)
RESEND_SAFE = frozenset({"/v1/permits/acquire", "/v1/permits/release",
                         "/v1/instances/heartbeat", "/v1/instances/unregister",
                         "/v1/locks/release", "/v1/locks/renew"})


class Journal:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # survives a killed process
        self._db.execute("CREATE TABLE IF NOT EXISTS requests(key TEXT PRIMARY KEY, "
                         "at REAL NOT NULL, status INTEGER, reply BLOB)")
        self._writes = 0

    def find(self, key: str) -> tuple[int, bytes] | str | None:
        """The reply kept for ``key``, ``UNKNOWN`` (applied or not, nobody knows), or None."""
        row = self._db.execute("SELECT status, reply FROM requests WHERE key=? AND at>?",
                               (key, time.time() - TTL_S)).fetchone()
        if row is None:
            return None
        return UNKNOWN if row[0] is None else (int(row[0]), bytes(row[1]))

    def intend(self, key: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO requests(key, at) VALUES(?, ?)",
                         (key, time.time()))
        self._writes += 1
        if self._writes % 1000 == 0:
            self._db.execute("DELETE FROM requests WHERE at<=?", (time.time() - TTL_S,))

    def done(self, key: str, status: int, reply: bytes) -> None:
        self._db.execute("UPDATE requests SET status=?, reply=? WHERE key=?",
                         (status, reply, key))

    def forget(self, key: str) -> None:
        """Not applied after all (a server error): a resend may run."""
        self._db.execute("DELETE FROM requests WHERE key=?", (key,))

    def close(self) -> None:
        self._db.close()
