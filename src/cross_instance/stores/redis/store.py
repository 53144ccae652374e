"""The Redis store: the same protocol as the SQLite store, for instances on many hosts.

Every operation is one atomic step in Lua that reads the server's clock: a function of the
package's library on Redis 7+, else a script called by digest (``scripts``, ``lane``; design in
``docs/redis-store.md``). The store keeps microseconds and converts to the protocol's
nanoseconds at this boundary.
"""

from __future__ import annotations

import functools
import json
import struct
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, cast

from cross_instance.core.keys import groups_used
from cross_instance.core.limiter import RateSpec
from cross_instance.core.limits import AdaptiveSettings
from cross_instance.core.liveness import Domain
from cross_instance.core.locking import LockRecord, LockWaiting
from cross_instance.core.ownership import (
    Action,
    Claim,
    Decision,
    Force,
    Owner,
    WorkflowRecord,
)
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
    StealingStats,
    Task,
    TaskState,
    check_lookup,
    check_new_task,
)
from cross_instance.errors import (
    DuplicateInstanceError,
    NotRegisteredError,
    PermitRequestError,
    StaleEpochError,
    StoreUnavailable,
)
from cross_instance.hostfacts import identity as hostinfo
from cross_instance.stores import base, crashpoints
from cross_instance.stores.permit_ids import new_permit_id, new_ticket
from cross_instance.stores.redis.connection import (
    RedisLocation,
    call,
    check_server,
    connect,
    parse_url,
    server_time_us,
)
from cross_instance.stores.redis.freed import FreedChannel
from cross_instance.stores.redis.lane import ScriptLane

_GRANTED = struct.Struct("<5q")  # a granted permit's reply (admit.lua's granted_reply)
_QUEUED = struct.Struct("<q")  # after it, from the full path: the queue's length
# every operation (``lua/<name>.lua``): ARGV is the prefix, now, then its own arguments
_OPERATIONS = ("register", "heartbeat", "unregister", "reap", "active_model",
               "list_instances", "record_event", "declare_empty",
               "claim_workflow", "release_workflow", "workflow_write", "workflow_validate",
               "workflow_read", "workflow_get", "workflow_list",
               "lock_acquire", "lock_renew", "lock_release", "lock_cancel", "lock_list",
               "lock_cleanup",
               "permit_publish", "permit_acquire", "permit_release", "permit_cancel",
               "permit_adjust", "permit_reset", "permit_record", "permit_dump",
               "spend_add", "spend_read",
               "task_put", "task_take", "task_steal", "task_renew", "task_settle",
               "task_settle_take", "task_get", "task_list", "task_counts", "task_reset_stats")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _json(value: Any) -> str:
    """A structured argument of an operation: one JSON text (compact, as UTF-8)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


@functools.lru_cache(maxsize=4096)
def _request_args(request: PermitRequest) -> tuple[str, ...]:
    """A permit request as ``permit_acquire.lua`` reads it (runtimes reuse one request per
    plan, so this is built once; as text, which hiredis packs faster than numbers)."""
    kind = _kind(request)
    gate = [f"{s}:{g}" for g in request.slots for s in "lu"]
    return (request.instance_id, str(int(request.reports)), kind, f" {request.tokens} {kind}",
            _json([list(r) for r in request.rates]), _json(gate))


@functools.lru_cache(maxsize=4096)
@functools.lru_cache(maxsize=1024)
def _kind_json(kind: str) -> str:
    """A permit kind as a JSON string, encoded once per kind (every release sends one)."""
    return _json(kind)


def _kind(request: PermitRequest) -> str:
    """A permit's kind as the scripts keep it: its slot groups follow from it."""
    return _kind_of(request.provider, request.model)


def _kind_of(provider: str, model: str | None) -> str:
    return provider if model is None else f"{provider}\t{model}"


def _model_pair(field: str) -> tuple[str, str]:
    """An active model's (provider, model) from its field: JSON (active_model.lua), or
    "provider<TAB>model" as versions before it wrote."""
    if field.startswith("["):
        try:
            provider, model = json.loads(field)
            return str(provider), str(model)
        except ValueError:
            pass
    provider, _, model = field.partition("\t")
    return provider, model


def _pairs(flat: list[Any]) -> dict[str, str]:
    return {_text(flat[i]): _text(flat[i + 1]) for i in range(0, len(flat), 2)}


def _task(reply: list[Any]) -> Task | None:
    """A task as the queue's operations reply (``lua/queue.lua``'s ``task_reply``:
    ``["task", field, value, ...]``, times in µs), or None for ``["none"]``. Numbers come as
    integers or text, and ``int`` reads both; only the text fields are decoded (a reply is
    read on every step of a worker loop)."""
    if _text(reply[0]) != "task":
        return None
    h = {k.decode() if type(k) is bytes else str(k): v
         for k, v in zip(reply[1::2], reply[2::2], strict=True)}

    def text(key: str) -> str:
        value = h[key]
        return value.decode() if type(value) is bytes else str(value)

    return Task(task_id=text("id"), owner=text("owner"), tool_name=text("tool"),
                priority=int(h["priority"]), payload=text("payload"),
                enqueued_wall_ms=int(h["wall"]), seq=int(h["seq"]),
                attempts=int(h["attempts"]), state=cast(TaskState, text("state")),
                fence=int(h["fence"]),
                lease_until_ns=int(h["lease"]) * 1000 if "lease" in h else None,
                result=text("result") if "result" in h else None,
                error=text("error") if "error" in h else None, max_attempts=int(h["max"]),
                enqueued_ns=int(h["enq"]) * 1000)


def _registered(reply: list[Any], instance_id: str) -> list[Any]:
    """``reply``, unless the operation found ``instance_id`` not registered."""
    if _text(reply[0]) == "not_registered":
        raise NotRegisteredError.instance(instance_id)
    return reply


class RedisStore(base.PermitDecisions):
    """``Store`` on one Redis server (or a managed Redis) shared by every host."""

    capabilities = frozenset({base.CAP_PERMITS, base.CAP_REGISTRY, base.CAP_EVENTS,
                              base.CAP_PID_LIVENESS, base.CAP_WORKFLOWS, base.CAP_LOCKS,
                              base.CAP_QUEUE})

    def __init__(self, url: str, *, clock: Callable[[], int] | None = None,
                 retry_for_s: float = 5.0, waiter_ttl_ns: int = 10_000_000_000,
                 socket_timeout_s: float = 5.0) -> None:
        self._closed = False
        self.location: RedisLocation = parse_url(url)
        self.url = self.location.where
        self.prefix = self.location.prefix
        self.client = connect(self.location, retry_for_s=retry_for_s,
                              socket_timeout_s=socket_timeout_s)
        self.warnings = check_server(self.location, self.client)
        self._clock = clock  # tests move time by hand (ns); otherwise the server's TIME
        self.waiter_ttl_ns = waiter_ttl_ns
        self._lane = ScriptLane(self.client, _OPERATIONS, self.location,
                                functions=self.location.functions)
        call(self.location, self._lane.prepare)
        if self._lane.fallback is not None:
            self.warnings.append(
                f"Redis at {self.location.where} cannot load this package's function library "
                f"({self._lane.fallback}): its operations run as scripts, which is slower")
        if self._lane.timeout_fallback is not None:
            self.warnings.append(
                f"Redis at {self.location.where}: the socket timeout is kept by Python, not the "
                f"kernel ({self._lane.timeout_fallback}; redis-py {_redis_version()}): "
                "the same behaviour, two more system calls per call (about 2 µs)")
        # the kind of each permit this store granted and nobody freed yet: the scripts free a
        # permit of a known kind without reading it first
        self._kinds: dict[int, str] = {}
        # the permit queue's length (every host) in the last grant or release reply: while it
        # is not 0 a release is sent at once (``Runtime``), since someone may wait for it
        self.queued: int | None = 0

    def freed_channel(self, instance_id: str, on_freed: Callable[[int], object],
                      on_subscribed: Callable[[], object]) -> FreedChannel:
        """The announcements of freed slots (published by the operations that free them while
        anyone waits) for ``instance_id``'s waiters, on every host (``freed``)."""
        return FreedChannel(self.client, f"{self.prefix}freed", instance_id, on_freed,
                            on_subscribed, self.location.where)

    # --- plumbing ---------------------------------------------------------------------------
    def _check_open(self) -> None:
        """``StoreUnavailable`` once the store is closed (redis-py would connect again)."""
        if self._closed:
            raise StoreUnavailable(f"{self.url}: the store is closed", location=self.url)

    def now_ns(self) -> int:
        self._check_open()
        if self._clock is not None:
            return self._clock()
        return server_time_us(self.location, self.client) * 1000

    def _now_arg(self) -> str:
        """An operation's ``now``: the test clock's (µs), or "" for the server's."""
        return "" if self._clock is None else str(self._clock() // 1000)

    def _run(self, name: str, *args: Any) -> Any:
        """Operation ``name`` (``lua/<name>.lua``) called with the prefix, now, then ``args``."""
        self._check_open()
        now = self._now_arg()
        if crashpoints.ACTIVE:  # fault tests: redis.<operation>.before_send|after_reply
            crashpoints.crash_at(f"redis.{name}.before_send")
            result = self._lane.run(name, self.prefix, now, *args)
            crashpoints.crash_at(f"redis.{name}.after_reply")
            return result
        return self._lane.run(name, self.prefix, now, *args)

    def _evidence(self, records: list[InstanceRecord]) -> str:
        """What probing this host's pids showed, for the scripts' liveness verdicts."""
        here = hostinfo.local_domain()
        seen = {r.instance_id: {"pid": r.pid, "ticks": r.start_ticks,
                                "probe": hostinfo.probe(r.pid, r.start_ticks).value}
                for r in records if r.domain == here}
        return json.dumps(seen) if seen else "{}"

    @staticmethod
    def _probing(call: Callable[[str, int], Any]) -> Any:
        """The reply of an operation that judges one other instance's liveness, called with
        the evidence gathered so far and whether it may ask for more: it replies
        ``["probe", id, pid, ticks]`` when that instance runs on this host, where a pid probe
        decides sooner than its lease. Only that one process is probed; nothing lists every
        instance. The last call may not ask (the instance changed between calls twice)."""
        evidence: dict[str, dict[str, Any]] = {}
        for may_ask in (1, 1, 0):
            result = call(json.dumps(evidence), may_ask)
            if _text(result[0]) != "probe":
                break
            iid, pid, ticks = _text(result[1]), int(result[2]), int(result[3])
            evidence[iid] = {"pid": pid, "ticks": ticks,
                             "probe": hostinfo.probe(pid, ticks).value}
        return result

    @staticmethod
    def _here() -> str:
        d = hostinfo.local_domain()
        return json.dumps({"host": d.host, "boot": d.boot_id, "pidns": d.pid_ns})

    # --- registry -------------------------------------------------------------------------
    def register_instance(self, record: InstanceRecord) -> InstanceRecord:
        self._register(record, ())
        return self._records(record.instance_id)[0]

    def rejoin_instance(self, record: InstanceRecord, held: Sequence[PermitState]) -> int:
        return self._register(record, held)

    def _register(self, record: InstanceRecord, held: Sequence[PermitState]) -> int:
        existing = self._records(record.instance_id)
        w = record.workload
        payload = {
            "id": record.instance_id, "host": record.domain.host, "boot": record.domain.boot_id,
            "pidns": record.domain.pid_ns, "pid": record.pid, "ticks": record.start_ticks,
            "session": record.session_id, "cwd": record.cwd,
            "started_wall_ms": record.started_wall_ms, "lease_us": record.lease_ns // 1000,
            "priority": record.priority, "reserved": record.reserved,
            "pending": w.pending_tasks,
            "latency": "" if w.avg_latency_ms is None else w.avg_latency_ms,
            "orch": w.active_orchestrations}
        permits = json.dumps([[str(p.permit_id), p.granted_ns // 1000, p.tokens,
                                _kind_of(p.provider, p.model)] for p in held]) if held else ""
        result = self._run("register", json.dumps(payload), self._here(),
                           self._evidence(existing), permits)
        if _text(result[0]) == "duplicate":
            raise DuplicateInstanceError(record.instance_id, int(result[1]), _text(result[2]))
        for p in held:
            self._kinds[p.permit_id] = _kind_of(p.provider, p.model)
        return int(result[2])

    def declare_empty(self) -> bool:
        """Declare this key prefix new and empty: its first incarnation then starts without
        the restart grace (nothing granted for one heartbeat timeout) and with full rate
        buckets. Only for a prefix that no instance has used since the server started (a new
        prefix or a new server): declared after a restart that lost data, the slots of permits
        still in flight could be granted twice. False, changing nothing, once anything has
        used the prefix (a grace that has begun is never cut short)."""
        return bool(self._run("declare_empty"))

    def heartbeat(self, instance_id: str, workload: Workload | None = None,
                  usage: Mapping[str, int] | None = None) -> bool:
        work = "" if workload is None else json.dumps({
            "pending": workload.pending_tasks,
            "latency": "" if workload.avg_latency_ms is None else workload.avg_latency_ms,
            "orch": workload.active_orchestrations})
        return bool(self._run("heartbeat", instance_id, work,
                              json.dumps(dict(usage)) if usage else ""))

    def unregister_instance(self, instance_id: str) -> None:
        self._run("unregister", instance_id)

    def list_instances(self) -> list[InstanceRecord]:
        return self._records()

    def _records(self, instance_id: str | None = None) -> list[InstanceRecord]:
        """Every record, or only ``instance_id``'s (then zero or one)."""
        self._check_open()
        args = [self.prefix, self._now_arg()] + ([] if instance_id is None else [instance_id])
        records = []
        for iid, flat, models in self._lane.run("list_instances", *args):
            h = _pairs(flat)
            active = []
            for field, value in _pairs(models).items():
                provider, model = _model_pair(field)
                count, _, since = value.partition(" ")
                active.append((int(since), provider, model, int(count)))
            latency = h.get("latency", "")
            records.append(InstanceRecord(
                instance_id=_text(iid), domain=Domain(h["host"], h["boot"], h["pidns"]),
                pid=int(h["pid"]), start_ticks=int(h["ticks"]), session_id=h["session"],
                cwd=h["cwd"], started_wall_ms=int(h["started_wall_ms"]),
                lease_ns=int(h["lease_us"]) * 1000, priority=int(h["priority"]),
                reserved=int(h["reserved"]), started_ns=int(h["started_us"]) * 1000,
                heartbeat_ns=int(h["hb_us"]) * 1000, heartbeat_wall_ms=int(h["hb_wall_ms"]),
                workload=Workload(int(h["pending"]), float(latency) if latency else None,
                                  int(h["orch"])),
                active_models=tuple((p, m, c) for _, p, m, c in sorted(active))))
        return sorted(records, key=lambda r: (r.started_ns, r.instance_id))

    def reap(self) -> list[str]:
        dead = self._run("reap", self._here(), self._evidence(self.list_instances()))
        return [_text(d) for d in dead]

    def set_active_model(self, instance_id: str, provider: str, model: str, delta: int) -> None:
        self._run("active_model", instance_id, provider, model, str(int(delta)))

    def clear_active_models(self, instance_id: str) -> None:
        self._run("active_model", instance_id, "", "", "clear")

    # --- limits and permits ---------------------------------------------------------------
    def publish_limits(self, instance_id: str, rates: Mapping[str, RateSpec],
                       groups: Mapping[str, int]) -> None:
        self._run("permit_publish", instance_id,
                  _json([[k, s.per_minute, s.burst] for k, s in rates.items()]),
                  _json([[k, n] for k, n in groups.items()]))

    def _decide(self, request: PermitRequest, ticket: int | None, queue: bool,
                 release: Sequence[int]) -> Granted | Waiting | None:
        # a wait's permit is known by its ticket: an attempt sent again is granted once
        permit_id = new_permit_id() if ticket is None else ticket
        try:
            result = self._run("permit_acquire", permit_id,
                               "" if ticket is None else ticket, "1" if queue else "0",
                               str(self.waiter_ttl_ns // 1000), *_request_args(request),
                               self._to_free(release))
        except StoreUnavailable as err:
            if ticket is None:  # an id of this call alone: freeing it later frees nothing else
                self._kinds[permit_id] = _kind(request)
                err.undecided_permit = permit_id
            raise
        if type(result) is bytes:  # granted (admit.lua's granted_reply)
            self._kinds[permit_id] = _kind(request)
            # the uncontended path grants only while nobody waits; the full one says
            self.queued = (_QUEUED.unpack_from(result, _GRANTED.size)[0]
                           if len(result) > _GRANTED.size else 0)
            now_us, win, cur, prev, limit = _GRANTED.unpack_from(result)
            now_ns = now_us * 1000
            return Granted(permit_id, now_ns, windowed(win, cur, prev, now_ns), limit)
        kind = _text(result[0])
        if kind == "not_registered":
            raise NotRegisteredError(
                f"instance {request.instance_id} is not registered (it may have been judged "
                "dead)")
        if kind in ("impossible", "error"):
            raise PermitRequestError(_text(result[1]))
        if kind == "none":
            return None
        _, t, ready, blocked, ahead, reason, now, place = result
        return Waiting(int(t), int(ready) * 1000, bool(blocked), int(ahead), _text(reason),
                       int(now) * 1000, int(place))

    def cancel_wait(self, ticket: int) -> None:
        self._run("permit_cancel", str(ticket))  # as text: Lua numbers have 53 bits

    def release(self, instance_id: str, permit_ids: Sequence[int]) -> int:
        freed, self.queued = self._run("permit_release", instance_id, self._to_free(permit_ids))
        return int(freed)

    def _to_free(self, permit_ids: Sequence[int]) -> str:
        """Permits to free as ``free_permits`` in slots.lua reads them: JSON, grouped by kind
        ("" for those this store did not grant, which the script looks up), the ids as text
        (Lua numbers have 53 bits)."""
        if not permit_ids:
            return "[]"
        if len(permit_ids) == 1:  # the common case: the permit the last cycle held
            pid = permit_ids[0]
            return f'[[{_kind_json(self._kinds.pop(pid, ""))},["{int(pid)}"]]]'
        by_kind: dict[str, list[str]] = {}
        for i in permit_ids:
            by_kind.setdefault(self._kinds.pop(i, ""), []).append(str(int(i)))
        return _json([[kind, ids] for kind, ids in by_kind.items()])

    def adjust_tokens(self, changes: Sequence[tuple[str, int]]) -> None:
        if changes:
            self._run("permit_adjust", _json([[k, int(d)] for k, d in changes]))

    def record_outcome(self, keys: Sequence[str], outcome: Outcome, policy: AdaptiveSettings
                       ) -> list[Adjustment]:
        def us(ns: int | None) -> int | None:
            return None if ns is None else ns // 1000

        retry_after = us(outcome.retry_after_ns)
        changes = self._run(
            "permit_record", _json(list(keys)), str(outcome.granted_ns // 1000),
            "1" if outcome.rate_limited else "0", "" if retry_after is None else str(retry_after),
            _json([[k, limit, remaining, us(reset)]
                   for k, limit, remaining, reset in outcome.reported]),
            _json({"enabled": policy.enabled, "reduction": policy.reduction_factor,
                   "recovery": policy.recovery_factor, "min": policy.min_requests_per_minute,
                   "max": policy.max_requests_per_minute,
                   "max_cooldown": policy.max_cooldown_ms * 1000}))
        return [Adjustment(_text(k), float(old), float(new), int(cooldown) * 1000, _text(why))
                for k, old, new, cooldown, why in changes]

    def reset_learned(self, keys: Iterable[str] | None = None) -> int:
        return int(self._run("permit_reset", "" if keys is None else _json(list(keys))))

    def snapshot(self) -> Snapshot:
        instances = tuple(self.list_instances())
        now, buckets, slots, permits, usage, waiting = self._run("permit_dump")
        now_ns = int(now) * 1000
        by_key: dict[str, dict[str, int]] = {}
        for key, flat in usage:
            for iid, value in _pairs(flat).items():
                win, _, n = value.partition(" ")
                by_key.setdefault(_text(key), {})[iid] = windowed(int(win), int(n), 0, now_ns)
        held = []
        for iid, flat in permits:
            for pid, raw in _pairs(flat).items():  # "granted_us tokens provider[\tmodel]"
                granted, tokens, kind = raw.split(" ", 2)
                provider, _, model = kind.partition("\t")
                held.append(PermitState(int(pid), _text(iid), provider, model or None,
                                        int(tokens), int(granted) * 1000))
        held.sort(key=lambda p: p.permit_id)
        used = groups_used(held)
        states = []
        for key, flat in buckets:
            h = _pairs(flat)
            k = _text(key)
            states.append(BucketState(
                k, RateSpec(int(h["per_minute"]), int(h["burst"])), int(h["tat"]) * 1000,
                windowed(int(h["win"]), int(h["cur"]), int(h["prev"]), now_ns),
                by_key.get(k, {}), float(h["lrate"]) if "lrate" in h else None,
                int(h["cooldown_until"]) * 1000,
                int(h["reported_limit"]) if "reported_limit" in h else None))
        return Snapshot(now_ns, instances, tuple(sorted(states, key=lambda b: b.key)),
                        tuple(sorted((GroupState(k[2:], int(v), used.get(k[2:], 0))
                                      for k, v in _pairs(slots).items() if k.startswith("l:")),
                                     key=lambda g: g.key)),
                        tuple(held), int(waiting))

    # --- spend ------------------------------------------------------------------------------
    def add_spend(self, changes: Sequence[tuple[str, int, int]]) -> list[int]:
        checked = base.checked_spend(changes)
        if not checked:
            return []
        # expiries in µs, rounded up (a key is never forgotten before its expiry); numbers as
        # text, which the script reads exactly
        reply = self._run("spend_add", _json([[k, str(n), str(-(-e // 1000))]
                                               for k, n, e in checked]))
        if _text(reply[0]) == "overflow":
            raise base.spend_overflow(_text(reply[1]), int(_text(reply[2])))
        return [int(_text(t)) for t in reply[1:]]

    def read_spend(self, keys: Sequence[str]) -> list[int]:
        wanted = base.checked_spend_keys(keys)
        if not wanted:
            return []
        return [int(_text(t)) for t in self._run("spend_read", _json(wanted))]

    # --- workflows --------------------------------------------------------------------------
    @staticmethod
    def _workflow(workflow_id: str, reply: list[Any]) -> WorkflowRecord | None:
        if not reply:
            return None
        owner, pid, host, boot, pidns, ticks, epoch, claimed, updated = (_text(x) for x in reply)
        who = Owner(owner, int(pid), Domain(host, boot, pidns), int(ticks)) if owner else None
        return WorkflowRecord(workflow_id, who, int(epoch), int(claimed), int(updated))

    def claim_workflow(self, workflow_id: str, instance_id: str, *, take: bool = True,
                       auto_claim: bool = True, force: Force = Force.NO) -> Claim:
        result = self._probing(lambda evidence, may_ask: self._run(
            "claim_workflow", workflow_id, instance_id, int(take), int(auto_claim),
            force.value, self._here(), evidence, may_ask))
        if _text(result[0]) == "not_registered":
            raise NotRegisteredError(f"instance {instance_id!r} is not registered (it was "
                                     "judged dead or never started); start the runtime again")
        action, epoch, reason, before, after = result
        return Claim(Decision(Action(_text(action)), int(epoch), _text(reason)),
                     self._workflow(workflow_id, before), self._workflow(workflow_id, after))

    def release_workflow(self, workflow_id: str, instance_id: str,
                         epoch: int | None = None, by: str | None = None) -> bool:
        return bool(self._run("release_workflow", workflow_id, instance_id,
                              "" if epoch is None else str(epoch), by or ""))

    def get_workflow(self, workflow_id: str) -> WorkflowRecord | None:
        return self._workflow(workflow_id, self._run("workflow_get", workflow_id))

    def list_workflows(self) -> list[WorkflowRecord]:
        found = [self._workflow(_text(wid), reply)
                 for wid, reply in self._run("workflow_list")]
        return sorted((w for w in found if w is not None), key=lambda w: w.workflow_id)

    def _fenced(self, op: str, workflow_id: str, instance_id: str, epoch: int,
                *values: str) -> None:
        result = self._run(op, workflow_id, instance_id, str(epoch), *values)
        if _text(result[0]) == "stale":
            raise StaleEpochError(workflow_id, epoch, int(result[1]), _text(result[2]) or None)

    def write_workflow_state(self, workflow_id: str, instance_id: str, epoch: int,
                             values: Mapping[str, Any]) -> None:
        texts = {k: json.dumps(v) for k, v in values.items()}
        self._fenced("workflow_write", workflow_id, instance_id, epoch, json.dumps(texts))

    def validate_epoch(self, workflow_id: str, instance_id: str, epoch: int) -> None:
        self._fenced("workflow_validate", workflow_id, instance_id, epoch)

    def read_workflow_state(self, workflow_id: str) -> dict[str, Any]:
        pairs = _pairs(self._run("workflow_read", workflow_id))
        return {k: json.loads(v) for k, v in sorted(pairs.items())}

    # --- locks ------------------------------------------------------------------------------
    @staticmethod
    def _lock(reply: list[Any]) -> LockRecord:
        res, lock_id, holder, token, acquired, expires, acquired_wall, expires_wall = reply
        return LockRecord(_text(res), _text(lock_id), _text(holder), int(token),
                          int(acquired) * 1000, int(expires) * 1000, int(acquired_wall),
                          int(expires_wall))

    def _holders_evidence(self) -> str:
        return self._evidence(self.list_instances())

    def acquire_lock(self, resource: str, instance_id: str, ttl_ns: int, ticket: int | None,
                     wait: bool) -> LockRecord | LockWaiting | None:
        lock_id = uuid.uuid4().hex
        if ticket is None:
            ticket = new_ticket()
        result = self._probing(lambda evidence, may_ask: self._run(
            "lock_acquire", resource, instance_id, ttl_ns // 1000,
            str(ticket), int(wait), self.waiter_ttl_ns // 1000,
            lock_id, self._here(), evidence, may_ask))
        kind = _text(result[0])
        if kind == "not_registered":
            raise NotRegisteredError(f"instance {instance_id!r} is not registered (it was "
                                     "judged dead or never started); start the runtime again")
        if kind == "granted":
            return self._lock(result[1])
        if kind == "none":
            return None
        _, ticket_no, retry, holder, now = result
        return LockWaiting(int(ticket_no), int(retry) * 1000, _text(holder) or None,
                           int(now) * 1000)

    def cancel_lock_wait(self, ticket: int) -> None:
        self._run("lock_cancel", str(ticket))

    def renew_lock(self, resource: str, lock_id: str, ttl_ns: int) -> LockRecord | None:
        reply = self._run("lock_renew", resource, lock_id, ttl_ns // 1000)
        return self._lock(reply) if reply else None

    def release_lock(self, resource: str, lock_id: str) -> bool:
        return bool(self._run("lock_release", resource, lock_id))

    def list_locks(self) -> list[LockRecord]:
        return [self._lock(r) for r in self._run("lock_list")]

    def cleanup_expired_locks(self) -> list[LockRecord]:
        return [self._lock(r) for r in self._run("lock_cleanup", self._here(),
                                                  self._holders_evidence())]

    # --- work queue (lua/queue.lua; arguments checked here, as every store does) ---------
    def put_task(self, owner: str, task_id: str, tool_name: str, priority: int, payload: str,
                 max_attempts: int) -> Task:
        check_new_task(task_id, tool_name, priority, payload, max_attempts)
        task = _task(_registered(self._run("task_put", owner, task_id, tool_name,
                                           str(priority), payload, str(max_attempts)), owner))
        assert task is not None
        return task

    def take_task(self, instance_id: str, lease_ns: int) -> Task | None:
        lease = base.checked_lease("lease_ns", lease_ns)
        return _task(_registered(self._run("task_take", instance_id, str(lease // 1000)),
                                 instance_id))

    def steal_task(self, instance_id: str, lease_ns: int, min_queued: int) -> Task | None:
        lease = base.checked_lease("lease_ns", lease_ns)
        least = base.checked_min_queued(min_queued)
        return _task(_registered(self._run("task_steal", instance_id, str(lease // 1000),
                                           str(least)), instance_id))

    def renew_task(self, task_id: str, fence: int, lease_ns: int) -> Task | None:
        lease = base.checked_lease("lease_ns", lease_ns)
        return _task(self._run("task_renew", task_id, str(int(fence)), str(lease // 1000)))

    def settle_task(self, task_id: str, fence: int, outcome: TaskOutcome, text: str
                    ) -> Task | None:
        base.checked_settle(outcome, text)
        return _task(self._run("task_settle", task_id, str(int(fence)), outcome, text))

    def settle_and_take(self, task_id: str, fence: int, outcome: TaskOutcome, text: str,
                        instance_id: str, lease_ns: int) -> tuple[Task | None, Task | None]:
        base.checked_settle(outcome, text)
        lease = base.checked_lease("lease_ns", lease_ns)
        settled, taken = self._run("task_settle_take", task_id, str(int(fence)), outcome, text,
                                   instance_id, str(lease // 1000))
        return _task(settled), _task(_registered(taken, instance_id))

    def get_task(self, task_id: str) -> Task | None:
        check_lookup(task_id)
        return _task(self._run("task_get", task_id))

    def list_tasks(self, owner: str | None = None, state: TaskState | None = None,
                   limit: int = 100) -> list[Task]:
        check_lookup(owner=owner)
        base.checked_state(state)
        most = base.checked_limit(limit)
        replies = self._run("task_list", owner or "", "0" if owner is None else "1",
                            state or "", str(most))
        return [t for t in map(_task, replies) if t is not None]

    def queue_counts(self) -> list[OwnerCounts]:
        rows = self._run("task_counts")
        return sorted((OwnerCounts(_text(o), int(q), int(r), int(d), int(f),
                                   StealingStats(int(a), int(s), int(m), float(_text(w))),
                                   int(since) * 1000)
                       for o, q, r, d, f, a, s, m, w, since in rows),
                      key=lambda c: c.instance_id)

    def reset_stealing_stats(self, instance_id: str | None = None) -> None:
        self._run("task_reset_stats", instance_id or "", "0" if instance_id is None else "1")

    # --- events -----------------------------------------------------------------------------
    def record_event(self, kind: str, instance_id: str | None, data: Mapping[str, object]) -> None:
        self._run("record_event", kind, instance_id or "", json.dumps(dict(data), sort_keys=True))

    def events(self, after_id: int = 0, limit: int = 100) -> list[Event]:
        self._check_open()
        raw = call(self.location, self.client.zrangebyscore, f"{self.prefix}events",
                   f"({after_id}", "+inf", start=0, num=limit)
        out = []
        for item in raw:
            e = json.loads(item)
            out.append(Event(int(e["id"]), int(e["wall_ms"]), e["kind"], e["instance_id"],
                             e["data"]))
        return out

    def close(self) -> None:
        self._closed = True
        self._lane.close()
        self.client.close()

    def drop_everything(self) -> int:
        """Delete every key under this store's prefix (tests and ``pi-xi`` maintenance);
        returns how many were deleted."""
        keys = list(self.client.scan_iter(match=f"{self.prefix}*", count=500))
        for i in range(0, len(keys), 500):
            self.client.delete(*keys[i:i + 500])
        return len(keys)


def _redis_version() -> str:
    import redis

    return str(getattr(redis, "__version__", "unknown"))

