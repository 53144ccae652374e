"""Permit operations (limits, acquire, release, queue), each inside one write transaction.

The decision itself is ``core.arbiter.arbitrate``; this module only loads the state it needs
and writes the outcome. Fast path: with nobody queued, no queue is read or sorted.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Mapping

from cross_instance.core import arbiter, limiter
from cross_instance.core.arbiter import GLOBAL_GROUP, Capacity, Holder, Need
from cross_instance.core.limiter import NS_PER_MINUTE, RateSpec
from cross_instance.core.parallel import weighted_share
from cross_instance.core.records import Granted, PermitRequest, Waiting
from cross_instance.errors import NotRegisteredError, PermitRequestError
from cross_instance.stores.sqlite.registry import recompute_limits


def publish(conn: sqlite3.Connection, instance_id: str, rates: Mapping[str, RateSpec],
            groups: Mapping[str, int]) -> None:
    for key, spec in rates.items():
        conn.execute("INSERT OR REPLACE INTO limits(key, instance_id, a, b) VALUES(?,?,?,?)",
                     (key, instance_id, spec.per_minute, spec.burst))
        conn.execute("INSERT OR IGNORE INTO buckets(key, per_minute, burst, tat) VALUES(?,?,?,0)",
                     (key, spec.per_minute, spec.burst))
    for key, limit in groups.items():
        conn.execute("INSERT OR REPLACE INTO limits(key, instance_id, a, b) VALUES(?,?,?,0)",
                     (key, instance_id, limit))
        conn.execute("INSERT OR IGNORE INTO groups(key, lim, used) VALUES(?,?,0)", (key, limit))
    recompute_limits(conn, [*rates, *groups])


def _need(req: PermitRequest, ticket: int | None) -> Need:
    return Need(req.instance_id, req.rates, req.slots, ticket)


def _waiters(conn: sqlite3.Connection, now: int, ttl_ns: int) -> list[Need]:
    conn.execute("DELETE FROM waiters WHERE seen_ns < ?", (now - ttl_ns,))
    return [
        Need(iid, tuple((k, c) for k, c in json.loads(rates)), tuple(json.loads(slots)), ticket)
        for ticket, iid, rates, slots in conn.execute(
            "SELECT ticket, instance_id, rates, slots FROM waiters ORDER BY ticket")
    ]


def _capacity(conn: sqlite3.Connection, needs: list[Need], me: str) -> Capacity:
    rate_keys = sorted({k for n in needs for k, _ in n.rates})
    group_keys = sorted({g for n in needs for g in n.slots})
    tats: dict[str, int] = {}
    specs: dict[str, RateSpec] = {}
    for key in rate_keys:
        row = conn.execute("SELECT per_minute, burst, tat FROM buckets WHERE key=?", (key,)
                           ).fetchone()
        if row is None:
            raise PermitRequestError(f"no limit published for bucket {key}")
        specs[key] = RateSpec(row[0], row[1])
        tats[key] = row[2]
    used: dict[str, int] = {}
    limit: dict[str, int] = {}
    for key in group_keys:
        row = conn.execute("SELECT lim, used FROM groups WHERE key=?", (key,)).fetchone()
        if row is not None:
            limit[key], used[key] = row
    rows = conn.execute("SELECT id, slots, reserved, priority FROM instances").fetchall()
    if not any(r[0] == me for r in rows):
        raise NotRegisteredError(f"instance {me} is not registered (it may have been judged dead)")
    total = limit.get(GLOBAL_GROUP, 1 << 30)
    priorities = [r[3] for r in rows]
    holders = {r[0]: Holder(r[1], r[2], weighted_share(total, r[3], priorities)) for r in rows}
    return Capacity(tats, specs, used, limit, holders)


_SLIDE = (
    "prev=CASE WHEN win=:win THEN prev WHEN win=:win-1 THEN cur ELSE 0 END, "
    "cur=CASE WHEN win=:win THEN cur+:cost ELSE :cost END, win=:win"
)
_TAKE = f"UPDATE buckets SET tat=:tat, {_SLIDE} WHERE key=:key RETURNING cur, prev, per_minute"
_COUNT = (
    "INSERT INTO usage(key, instance_id, win, cur, prev) VALUES(:key, :iid, :win, :cost, 0) "
    f"ON CONFLICT(key, instance_id) DO UPDATE SET {_SLIDE}"
)


def estimate(cur: int, prev: int, now: int) -> int:
    """Admissions in the last minute, from this minute's count and a share of the last one."""
    frac = (now % NS_PER_MINUTE) / NS_PER_MINUTE
    return int(cur + prev * (1.0 - frac))


def _grant(conn: sqlite3.Connection, now: int, req: PermitRequest, cap: Capacity,
           ticket: int | None) -> Granted:
    win = now // NS_PER_MINUTE
    usage = lim = 0
    for i, (key, cost) in enumerate(req.rates):
        tat = limiter.consume(cap.tats[key], now, cap.specs[key], cost)
        args = {"tat": tat, "win": win, "cost": cost, "key": key, "iid": req.instance_id}
        cur, prev, per_minute = conn.execute(_TAKE, args).fetchone()
        conn.execute(_COUNT, args)
        if i == 0:
            usage, lim = estimate(cur, prev, now), per_minute
    for group in req.slots:
        conn.execute("UPDATE groups SET used=used+1 WHERE key=?", (group,))
    if GLOBAL_GROUP in req.slots:
        conn.execute("UPDATE instances SET slots=slots+1 WHERE id=?", (req.instance_id,))
    # Random ids: a stale release can never hit a later permit that reused a row id.
    permit_id = secrets.randbits(62) + 1
    conn.execute(
        "INSERT INTO permits(id, instance_id, provider, model, groups, tokens, granted_ns) "
        "VALUES(?,?,?,?,?,?,?)",
        (permit_id, req.instance_id, req.provider, req.model, json.dumps(req.slots), req.tokens,
         now))
    if ticket is not None:
        conn.execute("DELETE FROM waiters WHERE ticket=?", (ticket,))
    return Granted(permit_id, now, usage, lim)


def acquire(conn: sqlite3.Connection, now: int, req: PermitRequest, ticket: int | None,
            ttl_ns: int, queue: bool = True) -> Granted | Waiting | None:
    waiters = _waiters(conn, now, ttl_ns) if _any_waiters(conn) else []
    if ticket is not None and not any(w.ticket == ticket for w in waiters):
        ticket = None  # our place expired (we were away too long): queue again at the back
    me = _need(req, ticket)
    cap = _capacity(conn, [me, *waiters], req.instance_id)
    why = arbiter.impossible(me, cap.specs)
    if why is not None:
        raise PermitRequestError(why)
    verdict = arbiter.arbitrate(me, waiters, cap, now)
    if verdict.grant:
        return _grant(conn, now, req, cap, ticket)
    if not queue:
        return None
    if ticket is None:
        ticket = conn.execute(
            "INSERT INTO waiters(instance_id, rates, slots, seen_ns) VALUES(?,?,?,?)",
            (req.instance_id, json.dumps(req.rates), json.dumps(req.slots), now)).lastrowid
    else:
        conn.execute("UPDATE waiters SET seen_ns=? WHERE ticket=?", (now, ticket))
    return Waiting(int(ticket or 0), verdict.ready_at, verdict.slot_blocked, verdict.ahead,
                   verdict.reason, now)


def _any_waiters(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM waiters LIMIT 1").fetchone() is not None


def release(conn: sqlite3.Connection, permit_id: int) -> bool:
    row = conn.execute("DELETE FROM permits WHERE id=? RETURNING instance_id, groups",
                       (permit_id,)).fetchone()
    if row is None:
        return False
    instance_id, groups = row
    for group in json.loads(groups):
        conn.execute("UPDATE groups SET used=MAX(0, used-1) WHERE key=?", (group,))
        if group == GLOBAL_GROUP:
            conn.execute("UPDATE instances SET slots=MAX(0, slots-1) WHERE id=?", (instance_id,))
    return True
