"""The embedded SQLite store: one host, no daemon, exact shared limits.

State lives in ``<state dir>/coordinator.sqlite3``; time is ``CLOCK_BOOTTIME``. See ``db`` for
the transaction discipline and ``stores.base.Store`` for what each operation promises.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from cross_instance import hostinfo
from cross_instance.core.arbiter import GLOBAL_GROUP
from cross_instance.core.limiter import RateSpec
from cross_instance.core.limits import AdaptiveSettings
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
from cross_instance.stores import base
from cross_instance.stores.sqlite import learning, permits, registry
from cross_instance.stores.sqlite.db import Database


class SqliteStore:
    """``Store`` on one SQLite file. ``create=False`` opens an existing state only (CLI)."""

    capabilities = frozenset(
        {base.CAP_PERMITS, base.CAP_REGISTRY, base.CAP_EVENTS, base.CAP_PID_LIVENESS}
    )

    def __init__(self, directory: str | Path, *, waiter_ttl_ns: int = 10_000_000_000,
                 clock: Callable[[], int] = hostinfo.boottime_ns, create: bool = True,
                 mountinfo: str | None = None) -> None:
        self.directory = Path(directory).expanduser().absolute()
        self.db = Database(self.directory, clock=clock, create=create, mountinfo=mountinfo)
        self.url = f"sqlite:///{self.db.path}"
        self.waiter_ttl_ns = waiter_ttl_ns

    def now_ns(self) -> int:
        return self.db.clock()

    # --- registry -------------------------------------------------------------------------
    def register_instance(self, record: InstanceRecord) -> InstanceRecord:
        return self.db.write(lambda c, now: registry.register(c, now, record), "register")

    def heartbeat(self, instance_id: str, workload: Workload | None = None,
                  usage: Mapping[str, int] | None = None) -> bool:
        return self.db.write(
            lambda c, now: registry.heartbeat(c, now, instance_id, workload, usage))

    def unregister_instance(self, instance_id: str) -> None:
        self.db.write(lambda c, now: registry.remove(c, instance_id, "instance_down", "unregistered"))

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

    def acquire(self, request: PermitRequest, ticket: int | None,
                release: Sequence[int] = ()) -> Granted | Waiting:
        result = self.db.write(lambda c, now: permits.acquire(
            c, now, request, ticket, self.waiter_ttl_ns, True, release), "acquire")
        assert result is not None
        return result

    def try_acquire(self, request: PermitRequest, release: Sequence[int] = ()
                    ) -> Granted | None:
        result = self.db.write(lambda c, now: permits.acquire(
            c, now, request, None, self.waiter_ttl_ns, False, release))
        assert not isinstance(result, Waiting)
        return result

    def cancel_wait(self, ticket: int) -> None:
        self.db.write(lambda c, now: c.execute("DELETE FROM waiters WHERE ticket=?", (ticket,)))

    def release(self, permit_ids: Sequence[int]) -> int:
        return self.db.write(lambda c, now: permits.release(c, permit_ids), "release")

    def adjust_tokens(self, changes: Sequence[tuple[str, int]]) -> None:
        self.db.write(lambda c, now: permits.adjust_tokens(c, now, changes), "adjust_tokens")

    def record_outcome(self, keys: Sequence[str], outcome: Outcome, policy: AdaptiveSettings
                       ) -> list[Adjustment]:
        return self.db.write(lambda c, now: learning.record(c, now, keys, outcome, policy),
                             "record_outcome")

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
    used: dict[str, int] = {}
    for p in held:
        for group in (GLOBAL_GROUP, f"p:{p.provider}", f"m:{p.provider}/{p.model}"):
            used[group] = used.get(group, 0) + 1
    groups = tuple(GroupState(k, lim, used.get(k, 0)) for k, lim in conn.execute(
        "SELECT key, lim FROM groups ORDER BY key"))
    waiting = conn.execute("SELECT COUNT(*) FROM waiters").fetchone()[0]
    return Snapshot(now, instances, buckets, groups, held, int(waiting))
