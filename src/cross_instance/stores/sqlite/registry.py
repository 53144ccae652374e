"""Instance registry operations, each run inside one write transaction (see ``db.Database``)."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Mapping
from typing import Any

from cross_instance.core.keys import is_bucket
from cross_instance.core.liveness import Domain
from cross_instance.core.records import InstanceRecord, Workload
from cross_instance.errors import DuplicateInstanceError
from cross_instance.hostfacts.identity import verdict

#: The event log is bounded: every ``EVENTS_TRIM_EVERY``-th event deletes those more than
#: ``EVENTS_KEPT`` older, so it holds at most ``EVENTS_KEPT + EVENTS_TRIM_EVERY`` rows (ids only
#: grow: AUTOINCREMENT never reuses one). ``redis/lua/registry.lua`` keeps the same bound.
EVENTS_KEPT = 10_000
EVENTS_TRIM_EVERY = 256

_COLUMNS = (
    "id, host, boot_id, pid_ns, pid, start_ticks, session_id, cwd, started_wall_ms, started_ns, "
    "heartbeat_ns, heartbeat_wall_ms, lease_ns, priority, reserved, pending, avg_latency_ms, "
    "active_orch"
)


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def row_to_record(row: tuple[Any, ...], models: tuple[tuple[str, str, int], ...] = (),
                  slots: int = 0) -> InstanceRecord:
    (iid, host, boot, pidns, pid, ticks, session, cwd, started_wall, started_ns, hb_ns, hb_wall,
     lease, priority, reserved, pending, latency, orch) = row
    return InstanceRecord(
        instance_id=str(iid), domain=Domain(str(host), str(boot), str(pidns)), pid=int(pid),
        start_ticks=int(ticks), session_id=str(session), cwd=str(cwd),
        started_wall_ms=int(started_wall), lease_ns=int(lease), priority=int(priority),
        reserved=int(reserved), started_ns=int(started_ns), heartbeat_ns=int(hb_ns),
        heartbeat_wall_ms=int(hb_wall),
        workload=Workload(int(pending), None if latency is None else float(latency),
                          int(orch)),
        active_models=models, slots_in_use=slots,
    )


def load(conn: sqlite3.Connection, instance_id: str | None = None) -> list[InstanceRecord]:
    models: dict[str, list[tuple[str, str, int]]] = {}
    for iid, provider, model, count in conn.execute(
        "SELECT instance_id, provider, model, count FROM active_models ORDER BY since_wall_ms"
    ):
        models.setdefault(iid, []).append((provider, model, count))
    if instance_id is None:
        rows = conn.execute(f"SELECT {_COLUMNS} FROM instances ORDER BY started_ns, id").fetchall()
    else:
        rows = conn.execute(f"SELECT {_COLUMNS} FROM instances WHERE id=?", (instance_id,)
                            ).fetchall()
    held = dict(conn.execute("SELECT instance_id, COUNT(*) FROM permits GROUP BY instance_id"))
    return [row_to_record(r, tuple(models.get(str(r[0]), ())), held.get(r[0], 0)) for r in rows]


def add_event(conn: sqlite3.Connection, kind: str, instance_id: str | None,
              data: dict[str, object]) -> None:
    cur = conn.execute(
        "INSERT INTO events(wall_ms, kind, instance_id, data) VALUES(?,?,?,?)",
        (wall_ms(), kind, instance_id, json.dumps(data, sort_keys=True)),
    )
    if cur.lastrowid and cur.lastrowid % EVENTS_TRIM_EVERY == 0:
        conn.execute("DELETE FROM events WHERE id <= ?", (cur.lastrowid - EVENTS_KEPT,))


def recompute_limits(conn: sqlite3.Connection, keys: Iterable[str]) -> None:
    """Effective limit of each key = the strictest among the instances that published one."""
    for key in keys:
        a, b = conn.execute("SELECT MIN(a), MIN(b) FROM limits WHERE key=?", (key,)).fetchone()
        if a is None:
            continue  # nobody left: keep the last effective limit (and the bucket's history)
        if is_bucket(key):
            conn.execute("UPDATE buckets SET per_minute=?, burst=? WHERE key=?", (a, b, key))
        else:
            conn.execute("UPDATE groups SET lim=? WHERE key=?", (a, key))


def remove(conn: sqlite3.Connection, instance_id: str, kind: str, reason: str) -> bool:
    """Delete an instance and everything it held; True if it existed."""
    conn.execute("DELETE FROM permits WHERE instance_id=?", (instance_id,))
    conn.execute("DELETE FROM waiters WHERE instance_id=?", (instance_id,))
    conn.execute("DELETE FROM active_models WHERE instance_id=?", (instance_id,))
    conn.execute("DELETE FROM usage WHERE instance_id=?", (instance_id,))
    for resource, token in conn.execute("SELECT resource, token FROM locks WHERE holder=?",
                                        (instance_id,)).fetchall():
        add_event(conn, "lock_lost", instance_id, {"resource": resource, "token": token,
                                                   "reason": f"holder {reason}"})
    conn.execute("UPDATE locks SET holder=NULL, lock_id=NULL, wait=NULL WHERE holder=?",
                 (instance_id,))
    conn.execute("DELETE FROM lock_waiters WHERE instance_id=?", (instance_id,))
    from cross_instance.stores.sqlite import workqueue  # it needs this module's events
    workqueue.hand_over(conn, instance_id, reason)
    keys = [k for (k,) in conn.execute("SELECT key FROM limits WHERE instance_id=?",
                                       (instance_id,))]
    conn.execute("DELETE FROM limits WHERE instance_id=?", (instance_id,))
    recompute_limits(conn, keys)
    gone = conn.execute("DELETE FROM instances WHERE id=?", (instance_id,)).rowcount > 0
    if gone:
        add_event(conn, kind, instance_id, {"reason": reason})
    return gone


def register(conn: sqlite3.Connection, now: int, rec: InstanceRecord) -> InstanceRecord:
    for existing in load(conn, rec.instance_id):
        v = verdict(existing, now)
        if not v.is_dead and not (existing.pid == rec.pid and existing.domain == rec.domain
                                  and existing.start_ticks == rec.start_ticks):
            raise DuplicateInstanceError(rec.instance_id, existing.pid, existing.domain.host)
        remove(conn, rec.instance_id, "instance_replaced", f"replaced ({v.value})")
    wall = wall_ms()
    conn.execute(
        f"INSERT INTO instances({_COLUMNS}) VALUES({','.join('?' * 18)})",
        (rec.instance_id, rec.domain.host, rec.domain.boot_id, rec.domain.pid_ns, rec.pid,
         rec.start_ticks, rec.session_id, rec.cwd, rec.started_wall_ms, now, now, wall,
         rec.lease_ns, rec.priority, rec.reserved, rec.workload.pending_tasks,
         rec.workload.avg_latency_ms, rec.workload.active_orchestrations),
    )
    add_event(conn, "instance_up", rec.instance_id, {"pid": rec.pid, "host": rec.domain.host})
    return load(conn, rec.instance_id)[0]


def heartbeat(conn: sqlite3.Connection, now: int, instance_id: str, work: Workload | None,
              usage: Mapping[str, int] | None = None) -> bool:
    if work is None:
        cur = conn.execute("UPDATE instances SET heartbeat_ns=?, heartbeat_wall_ms=? WHERE id=?",
                           (now, wall_ms(), instance_id))
    else:
        cur = conn.execute(
            "UPDATE instances SET heartbeat_ns=?, heartbeat_wall_ms=?, pending=?, "
            "avg_latency_ms=?, active_orch=? WHERE id=?",
            (now, wall_ms(), work.pending_tasks, work.avg_latency_ms, work.active_orchestrations,
             instance_id))
    if cur.rowcount and usage:
        win = now // 60_000_000_000
        conn.executemany(
            "INSERT OR REPLACE INTO usage(key, instance_id, win, cur, prev) VALUES(?,?,?,?,0)",
            [(key, instance_id, win, n) for key, n in usage.items()])
    return cur.rowcount > 0


def reap(conn: sqlite3.Connection, now: int) -> list[str]:
    """Remove the dead instances (their tasks go to the shared pool), and queue again the
    tasks whose run's lease ran out."""
    from cross_instance.stores.sqlite import workqueue  # it needs this module's events
    dead = [r for r in load(conn) if verdict(r, now).is_dead]
    for r in dead:
        age_ms = (now - r.heartbeat_ns) // 1_000_000
        remove(conn, r.instance_id, "instance_down",
               f"dead (pid {r.pid}, heartbeat {age_ms} ms ago)")
    workqueue.requeue_expired(conn, now)
    return [r.instance_id for r in dead]


def set_active_model(conn: sqlite3.Connection, instance_id: str, provider: str, model: str,
                     delta: int) -> None:
    if delta >= 0:
        conn.execute(
            "INSERT INTO active_models(instance_id, provider, model, count, since_wall_ms) "
            "VALUES(?,?,?,?,?) ON CONFLICT(instance_id, provider, model) "
            "DO UPDATE SET count=count+excluded.count",
            (instance_id, provider, model, delta, wall_ms()))
    else:
        conn.execute(
            "UPDATE active_models SET count=MAX(0, count+?) WHERE instance_id=? AND provider=? "
            "AND model=?", (delta, instance_id, provider, model))
    conn.execute("DELETE FROM active_models WHERE count<=0 AND instance_id=?", (instance_id,))
