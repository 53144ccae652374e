"""The store protocol as wire operations: each ``Store`` method is one ``POST
/v1/store/<name>`` with its arguments as a JSON object, answered with ``{"result": ...}``.

One table for both ends (the daemon's routes and ``RemoteStore``), so the two can never
disagree on an argument's name or type. ``changes``: the operation writes. ``resend_safe``: it
may be applied twice with the effect of once (a wait's ticket, a permit id, an owner's epoch
name what it acts on), so it needs nothing more; every other write carries a request id, and
the daemon applies a resent id once. A result that may be one of several records is tagged
(``{"type": "granted", ...}``), never guessed from its fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cross_instance.core.limiter import RateSpec
from cross_instance.core.limits import AdaptiveSettings
from cross_instance.core.locking import LockRecord, LockWaiting
from cross_instance.core.ownership import Claim, Force, WorkflowRecord
from cross_instance.core.records import (
    Adjustment,
    Event,
    Granted,
    InstanceRecord,
    Outcome,
    PermitRequest,
    PermitState,
    Snapshot,
    Waiting,
    Workload,
)
from cross_instance.core.workqueue import OwnerCounts, Task


@dataclass(frozen=True, slots=True)
class Op:
    name: str
    args: tuple[tuple[str, Any], ...]
    result: Any  # a type, or a tuple of record classes (a tagged result; None allowed)
    changes: bool = True
    resend_safe: bool = False


#: Tags of the records a tagged result may hold.
TAGS: dict[type, str] = {Granted: "granted", Waiting: "waiting", LockRecord: "lock",
                         LockWaiting: "lock_waiting"}
BY_TAG = {tag: cls for cls, tag in TAGS.items()}

_OPS = (
    Op("now_ns", (), int, changes=False),
    Op("register_instance", (("record", InstanceRecord),), InstanceRecord),
    Op("rejoin_instance", (("record", InstanceRecord), ("held", list[PermitState])), int),
    Op("heartbeat", (("instance_id", str), ("workload", Workload | None),
                     ("usage", dict[str, int] | None)), bool, resend_safe=True),
    Op("unregister_instance", (("instance_id", str),), None, resend_safe=True),
    Op("list_instances", (), list[InstanceRecord], changes=False),
    Op("reap", (), list[str], resend_safe=True),
    Op("set_active_model", (("instance_id", str), ("provider", str), ("model", str),
                            ("delta", int)), None),
    Op("clear_active_models", (("instance_id", str),), None, resend_safe=True),
    Op("publish_limits", (("instance_id", str), ("rates", dict[str, RateSpec]),
                          ("groups", dict[str, int])), None, resend_safe=True),
    # acquire and try_acquire: the client always chooses the ticket, so a resent attempt is
    # answered with the grant the first one made (also across a restart of the daemon)
    Op("decide", (("request", PermitRequest), ("ticket", int), ("queue", bool),
                  ("release", list[int])), (Granted, Waiting), resend_safe=True),
    Op("cancel_wait", (("ticket", int),), None, resend_safe=True),
    Op("release", (("instance_id", str), ("permit_ids", list[int])), int, resend_safe=True),
    Op("adjust_tokens", (("changes", list[tuple[str, int]]),), None),
    Op("record_outcome", (("keys", list[str]), ("outcome", Outcome),
                          ("policy", AdaptiveSettings)), list[Adjustment]),
    Op("claim_workflow", (("workflow_id", str), ("instance_id", str), ("take", bool),
                          ("auto_claim", bool), ("force", Force)), Claim),
    Op("release_workflow", (("workflow_id", str), ("instance_id", str),
                            ("epoch", int | None), ("by", str | None)), bool, resend_safe=True),
    Op("get_workflow", (("workflow_id", str),), WorkflowRecord | None, changes=False),
    Op("list_workflows", (), list[WorkflowRecord], changes=False),
    Op("write_workflow_state", (("workflow_id", str), ("instance_id", str), ("epoch", int),
                                ("values", dict[str, Any])), None, resend_safe=True),
    Op("validate_epoch", (("workflow_id", str), ("instance_id", str), ("epoch", int)), None,
       changes=False),
    Op("read_workflow_state", (("workflow_id", str),), dict[str, Any], changes=False),
    Op("acquire_lock", (("resource", str), ("instance_id", str), ("ttl_ns", int),
                        ("ticket", int | None), ("wait", bool)), (LockRecord, LockWaiting),
       resend_safe=True),
    Op("cancel_lock_wait", (("ticket", int),), None, resend_safe=True),
    Op("renew_lock", (("resource", str), ("lock_id", str), ("ttl_ns", int)),
       LockRecord | None, resend_safe=True),
    Op("release_lock", (("resource", str), ("lock_id", str)), bool, resend_safe=True),
    Op("list_locks", (), list[LockRecord], changes=False),
    Op("cleanup_expired_locks", (), list[LockRecord], resend_safe=True),
    Op("snapshot", (), Snapshot, changes=False),
    Op("record_event", (("kind", str), ("instance_id", str | None),
                        ("data", dict[str, Any])), None),
    Op("events", (("after_id", int), ("limit", int)), list[Event], changes=False),
    Op("reset_learned", (("keys", list[str] | None),), int, resend_safe=True),
    # adds are not idempotent: a resent request id is applied once (daemon.once)
    Op("add_spend", (("changes", list[tuple[str, int, int]]),), list[int]),
    Op("read_spend", (("keys", list[str]),), list[int], changes=False),
    # the work queue: a put names its task, so a resent put finds the task it queued; a
    # renew or settle shows the run's fence, so a resent one gets the same answer. A take or
    # a steal starts a run: resent blindly it would start a second one, so it carries a
    # request id (a lost reply then leaves a run nobody renews, which its lease ends).
    # ``outcome`` and ``state`` travel as text: the store names a wrong one.
    Op("put_task", (("owner", str), ("task_id", str), ("tool_name", str), ("priority", int),
                    ("payload", str), ("max_attempts", int)), Task, resend_safe=True),
    Op("take_task", (("instance_id", str), ("lease_ns", int)), Task | None),
    Op("steal_task", (("instance_id", str), ("lease_ns", int), ("min_queued", int)),
       Task | None),
    Op("renew_task", (("task_id", str), ("fence", int), ("lease_ns", int)), Task | None,
       resend_safe=True),
    Op("settle_task", (("task_id", str), ("fence", int), ("outcome", str), ("text", str)),
       Task | None, resend_safe=True),
    # settling is resend-safe, the take after it is not: a request id applies it once
    Op("settle_and_take", (("task_id", str), ("fence", int), ("outcome", str), ("text", str),
                           ("instance_id", str), ("lease_ns", int)),
       tuple[Task | None, Task | None]),
    Op("get_task", (("task_id", str),), Task | None, changes=False),
    Op("list_tasks", (("owner", str | None), ("state", str | None), ("limit", int)),
       list[Task], changes=False),
    Op("queue_counts", (), list[OwnerCounts], changes=False),
    Op("reset_stealing_stats", (("instance_id", str | None),), None, resend_safe=True),
)
OPS: dict[str, Op] = {op.name: op for op in _OPS}
