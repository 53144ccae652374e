"""The embedded SQLite store: one host, no daemon, exact shared limits.

State lives in ``<state dir>/coordinator.sqlite3``; time is the host clock
(``hostinfo.boottime_ns``: ``CLOCK_BOOTTIME`` on Linux, ``CLOCK_MONOTONIC`` on macOS). See
``db`` for the transaction discipline and ``stores.base.Store`` for what each operation promises.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from cross_instance.core.keys import groups_used
from cross_instance.core.limiter import RateSpec
from cross_instance.core.limits import AdaptiveSettings
from cross_instance.core.locking import LockRecord, LockWaiting
from cross_instance.core.ownership import Claim, Force, WorkflowRecord
from cross_instance.core.records import (
    Adjustment,
    BucketState,
    Event,
    Granted,
    GroupState,
    InstanceRecord,
    Outcome,
    PermitRequest,
    PermitState,
    Snapshot,
    Waiting,
    Workload,
)
from cross_instance.core.window import windowed
from cross_instance.core.workqueue import Outcome as TaskOutcome
from cross_instance.core.workqueue import (
    OwnerCounts,
    Task,
    TaskState,
    check_lookup,
    check_new_task,
)
from cross_instance.hostfacts import identity as hostinfo
from cross_instance.stores import base
from cross_instance.stores.sqlite import (
    learning,
    locks,
    ownership,
    permits,
    registry,
    spend,
    workqueue,
)
from cross_instance.stores.sqlite.db import Database


class SqliteStore(base.PermitDecisions):
    """``Store`` on one SQLite file. ``create=False`` opens an existing state only (CLI)."""

    capabilities = frozenset(
        {base.CAP_PERMITS, base.CAP_REGISTRY, base.CAP_EVENTS, base.CAP_PID_LIVENESS,
         base.CAP_WORKFLOWS, base.CAP_LOCKS, base.CAP_QUEUE}
    )

    def __init__(self, directory: str | Path, *, waiter_ttl_ns: int = 10_000_000_000,
                 clock: Callable[[], int] = hostinfo.boottime_ns, create: bool = True,
                 mountinfo: str | None = None, lock_wait_s: float | None = None) -> None:
        self.directory = Path(directory).expanduser().absolute()
        self.db = Database(self.directory, clock=clock, create=create, mountinfo=mountinfo,
                           lock_wait_s=lock_wait_s)
        self.url = f"sqlite:///{self.db.path}"
        self.prefix = ""  # one database per state directory: no key prefix
        self.warnings: list[str] = []  # a damaged or misplaced file is refused, not warned of
        self.queued: int | None = None  # one host: the doorbells say who waits
        self.waiter_ttl_ns = waiter_ttl_ns

    def freed_channel(self, instance_id: str, on_freed: Callable[[int], object],
                      on_subscribed: Callable[[], object]) -> None:
        """None: every process of this store is on this host, and the doorbells reach it."""
        return None

    def now_ns(self) -> int:
        return self.db.clock()

    # --- registry -------------------------------------------------------------------------
    def register_instance(self, record: InstanceRecord) -> InstanceRecord:
        return self.db.write(lambda c, now: registry.register(c, now, record), "register")

    def rejoin_instance(self, record: InstanceRecord, held: Sequence[PermitState]) -> int:
        """Permits are never kept: this store's state is its file, which does not come back
        empty while instances run, so a gone record means this instance was judged dead."""
        self.register_instance(record)
        return 0

    def heartbeat(self, instance_id: str, workload: Workload | None = None,
                  usage: Mapping[str, int] | None = None) -> bool:
        return self.db.write(
            lambda c, now: registry.heartbeat(c, now, instance_id, workload, usage), "heartbeat")

    def unregister_instance(self, instance_id: str) -> None:
        self.db.write(lambda c, now: registry.remove(c, instance_id, "instance_down",
                                                     "unregistered"))

    def list_instances(self) -> list[InstanceRecord]:
        return self.db.read(lambda c, now: registry.load(c))

    def reap(self) -> list[str]:
        return self.db.write(registry.reap, "reap")

    def set_active_model(self, instance_id: str, provider: str, model: str, delta: int) -> None:
        self.db.write(lambda c, now: registry.set_active_model(c, instance_id, provider, model,
                                                               delta))

    def clear_active_models(self, instance_id: str) -> None:
        self.db.write(lambda c, now: c.execute(
            "DELETE FROM active_models WHERE instance_id=?", (instance_id,)))

    # --- limits and permits ---------------------------------------------------------------
    def publish_limits(self, instance_id: str, rates: Mapping[str, RateSpec],
                       groups: Mapping[str, int]) -> None:
        self.db.write(lambda c, now: permits.publish(c, instance_id, rates, groups))

    def _decide(self, request: PermitRequest, ticket: int | None, queue: bool,
                release: Sequence[int]) -> Granted | Waiting | None:
        return self.db.write(lambda c, now: permits.acquire(
            c, now, request, ticket, self.waiter_ttl_ns, queue, release),
            "acquire" if queue else "write")

    def cancel_wait(self, ticket: int) -> None:
        self.db.write(lambda c, now: c.execute("DELETE FROM waiters WHERE wait=?", (ticket,)))

    def release(self, instance_id: str, permit_ids: Sequence[int]) -> int:
        return self.db.write(lambda c, now: permits.release(c, instance_id, permit_ids),
                             "release")

    def adjust_tokens(self, changes: Sequence[tuple[str, int]]) -> None:
        self.db.write(lambda c, now: permits.adjust_tokens(c, now, changes), "adjust_tokens")

    def record_outcome(self, keys: Sequence[str], outcome: Outcome, policy: AdaptiveSettings
                       ) -> list[Adjustment]:
        return self.db.write(lambda c, now: learning.record(c, now, keys, outcome, policy),
                             "record_outcome")

    # --- workflows ------------------------------------------------------------------------
    def claim_workflow(self, workflow_id: str, instance_id: str, *, take: bool = True,
                       auto_claim: bool = True, force: Force = Force.NO) -> Claim:
        return self.db.write(lambda c, now: ownership.claim(
            c, now, workflow_id, instance_id, take, auto_claim, force), "claim")

    def release_workflow(self, workflow_id: str, instance_id: str,
                         epoch: int | None = None, by: str | None = None) -> bool:
        return self.db.write(lambda c, now: ownership.release(c, workflow_id, instance_id,
                                                              epoch, by), "release_workflow")

    def get_workflow(self, workflow_id: str) -> WorkflowRecord | None:
        found = self.db.read(lambda c, now: ownership.load(c, workflow_id))
        return found[0] if found else None

    def list_workflows(self) -> list[WorkflowRecord]:
        return self.db.read(lambda c, now: ownership.load(c))

    def write_workflow_state(self, workflow_id: str, instance_id: str, epoch: int,
                             values: Mapping[str, Any]) -> None:
        self.db.write(lambda c, now: ownership.write_state(c, workflow_id, instance_id, epoch,
                                                           dict(values)), "write_state")

    def validate_epoch(self, workflow_id: str, instance_id: str, epoch: int) -> None:
        self.db.read(lambda c, now: ownership.validate(c, workflow_id, instance_id, epoch))

    def read_workflow_state(self, workflow_id: str) -> dict[str, Any]:
        return self.db.read(lambda c, now: ownership.read_state(c, workflow_id))

    # --- locks ----------------------------------------------------------------------------
    def acquire_lock(self, resource: str, instance_id: str, ttl_ns: int, ticket: int | None,
                     wait: bool) -> LockRecord | LockWaiting | None:
        return self.db.write(lambda c, now: locks.acquire(
            c, now, resource, instance_id, ttl_ns, ticket, wait, self.waiter_ttl_ns),
            "acquire_lock")

    def cancel_lock_wait(self, ticket: int) -> None:
        self.db.write(lambda c, now: locks.cancel_wait(c, ticket))

    def renew_lock(self, resource: str, lock_id: str, ttl_ns: int) -> LockRecord | None:
        return self.db.write(lambda c, now: locks.renew(c, now, resource, lock_id, ttl_ns),
                             "renew_lock")

    def release_lock(self, resource: str, lock_id: str) -> bool:
        return self.db.write(lambda c, now: locks.release(c, resource, lock_id),
                             "release_lock")

    def list_locks(self) -> list[LockRecord]:
        return self.db.read(lambda c, now: locks.held(c))

    def cleanup_expired_locks(self) -> list[LockRecord]:
        return self.db.write(locks.cleanup, "cleanup_locks")

    # --- observation ----------------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        return self.db.read(_snapshot)

    def record_event(self, kind: str, instance_id: str | None, data: Mapping[str, object]) -> None:
        self.db.write(lambda c, now: registry.add_event(c, kind, instance_id, dict(data)))

    def events(self, after_id: int = 0, limit: int = 100) -> list[Event]:
        rows = self.db.read(lambda c, now: c.execute(
            "SELECT id, wall_ms, kind, instance_id, data FROM events WHERE id>? ORDER BY id "
            "LIMIT ?", (after_id, limit)).fetchall())
        return [Event(r[0], r[1], r[2], r[3], json.loads(r[4])) for r in rows]

    def reset_learned(self, keys: Iterable[str] | None = None) -> int:
        wanted = None if keys is None else list(keys)
        forget = ("UPDATE buckets SET lrate=NULL, decreased_at=0, last_429=0, last_increase=0, "
                  "cooldown_until=0, reported_limit=NULL")

        def step(conn: sqlite3.Connection, now: int) -> int:
            if wanted is None:
                return int(conn.execute(forget).rowcount)
            return sum(conn.execute(forget + " WHERE key=?", (k,)).rowcount for k in wanted)

        return self.db.write(step, "reset_learned")

    # --- spend ----------------------------------------------------------------------------
    def add_spend(self, changes: Sequence[tuple[str, int, int]]) -> list[int]:
        checked = base.checked_spend(changes)
        return self.db.write(lambda c, now: spend.add(c, now, checked), "add_spend")

    def read_spend(self, keys: Sequence[str]) -> list[int]:
        wanted = base.checked_spend_keys(keys)
        return self.db.read(lambda c, now: spend.read(c, now, wanted))

    # --- work queue -----------------------------------------------------------------------
    def put_task(self, owner: str, task_id: str, tool_name: str, priority: int, payload: str,
                 max_attempts: int) -> Task:
        check_new_task(task_id, tool_name, priority, payload, max_attempts)
        return self.db.write(lambda c, now: workqueue.put(
            c, now, owner, task_id, tool_name, priority, payload, max_attempts), "put_task")

    def take_task(self, instance_id: str, lease_ns: int) -> Task | None:
        lease = base.checked_lease("lease_ns", lease_ns)
        return self.db.write(lambda c, now: workqueue.take(c, now, instance_id, lease),
                             "take_task")

    def steal_task(self, instance_id: str, lease_ns: int, min_queued: int) -> Task | None:
        lease = base.checked_lease("lease_ns", lease_ns)
        least = base.checked_min_queued(min_queued)
        return self.db.write(lambda c, now: workqueue.steal(c, now, instance_id, lease, least),
                             "steal_task")

    def renew_task(self, task_id: str, fence: int, lease_ns: int) -> Task | None:
        lease = base.checked_lease("lease_ns", lease_ns)
        return self.db.write(lambda c, now: workqueue.renew(c, now, task_id, fence, lease),
                             "renew_task")

    def settle_task(self, task_id: str, fence: int, outcome: TaskOutcome, text: str
                    ) -> Task | None:
        base.checked_settle(outcome, text)
        return self.db.write(lambda c, now: workqueue.settle(c, now, task_id, fence, outcome,
                                                             text), "settle_task")

    def settle_and_take(self, task_id: str, fence: int, outcome: TaskOutcome, text: str,
                        instance_id: str, lease_ns: int) -> tuple[Task | None, Task | None]:
        base.checked_settle(outcome, text)
        lease = base.checked_lease("lease_ns", lease_ns)

        def step(c: sqlite3.Connection, now: int) -> tuple[Task | None, Task | None]:
            settled = workqueue.settle(c, now, task_id, fence, outcome, text)
            if settled is None:
                return None, None
            return settled, workqueue.take(c, now, instance_id, lease)

        return self.db.write(step, "settle_and_take")

    def get_task(self, task_id: str) -> Task | None:
        check_lookup(task_id)
        return self.db.read(lambda c, now: workqueue.load(c, task_id))

    def list_tasks(self, owner: str | None = None, state: TaskState | None = None,
                   limit: int = 100) -> list[Task]:
        check_lookup(owner=owner)
        base.checked_state(state)
        most = base.checked_limit(limit)
        return self.db.read(lambda c, now: workqueue.listed(c, owner, state, most))

    def queue_counts(self) -> list[OwnerCounts]:
        return self.db.read(lambda c, now: workqueue.counts(c))

    def reset_stealing_stats(self, instance_id: str | None = None) -> None:
        self.db.write(lambda c, now: workqueue.reset_stats(c, instance_id))

    def close(self) -> None:
        self.db.close()


def _snapshot(conn: sqlite3.Connection, now: int) -> Snapshot:
    instances = tuple(registry.load(conn))
    usage: dict[str, dict[str, int]] = {}
    for key, iid, win, cur, prev in conn.execute(
            "SELECT key, instance_id, win, cur, prev FROM usage"):
        usage.setdefault(key, {})[iid] = windowed(win, cur, prev, now)
    buckets = tuple(
        BucketState(key, RateSpec(per_minute, burst), tat, windowed(win, cur, prev, now),
                    usage.get(key, {}), lrate, cooldown, reported)
        for key, per_minute, burst, tat, win, cur, prev, lrate, cooldown, reported in conn.execute(
            "SELECT key, per_minute, burst, tat, win, cur, prev, lrate, cooldown_until, "
            "reported_limit FROM buckets ORDER BY key"))
    held = tuple(PermitState(r[0], r[1], r[2], r[3], r[4], r[5]) for r in conn.execute(
        "SELECT id, instance_id, provider, model, tokens, granted_ns FROM permits ORDER BY id"))
    used = groups_used(held)
    groups = tuple(GroupState(k, lim, used.get(k, 0)) for k, lim in conn.execute(
        "SELECT key, lim FROM groups ORDER BY key"))
    waiting = conn.execute("SELECT COUNT(*) FROM waiters").fetchone()[0]
    return Snapshot(now, instances, buckets, groups, held, int(waiting))
