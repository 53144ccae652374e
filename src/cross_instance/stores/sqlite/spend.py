"""Spend totals in the SQLite store (``Store.add_spend`` / ``read_spend``): one row per key,
``total`` nano-dollars until ``expires_ns`` on the store clock. A row past its expiry reads as
0, counts from 0 again when added to, and is deleted by the next add."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from cross_instance.core.records import MAX_COUNT
from cross_instance.stores.base import spend_overflow

_LOAD = "SELECT total, expires_ns FROM spend WHERE key=?"
_SAVE = "INSERT OR REPLACE INTO spend(key, total, expires_ns) VALUES(?, ?, ?)"


def add(conn: sqlite3.Connection, now: int, changes: Sequence[tuple[str, int, int]]
        ) -> list[int]:
    """Apply ``changes`` (checked already) in the caller's transaction; an overflow raises
    and the transaction is rolled back whole."""
    conn.execute("DELETE FROM spend WHERE expires_ns<=?", (now,))
    totals = []
    for key, amount, expires in changes:
        row = conn.execute(_LOAD, (key,)).fetchone()
        if row is None or row[1] <= now:  # never added, or forgotten: from 0
            total, keep = amount, expires
        else:
            total, keep = row[0] + amount, max(row[1], expires)
        if total > MAX_COUNT:
            raise spend_overflow(key, total)
        conn.execute(_SAVE, (key, total, keep))
        totals.append(total)
    return totals


def read(conn: sqlite3.Connection, now: int, keys: Sequence[str]) -> list[int]:
    totals = []
    for key in keys:
        row = conn.execute(_LOAD, (key,)).fetchone()
        totals.append(int(row[0]) if row is not None and row[1] > now else 0)
    return totals
