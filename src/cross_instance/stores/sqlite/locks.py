"""TTL locks with fencing tokens in the SQLite store: each function runs inside one write
transaction (``db.Database``); the rules are ``core.locking``'s."""

from __future__ import annotations

import secrets
import sqlite3
from typing import Any

from cross_instance.core.liveness import Verdict
from cross_instance.core.locking import (
    LockRecord,
    LockWaiting,
    can_renew,
    my_turn,
    next_token,
    why_free,
)
from cross_instance.hostfacts.identity import verdict
from cross_instance.stores.permit_ids import new_ticket
from cross_instance.stores.sqlite import registry
from cross_instance.stores.sqlite.ownership import floor, owner_of

RELEASES_KEPT = 1000
_COLUMNS = ("resource, lock_id, holder, token, acquired_ns, expires_ns, acquired_wall_ms, "
            "expires_wall_ms")


def _record(row: tuple[Any, ...] | None) -> LockRecord | None:
    if row is None or row[2] is None:
        return None
    return LockRecord(row[0], row[1], row[2], int(row[3]), int(row[4]), int(row[5]),
                      int(row[6]), int(row[7]))


def _load(conn: sqlite3.Connection, resource: str) -> tuple[LockRecord | None, int | None]:
    """The resource's lock (None when free) and its last token (None: it never had one)."""
    row = conn.execute(f"SELECT {_COLUMNS} FROM locks WHERE resource=?", (resource,)).fetchone()
    return _record(row), (int(row[3]) if row else None)


def _holder_verdict(conn: sqlite3.Connection, holder: str, now: int) -> Verdict:
    found = registry.load(conn, holder)
    return verdict(found[0], now) if found else Verdict.DEAD


def _free(conn: sqlite3.Connection, lock: LockRecord, reason: str) -> None:
    conn.execute("UPDATE locks SET holder=NULL, lock_id=NULL, wait=NULL WHERE resource=? AND "
                 "lock_id=?", (lock.resource, lock.lock_id))
    registry.add_event(conn, "lock_lost", lock.holder, {
        "resource": lock.resource, "token": lock.token, "reason": reason})


def acquire(conn: sqlite3.Connection, now: int, resource: str, instance_id: str, ttl_ns: int,
            ticket: int | None, wait: bool, waiter_ttl_ns: int
            ) -> LockRecord | LockWaiting | None:
    """Grant ``resource`` if it is free and nobody asked earlier; else queue (``wait``) or
    return None. ``ticket`` is the wait's own id (see ``permit_ids``): a wait sent twice
    queues once, and once granted gets the same lock again."""
    owner_of(conn, instance_id)  # only registered instances hold locks
    conn.execute("DELETE FROM lock_waiters WHERE resource=? AND seen_ns<? AND wait IS NOT ?",
                 (resource, now - waiter_ttl_ns, ticket))
    current, last_token = _load(conn, resource)
    if current is not None and ticket is not None and current.holder == instance_id and \
            conn.execute("SELECT wait FROM locks WHERE resource=?", (resource,)
                         ).fetchone()[0] == ticket:
        return current  # this wait was granted the lock already
    seen = None
    if current is not None and current.expires_ns > now:
        seen = _holder_verdict(conn, current.holder, now)
    reason = why_free(current, now, seen)
    first = conn.execute("SELECT wait FROM lock_waiters WHERE resource=? ORDER BY ticket "
                         "LIMIT 1", (resource,)).fetchone()
    if reason and my_turn(None if first is None else first[0], ticket):
        if current is not None:
            _free(conn, current, reason)
        wall = registry.wall_ms()
        lock = LockRecord(resource, secrets.token_hex(16), instance_id,
                          next_token(last_token, floor(conn) if last_token is None else 0), now,
                          now + ttl_ns, wall, wall + ttl_ns // 1_000_000)
        conn.execute(
            f"INSERT OR REPLACE INTO locks({_COLUMNS}, wait) VALUES(?,?,?,?,?,?,?,?,?)",
            (lock.resource, lock.lock_id, lock.holder, lock.token, lock.acquired_ns,
             lock.expires_ns, lock.acquired_wall_ms, lock.expires_wall_ms, ticket))
        if ticket is not None:
            conn.execute("DELETE FROM lock_waiters WHERE wait=?", (ticket,))
        return lock
    if not wait:
        return None
    if ticket is None:
        ticket = new_ticket()
    if conn.execute("UPDATE lock_waiters SET seen_ns=? WHERE wait=?",
                    (now, ticket)).rowcount == 0:
        conn.execute(
            "INSERT INTO lock_waiters(resource, instance_id, seen_ns, wait) VALUES(?,?,?,?)",
            (resource, instance_id, now, ticket))
    holder = current.holder if current is not None and not reason else None
    retry = current.expires_ns if current is not None and not reason else now
    return LockWaiting(ticket, retry, holder, now)


def cancel_wait(conn: sqlite3.Connection, ticket: int) -> None:
    conn.execute("DELETE FROM lock_waiters WHERE wait=?", (ticket,))


def renew(conn: sqlite3.Connection, now: int, resource: str, lock_id: str,
          ttl_ns: int) -> LockRecord | None:
    """Extend the holder's lock by ``ttl_ns`` from now; None when it is no longer held by
    ``lock_id`` (released, expired, or taken over)."""
    current, _ = _load(conn, resource)
    if not can_renew(current, lock_id, now):
        return None
    assert current is not None
    expires_wall = registry.wall_ms() + ttl_ns // 1_000_000
    conn.execute("UPDATE locks SET expires_ns=?, expires_wall_ms=? WHERE resource=?",
                 (now + ttl_ns, expires_wall, resource))
    return _load(conn, resource)[0]


def release(conn: sqlite3.Connection, resource: str, lock_id: str) -> bool:
    """Free the lock if ``lock_id`` holds it; a forged or stale id changes nothing. The
    release that freed it, sent again, gets the same answer (True), also once a waiter holds
    the lock: the last ``RELEASES_KEPT`` such ids are kept (Redis keeps them a minute)."""
    if conn.execute("UPDATE locks SET holder=NULL, lock_id=NULL, wait=NULL WHERE "
                    "resource=? AND lock_id=?", (resource, lock_id)).rowcount > 0:
        seq = conn.execute("INSERT OR IGNORE INTO released_locks(lock_id) VALUES(?)",
                           (lock_id,)).lastrowid or 0
        conn.execute("DELETE FROM released_locks WHERE seq <= ?", (seq - RELEASES_KEPT,))
        return True
    return conn.execute("SELECT 1 FROM released_locks WHERE lock_id=?",
                        (lock_id,)).fetchone() is not None


def held(conn: sqlite3.Connection) -> list[LockRecord]:
    rows = conn.execute(f"SELECT {_COLUMNS} FROM locks WHERE holder IS NOT NULL "
                        "ORDER BY resource").fetchall()
    return [lock for lock in map(_record, rows) if lock is not None]


def cleanup(conn: sqlite3.Connection, now: int) -> list[LockRecord]:
    """Free every lock past its TTL or held by a dead instance; returns them."""
    freed = []
    for lock in held(conn):
        seen = None if lock.expires_ns <= now else _holder_verdict(conn, lock.holder, now)
        reason = why_free(lock, now, seen)
        if reason:
            _free(conn, lock, reason)
            freed.append(lock)
    return freed

