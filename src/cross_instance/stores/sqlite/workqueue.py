"""The shared work queue in the SQLite store: each function runs inside one write transaction
(``db.Database``); the rules are ``core.workqueue``'s.

Tasks are rows of ``tasks``; the partial indexes make every step a lookup, whatever the queue
holds: the next queued task of an owner (``tasks_queued``), the runs (``tasks_leases``, by
lease end: the expired ones first), the latest finished (``tasks_finished``). ``task_owners``
keeps per instance what it holds and did, so the busiest instance and the stats are read
without counting tasks."""

from __future__ import annotations

import sqlite3
from typing import Any

from cross_instance.core import workqueue as rules
from cross_instance.core.workqueue import ORPHANED, OwnerCounts, StealingStats, Task
from cross_instance.errors import NotRegisteredError
from cross_instance.stores.base import FINISHED_KEPT
from cross_instance.stores.sqlite import registry

_COLUMNS = ("id, owner, tool, priority, payload, enqueued_wall_ms, seq, attempts, state, "
            "fence, lease_ns, result, error, max_attempts, enqueued_ns")
_NEXT = (f"SELECT {_COLUMNS} FROM tasks WHERE owner=? AND state='queued' "
         "ORDER BY priority DESC, seq LIMIT 1")
_TRIM_EVERY = 100  # finished tasks between two trims of the kept ones
EXPIRED_PER_STEP = 50  # lost leases requeued by one take or steal (reap takes every one)


def _registered(conn: sqlite3.Connection, instance_id: str) -> None:
    """Only registered instances hold tasks."""
    if conn.execute("SELECT 1 FROM instances WHERE id=?", (instance_id,)).fetchone() is None:
        raise NotRegisteredError.instance(instance_id)


def _task(row: tuple[Any, ...]) -> Task:
    return Task(task_id=row[0], owner=row[1], tool_name=row[2], priority=int(row[3]),
                payload=row[4], enqueued_wall_ms=int(row[5]), seq=int(row[6]),
                attempts=int(row[7]), state=row[8], fence=int(row[9]),
                lease_until_ns=None if row[10] is None else int(row[10]), result=row[11],
                error=row[12], max_attempts=int(row[13]), enqueued_ns=int(row[14]))


def load(conn: sqlite3.Connection, task_id: str) -> Task | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM tasks WHERE id=?", (task_id,)).fetchone()
    return None if row is None else _task(row)


def _count(conn: sqlite3.Connection, owner: str, **deltas: int | float) -> None:
    """Add ``deltas`` to the owner's counters (a row is made on first use)."""
    names = list(deltas)
    conn.execute(
        f"INSERT INTO task_owners(id, {', '.join(names)}) VALUES(?{', ?' * len(names)}) "
        f"ON CONFLICT(id) DO UPDATE SET "
        + ", ".join(f"{n}={n}+excluded.{n}" for n in names),
        (owner, *deltas.values()))


def _save(conn: sqlite3.Connection, task: Task, finished: bool = False) -> None:
    conn.execute(
        "UPDATE tasks SET owner=?, attempts=?, state=?, fence=?, lease_ns=?, result=?, "
        "error=?, finished=? WHERE id=?",
        (task.owner, task.attempts, task.state, task.fence, task.lease_until_ns, task.result,
         task.error, registry.wall_ms() if finished else None, task.task_id))
    if finished and task.seq % _TRIM_EVERY == 0:
        _trim(conn)


def _trim(conn: sqlite3.Connection) -> None:
    """Forget the done (and the failed) tasks beyond the latest ``FINISHED_KEPT`` of each
    (run every ``_TRIM_EVERY`` tasks settled, on average)."""
    for state in ("done", "failed"):
        edge = conn.execute("SELECT finished, seq FROM tasks WHERE state=? AND finished IS "
                            "NOT NULL ORDER BY finished DESC, seq DESC LIMIT 1 OFFSET ?",
                            (state, FINISHED_KEPT)).fetchone()
        if edge is not None:
            conn.execute("DELETE FROM tasks WHERE state=? AND finished IS NOT NULL AND "
                         "(finished<? OR (finished=? AND seq<=?))",
                         (state, edge[0], edge[0], edge[1]))


def _lost(conn: sqlite3.Connection, task: Task, owner: str | None, reason: str) -> None:
    """A run that lost its lease (``reason``): its task queued again or failed."""
    after = rules.after_lost_lease(task, owner)
    _save(conn, after, finished=after.state == "failed")
    _count(conn, task.owner, running=-1)
    _count(conn, after.owner, **({"failed": 1} if after.state == "failed" else {"queued": 1}))
    registry.add_event(conn, "task_lost", task.owner, {
        "taskId": task.task_id, "toolName": task.tool_name, "attempts": after.attempts,
        "state": after.state, "owner": after.owner, "reason": reason})


def requeue_expired(conn: sqlite3.Connection, now: int, limit: int | None = None) -> int:
    """Queue again (or fail) the runs whose lease ran out; how many."""
    rows = conn.execute(f"SELECT {_COLUMNS} FROM tasks WHERE state='running' AND lease_ns<=? "
                        "ORDER BY lease_ns LIMIT ?", (now, -1 if limit is None else limit)
                        ).fetchall()
    for row in rows:
        _lost(conn, _task(row), None, "lease expired")
    return len(rows)


def hand_over(conn: sqlite3.Connection, instance_id: str, reason: str) -> None:
    """The tasks of an instance that is gone go to the shared pool: queued ones as they are,
    running ones as lost runs."""
    for row in conn.execute(f"SELECT {_COLUMNS} FROM tasks WHERE owner=? AND state='running'",
                            (instance_id,)).fetchall():
        _lost(conn, _task(row), ORPHANED, f"instance {reason}")
    moved = conn.execute("UPDATE tasks SET owner=? WHERE owner=? AND state='queued'",
                         (ORPHANED, instance_id)).rowcount
    if moved:
        _count(conn, instance_id, queued=-moved)
        _count(conn, ORPHANED, queued=moved)


def put(conn: sqlite3.Connection, now: int, owner: str, task_id: str, tool_name: str,
        priority: int, payload: str, max_attempts: int) -> Task:
    _registered(conn, owner)
    found = load(conn, task_id)
    if found is not None:
        return found
    wall = registry.wall_ms()
    seq = conn.execute(
        "INSERT INTO tasks(id, owner, tool, priority, payload, enqueued_wall_ms, enqueued_ns, "
        "attempts, max_attempts, state, fence) VALUES(?,?,?,?,?,?,?,0,?,'queued',0)",
        (task_id, owner, tool_name, priority, payload, wall, now, max_attempts)).lastrowid
    _count(conn, owner, queued=1)
    return Task(task_id, owner, tool_name, priority, payload, wall, int(seq or 0),
                max_attempts=max_attempts, enqueued_ns=now)


def _next(conn: sqlite3.Connection, owner: str) -> Task | None:
    row = conn.execute(_NEXT, (owner,)).fetchone()
    return None if row is None else _task(row)


def _start(conn: sqlite3.Connection, task: Task, runner: str, until: int) -> Task:
    run = rules.start_run(task, runner, until)
    _save(conn, run)
    if task.owner == runner:
        _count(conn, runner, queued=-1, running=1)
    else:
        _count(conn, task.owner, queued=-1)
        _count(conn, runner, running=1)
    return run


def take(conn: sqlite3.Connection, now: int, instance_id: str, lease_ns: int) -> Task | None:
    _registered(conn, instance_id)
    requeue_expired(conn, now, EXPIRED_PER_STEP)
    found = [t for t in (_next(conn, instance_id), _next(conn, ORPHANED)) if t is not None]
    if not found:
        return None
    return _start(conn, min(found, key=rules.run_order), instance_id, now + lease_ns)


def steal(conn: sqlite3.Connection, now: int, thief: str, lease_ns: int,
          min_queued: int) -> Task | None:
    _registered(conn, thief)
    requeue_expired(conn, now, EXPIRED_PER_STEP)
    row = conn.execute(
        "SELECT id FROM task_owners WHERE queued>? AND id<>? AND id<>? "
        "ORDER BY queued DESC, stolen_from_ns, id LIMIT 1",
        (min_queued, thief, ORPHANED)).fetchone()
    task = None if row is None else _next(conn, row[0])
    if task is None:
        _count(conn, thief, attempts=1, misses=1)
        return None
    run = _start(conn, task, thief, now + lease_ns)
    conn.execute("UPDATE task_owners SET stolen_from_ns=? WHERE id=?", (now, task.owner))
    _count(conn, thief, attempts=1, steals=1,
           waited_ms=max(now - task.enqueued_ns, 0) / 1e6)
    return run


def renew(conn: sqlite3.Connection, now: int, task_id: str, fence: int,
          lease_ns: int) -> Task | None:
    task = load(conn, task_id)
    if task is None or not rules.may_settle(task, fence, now):
        return None
    conn.execute("UPDATE tasks SET lease_ns=? WHERE id=?", (now + lease_ns, task_id))
    return load(conn, task_id)


def settle(conn: sqlite3.Connection, now: int, task_id: str, fence: int,
           outcome: rules.Outcome, text: str) -> Task | None:
    task = load(conn, task_id)
    after = None if task is None else rules.settle(task, fence, outcome, text, now)
    if task is None or after is None or after is task:
        return after
    _save(conn, after, finished=after.state in ("done", "failed"))
    _count(conn, task.owner, running=-1, **{
        "done": {"done": 1}, "failed": {"failed": 1}, "queued": {"queued": 1}}[after.state])
    return after


def listed(conn: sqlite3.Connection, owner: str | None, state: rules.TaskState | None,
           limit: int) -> list[Task]:
    out: list[Task] = []
    orders = {"queued": "priority DESC, seq", "running": "lease_ns, seq",
              "done": "finished DESC, seq DESC", "failed": "finished DESC, seq DESC"}
    for each in rules.STATES if state is None else (state,):
        where = "state=?" + (" AND finished IS NOT NULL" if each in ("done", "failed")
                             else " AND lease_ns IS NOT NULL" if each == "running" else "")
        args: list[str] = [each]
        if owner is not None:
            where, args = where + " AND owner=?", [*args, owner]
        rows = conn.execute(f"SELECT {_COLUMNS} FROM tasks WHERE {where} "
                            f"ORDER BY {orders[each]} LIMIT ?", (*args, limit - len(out)))
        out += map(_task, rows)
        if len(out) >= limit:
            break
    return out


def counts(conn: sqlite3.Connection) -> list[OwnerCounts]:
    return [OwnerCounts(r[0], int(r[1]), int(r[2]), int(r[3]), int(r[4]),
                        StealingStats(int(r[5]), int(r[6]), int(r[7]), float(r[8])),
                        int(r[9]))
            for r in conn.execute(
                "SELECT id, queued, running, done, failed, attempts, steals, misses, "
                "waited_ms, stolen_from_ns FROM task_owners ORDER BY id")]


def reset_stats(conn: sqlite3.Connection, instance_id: str | None) -> None:
    zero = "UPDATE task_owners SET attempts=0, steals=0, misses=0, waited_ms=0"
    if instance_id is None:
        conn.execute(zero)
    else:
        conn.execute(zero + " WHERE id=?", (instance_id,))
