"""Workflow ownership and fenced workflow state in the SQLite store: each function runs inside
one write transaction (``db.Database``); decisions are ``core.ownership``'s."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from cross_instance.core.liveness import Domain, Verdict
from cross_instance.core.ownership import Action, Claim, Force, Owner, WorkflowRecord, decide
from cross_instance.errors import NotRegisteredError, StaleEpochError
from cross_instance.hostfacts.identity import verdict
from cross_instance.stores.sqlite import registry

_COLUMNS = ("id, owner, pid, host, boot_id, pid_ns, start_ticks, epoch, claimed_wall_ms, "
            "updated_wall_ms")
EVENT_OF = {Action.CLAIMED: "workflow_claimed", Action.AUTO_CLAIMED: "workflow_auto_claimed",
            Action.FORCE_CLAIMED: "workflow_force_claimed"}


def _record(row: tuple[Any, ...]) -> WorkflowRecord:
    wid, owner, pid, host, boot, pidns, ticks, epoch, claimed, updated = row
    who = None if owner is None else Owner(owner, int(pid), Domain(host, boot, pidns), int(ticks))
    return WorkflowRecord(wid, who, int(epoch), int(claimed), int(updated))


def load(conn: sqlite3.Connection, workflow_id: str | None = None) -> list[WorkflowRecord]:
    if workflow_id is None:
        rows = conn.execute(f"SELECT {_COLUMNS} FROM workflows ORDER BY id").fetchall()
    else:
        rows = conn.execute(f"SELECT {_COLUMNS} FROM workflows WHERE id=?",
                            (workflow_id,)).fetchall()
    return [_record(r) for r in rows]


def floor(conn: sqlite3.Connection) -> int:
    """Epochs and lock tokens of this database start above it (0 for the first database of a
    state directory; see ``files.create``)."""
    row = conn.execute("SELECT value FROM meta WHERE key='floor'").fetchone()
    return int(row[0]) if row else 0


def owner_of(conn: sqlite3.Connection, instance_id: str) -> Owner:
    """The caller as an owner: its registered process. Unregistered callers cannot own."""
    found = registry.load(conn, instance_id)
    if not found:
        raise NotRegisteredError.instance(instance_id)
    return Owner.of(found[0])


def owner_state(conn: sqlite3.Connection, owner: Owner, now: int) -> tuple[Verdict, bool]:
    """Liveness of the owner *process*, and whether the registry still holds that very
    process: dead (and not held) when its instance is gone or is another process now;
    otherwise the registry's verdict (lease, and the pid on this host)."""
    found = registry.load(conn, owner.instance_id)
    if not found or not owner.same_process(Owner.of(found[0])):
        return Verdict.DEAD, False
    return verdict(found[0], now), True


def claim(conn: sqlite3.Connection, now: int, workflow_id: str, instance_id: str, take: bool,
          auto_claim: bool, force: Force) -> Claim:
    """Apply seed 002's flow. Taking over from a dead owner whose instance record is still
    there also removes that instance (as the reaper would), so its next heartbeat tells it."""
    caller = owner_of(conn, instance_id)
    found = load(conn, workflow_id)
    before = found[0] if found else None
    seen, registered = None, False
    if before is not None and before.owner is not None and not before.owner.same_process(caller):
        seen, registered = owner_state(conn, before.owner, now)
    # A workflow this database never saw starts at the floor, as if released there.
    start = before or WorkflowRecord(workflow_id, None, floor(conn), 0, 0)
    decision = decide(start, caller, seen, take, auto_claim, force)
    if not decision.action.moves:
        return Claim(decision, before, before)
    previous = before.owner if before is not None else None
    if seen is Verdict.DEAD and registered and previous is not None:
        registry.remove(conn, previous.instance_id, "instance_down",
                        f"dead (found by a claim of workflow {workflow_id})")
    wall = registry.wall_ms()
    d = caller.domain
    conn.execute(
        f"INSERT INTO workflows({_COLUMNS}) VALUES(?,?,?,?,?,?,?,?,?,?) ON CONFLICT(id) DO "
        "UPDATE SET owner=excluded.owner, pid=excluded.pid, host=excluded.host, "
        "boot_id=excluded.boot_id, pid_ns=excluded.pid_ns, start_ticks=excluded.start_ticks, "
        "epoch=excluded.epoch, claimed_wall_ms=excluded.claimed_wall_ms, "
        "updated_wall_ms=excluded.updated_wall_ms",
        (workflow_id, caller.instance_id, caller.pid, d.host, d.boot_id, d.pid_ns,
         caller.start_ticks, decision.epoch, wall, wall))
    registry.add_event(conn, EVENT_OF[decision.action], instance_id, {
        "workflow": workflow_id, "epoch": decision.epoch, "reason": decision.reason,
        "previousOwner": previous.instance_id if previous else None,
        "previousPid": previous.pid if previous else None})
    return Claim(decision, before, load(conn, workflow_id)[0])


def release(conn: sqlite3.Connection, workflow_id: str, instance_id: str,
            epoch: int | None, by: str | None = None) -> bool:
    """Give up ownership; only the owner (and, when given, at ``epoch``) can. The row stays
    with no owner so the epoch keeps counting up."""
    params: tuple[Any, ...] = (registry.wall_ms(), workflow_id, instance_id)
    sql = "UPDATE workflows SET owner=NULL, updated_wall_ms=? WHERE id=? AND owner=?"
    if epoch is not None:
        sql += " AND epoch=?"
        params += (epoch,)
    done = conn.execute(sql, params).rowcount > 0
    if done:
        data: dict[str, object] = {"workflow": workflow_id}
        if by is not None:
            data["by"] = by
        registry.add_event(conn, "workflow_released", instance_id, data)
    return done


def _fence(conn: sqlite3.Connection, workflow_id: str, instance_id: str, epoch: int) -> None:
    row = conn.execute("SELECT owner, epoch FROM workflows WHERE id=?", (workflow_id,)).fetchone()
    current_owner, current_epoch = (row[0], int(row[1])) if row else (None, 0)
    if current_owner != instance_id or current_epoch != epoch:
        raise StaleEpochError(workflow_id, epoch, current_epoch, current_owner)


def write_state(conn: sqlite3.Connection, workflow_id: str, instance_id: str, epoch: int,
                values: dict[str, Any]) -> None:
    """Store ``values`` (JSON) under the workflow if ``epoch`` is still the owner's: the check
    and the write are one step, so a superseded owner can never write."""
    _fence(conn, workflow_id, instance_id, epoch)
    wall = registry.wall_ms()
    conn.executemany(
        "INSERT OR REPLACE INTO workflow_state(workflow_id, key, value, epoch, updated_wall_ms) "
        "VALUES(?,?,?,?,?)",
        [(workflow_id, k, json.dumps(v), epoch, wall) for k, v in values.items()])


def validate(conn: sqlite3.Connection, workflow_id: str, instance_id: str, epoch: int) -> None:
    _fence(conn, workflow_id, instance_id, epoch)


def read_state(conn: sqlite3.Connection, workflow_id: str) -> dict[str, Any]:
    return {k: json.loads(v) for k, v in conn.execute(
        "SELECT key, value FROM workflow_state WHERE workflow_id=? ORDER BY key",
        (workflow_id,))}
