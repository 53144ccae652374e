"""Permit operations (limits, acquire, release, queue), each inside one write transaction.

The decision itself is ``core.arbiter.arbitrate``; this module only loads the state it needs
(one statement on the fast path) and writes the outcome. A permit row *is* its slot: slot usage
is counted from the permits held, so there are no counters to keep in step, and releasing a
permit is one ``DELETE``.
"""

from __future__ import annotations

import functools
import json
import sqlite3
from collections.abc import Mapping, Sequence

from cross_instance.core import adaptive, arbiter, limiter
from cross_instance.core.arbiter import GLOBAL_GROUP, Capacity, Holder, Need
from cross_instance.core.keys import PROVIDER_SLOTS, parse_key, permit_groups
from cross_instance.core.limiter import NS_PER_MINUTE, RateSpec
from cross_instance.core.parallel import share_of_weight
from cross_instance.core.records import Granted, PermitRequest, Waiting
from cross_instance.core.window import windowed
from cross_instance.errors import NotRegisteredError, PermitRequestError
from cross_instance.stores.permit_ids import new_permit_id, new_ticket
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
        conn.execute("INSERT OR IGNORE INTO groups(key, lim) VALUES(?,?)", (key, limit))
    recompute_limits(conn, [*rates, *groups])


@functools.cache
def _state_sql(n_keys: int) -> str:
    """Everything but the queue: the asking wait's own row (?1: its ticket), the queue's
    length, the buckets asked for, the groups, the permits held and the instances."""
    marks = ",".join("?" * n_keys)
    return (
        "SELECT 0, ticket, instance_id, 0, 0, seen_ns, wait, 0 FROM waiters WHERE wait=?1 "
        "UNION ALL SELECT 5, COUNT(*), 0, 0, 0, 0, 0, 0 FROM waiters "
        "UNION ALL SELECT 1, key, per_minute, burst, tat, lrate, cooldown_until, probed "
        "FROM buckets "
        f"WHERE key IN ({marks}) "
        "UNION ALL SELECT 2, key, lim, 0, 0, 0, 0, 0 FROM groups "
        "UNION ALL SELECT 3, instance_id, provider, model, 0, 0, 0, 0 FROM permits "
        "UNION ALL SELECT 4, id, reserved, priority, 0, 0, 0, 0 FROM instances"
    )


@functools.cache
def _ahead_sql(by_place: bool, under: int, over: bool) -> str:
    """The waiters that may come before the asking one in queue order (``arbiter.queue_key``:
    instances below their share first, then by place): with a place (?1), those at earlier
    places, joined (asking from above its share) or narrowed (from below it) by the waiters
    of the ``under`` instances below their share (?2...); without one (a new request), the
    whole queue or those waiters only."""
    marks = ",".join(f"?{i + 2}" for i in range(under))
    parts = []
    if by_place:
        parts.append("ticket < ?1")
    if under:
        parts.append(f"instance_id IN ({marks})")
    # from above its share: earlier places or any instance below; a new one: everyone
    # from below its share: earlier places of instances below only
    where = (" OR ".join(parts) if by_place else "") if over else " AND ".join(parts)
    return ("SELECT ticket, instance_id, rates, slots, seen_ns, wait FROM waiters"
            + (f" WHERE {where}" if where else ""))


@functools.lru_cache(maxsize=1024)
def _rates(text: str) -> tuple[tuple[str, int], ...]:
    """A waiter's rates as stored (cached: a long queue repeats a few request shapes, and
    decoding every waiter on every decision made a queue of 180 cost milliseconds)."""
    return tuple((k, n) for k, n in json.loads(text))


@functools.lru_cache(maxsize=1024)
def _slots(text: str) -> tuple[str, ...]:
    return tuple(json.loads(text))


def _load(conn: sqlite3.Connection, me: PermitRequest, now: int, ttl_ns: int,
          ticket: int | None) -> tuple[list[Need], Capacity, int | None]:
    """Everything one decision needs: the waiters that may come before this request in the
    queue (the others cannot change its answer: a queue of 180 cost a millisecond per
    decision when all were read), bucket state, slot limits and use, and the instances'
    reservations and priorities; and the place in the queue of wait ``ticket`` (None when
    it is not queued)."""
    keys = [k for k, _ in me.rates]
    tats: dict[str, int] = {}
    specs: dict[str, RateSpec] = {}
    limit: dict[str, int] = {}
    used: dict[str, int] = {}
    held: dict[str, int] = {}
    instances: list[tuple[str, int, int]] = []
    place = None
    queued = 0
    for kind, a, b, c, d, e, f, g in conn.execute(_state_sql(len(keys)), (ticket, *keys)):
        if kind == 0:
            place = a
        elif kind == 5:
            queued = a
        elif kind == 1:
            specs[a], tats[a] = adaptive.effective(RateSpec(b, c), d, e, f,
                                                   adaptive.slow_starts(a, me.reports, g))
        elif kind == 2:
            limit[a] = b
        elif kind == 3:
            held[a] = held.get(a, 0) + 1
            for group in permit_groups(b, c):
                used[group] = used.get(group, 0) + 1
        else:
            instances.append((a, b, c))
    holders: dict[str, Holder] = {}
    if queued or any(i[1] for i in instances):  # shares and reservations matter
        total = limit.get(GLOBAL_GROUP, 1 << 30)
        weight = sum(i[2] for i in instances)  # once, not once per instance
        holders = {i[0]: Holder(held.get(i[0], 0), i[1], share_of_weight(total, i[2], weight))
                   for i in instances}
    waiters: list[Need] = []
    if queued > (place is not None):  # someone besides this wait queues
        mine = holders.get(me.instance_id)
        over = mine is None or mine.used >= mine.share
        under = [i for i, h in holders.items() if h.used < h.share]
        stale = False
        sql = _ahead_sql(place is not None, len(under), over)
        params = () if "?" not in sql else (place, *under)
        for a, b, c, d, e, _wait in conn.execute(sql, params):
            if e < now - ttl_ns:
                stale = True  # its owner stopped asking: it has left the queue
            else:
                waiters.append(Need(b, _rates(c), _slots(d), a))
        if stale:
            conn.execute("DELETE FROM waiters WHERE seen_ns < ? AND wait IS NOT ?",
                         (now - ttl_ns, ticket))
    for key in {k for w in waiters for k, _ in w.rates} - specs.keys():
        row = conn.execute("SELECT per_minute, burst, tat, lrate, cooldown_until, probed "
                           "FROM buckets WHERE key=?", (key,)).fetchone()
        if row is not None:
            specs[key], tats[key] = adaptive.effective(
                RateSpec(row[0], row[1]), row[2], row[3], row[4],
                adaptive.slow_starts(key, me.reports, row[5]))
    missing = [k for k in keys if k not in specs]
    if missing:
        raise PermitRequestError(f"no limit published for bucket {missing[0]}")
    if not any(i[0] == me.instance_id for i in instances):
        raise NotRegisteredError(
            f"instance {me.instance_id} is not registered (it may have been judged dead)")
    return waiters, Capacity(tats, specs, used, limit, holders), place


_TAKE = (
    "UPDATE buckets SET tat=?1, "
    "prev=CASE WHEN win=?2 THEN prev WHEN win=?2-1 THEN cur ELSE 0 END, "
    "cur=CASE WHEN win=?2 THEN cur+?3 ELSE ?3 END, win=?2 "
    "WHERE key=?4 RETURNING cur, prev, per_minute"
)


def _earlier(conn: sqlite3.Connection, req: PermitRequest, permit_id: int) -> Granted | None:
    """The permit already granted to wait ``permit_id`` (its ticket), if any: an attempt
    sent again gets the same grant (without the minute counts)."""
    row = conn.execute("SELECT instance_id, granted_ns FROM permits WHERE id=?",
                       (permit_id,)).fetchone()
    if row is None:
        return None
    if row[0] != req.instance_id:
        raise PermitRequestError(f"ticket {permit_id} names another instance's permit; "
                                 "a wait needs a ticket of its own (new_ticket())")
    return Granted(permit_id, int(row[1]), 0, 0)


def _grant(conn: sqlite3.Connection, now: int, req: PermitRequest, tats: Sequence[int],
           specs: Sequence[RateSpec], ticket: int | None, place: int | None) -> Granted:
    """Take the tokens (``tats``/``specs`` follow ``req.rates``) and the slot: the permit's id
    is the wait's ticket, so a wait is granted once (an attempt sent again gets the earlier
    grant). ``place``: the wait's place in the queue, left now."""
    win = now // NS_PER_MINUTE
    usage = lim = 0
    for i, (key, cost) in enumerate(req.rates):
        tat = limiter.consume(tats[i], now, specs[i], cost)
        cur, prev, per_minute = conn.execute(_TAKE, (tat, win, cost, key)).fetchone()
        if i == 0:
            usage, lim = windowed(win, cur, prev, now), per_minute
    # random: a stale release never hits a later permit
    permit_id = new_permit_id() if ticket is None else ticket
    conn.execute(
        "INSERT INTO permits(id, instance_id, provider, model, tokens, granted_ns) "
        "VALUES(?,?,?,?,?,?)",
        (permit_id, req.instance_id, req.provider, req.model, req.tokens, now))
    if place is not None:
        conn.execute("DELETE FROM waiters WHERE ticket=?", (place,))
    return Granted(permit_id, now, usage, lim)


@functools.cache
def _quick_sql(keys: int, slots: tuple[str, ...]) -> str:
    """One row: queue length, instances with reservations, whether the caller (?1) is
    registered, then (used, limit) per slot group and (per_minute, burst, tat) per bucket.
    Parameters: ?1 instance, ?2 provider, ?3 model, then the group keys, then bucket keys."""
    parts = ["(SELECT COUNT(*) FROM waiters)",
             "(SELECT COUNT(*) FROM instances WHERE reserved > 0)",
             "(SELECT COUNT(*) FROM instances WHERE id=?1)"]
    for i, group in enumerate(slots):
        kind = parse_key(group).kind
        where = ("" if kind == GLOBAL_GROUP else " WHERE provider=?2" if kind == PROVIDER_SLOTS
                 else " WHERE provider=?2 AND model=?3")
        parts += [f"(SELECT COUNT(*) FROM permits{where})",
                  f"(SELECT lim FROM groups WHERE key=?{4 + i})"]
    tables = []
    for i in range(keys):
        parts += [f"b{i}.per_minute", f"b{i}.burst", f"b{i}.tat", f"b{i}.lrate",
                  f"b{i}.cooldown_until", f"b{i}.probed"]
        tables.append(f"LEFT JOIN buckets b{i} ON b{i}.key=?{4 + len(slots) + i}")
    return f"SELECT {', '.join(parts)} FROM (SELECT 1) {' '.join(tables)}"


def _quick(conn: sqlite3.Connection, now: int, req: PermitRequest) -> Granted | None:
    """The uncontended case (nobody queued, nothing reserved) decided from one row; None when
    it does not apply or does not fit (the full arbiter then decides)."""
    row = conn.execute(_quick_sql(len(req.rates), req.slots),
                       (req.instance_id, req.provider, req.model, *req.slots,
                        *(key for key, _ in req.rates))).fetchone()
    if row[0] or row[1] or not row[2]:
        return None
    n = len(req.slots)
    groups = [(row[3 + 2 * i], row[4 + 2 * i]) for i in range(n)]
    base = 3 + 2 * n
    tats, specs, rates = [], [], []
    for i, (key, cost) in enumerate(req.rates):
        per_minute, burst, tat, lrate, cooldown, probed = row[base + 6 * i: base + 6 * i + 6]
        if per_minute is None:
            return None  # the full path reports it
        spec, tat = adaptive.effective(RateSpec(per_minute, burst), tat, lrate, cooldown,
                                       adaptive.slow_starts(key, req.reports, probed))
        if cost > spec.burst:
            return None
        tats.append(tat)
        specs.append(spec)
        rates.append((tat, spec, cost))
    if not arbiter.fits_now(rates, groups, now):
        return None
    return _grant(conn, now, req, tats, specs, None, None)


def acquire(conn: sqlite3.Connection, now: int, req: PermitRequest, ticket: int | None,
            ttl_ns: int, queue: bool = True, release_first: Sequence[int] = ()
            ) -> Granted | Waiting | None:
    if release_first:
        release(conn, req.instance_id, release_first)
    if ticket is None:
        quick = _quick(conn, now, req)
        if quick is not None:
            return quick
    else:
        earlier = _earlier(conn, req, ticket)  # this wait was granted already: sent again
        if earlier is not None:
            return earlier
    # place None: not queued yet, or our place was given up (we were away too long): queue
    # at the back
    waiters, cap, place = _load(conn, req, now, ttl_ns, ticket)
    me = Need(req.instance_id, req.rates, req.slots, place)
    why = arbiter.impossible(me, cap.specs)
    if why is not None:
        raise PermitRequestError(why)
    verdict = arbiter.arbitrate(me, waiters, cap, now)
    if verdict.grant:
        return _grant(conn, now, req, [cap.tats[k] for k, _ in req.rates],
                      [cap.specs[k] for k, _ in req.rates], ticket, place)
    if not queue:
        return None
    if ticket is None:
        ticket = new_ticket()
    if place is None:
        place = conn.execute(
            "INSERT INTO waiters(instance_id, rates, slots, seen_ns, wait) VALUES(?,?,?,?,?)",
            (req.instance_id, json.dumps(req.rates), json.dumps(req.slots), now, ticket)
        ).lastrowid
    else:
        conn.execute("UPDATE waiters SET seen_ns=? WHERE ticket=?", (now, place))
    return Waiting(ticket, verdict.ready_at, verdict.slot_blocked, verdict.ahead,
                   verdict.reason, now, place or 0)


def adjust_tokens(conn: sqlite3.Connection, now: int, changes: Sequence[tuple[str, int]]) -> None:
    for key, delta in changes:
        row = conn.execute("SELECT per_minute, burst, tat FROM buckets WHERE key=?", (key,)
                           ).fetchone()
        if row is None or delta == 0:
            continue
        spec = RateSpec(row[0], row[1])
        tat = (limiter.refund(row[2], now, spec, -delta) if delta < 0
               else limiter.consume(row[2], now, spec, delta))
        conn.execute("UPDATE buckets SET tat=?, cur=MAX(0, cur+?) WHERE key=?",
                     (tat, delta, key))


def release(conn: sqlite3.Connection, instance_id: str, permit_ids: Sequence[int]) -> int:
    sql = "DELETE FROM permits WHERE id=? AND instance_id=?"
    return sum(conn.execute(sql, (i, instance_id)).rowcount for i in permit_ids)
