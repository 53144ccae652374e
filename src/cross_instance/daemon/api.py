"""The public API under ``/v1``: what an agent in any language needs, as JSON over HTTP.

Names are camelCase as in the original coordinator. Ids (instances, workflows, lock
resources) travel in JSON bodies, never in paths, so any text is a valid id. Every request
that changes state may carry ``X-Pi-Request-Id`` (chosen by the client): sent again, it is
applied once. Errors are ``{"code", "message", "retryable", ...}`` (``daemon.wire``).
"""

from __future__ import annotations

import json
import os
import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from cross_instance.config.rules import instance_id_problem
from cross_instance.core.liveness import UNKNOWN_BOOT, Domain
from cross_instance.core.locking import LockRecord
from cross_instance.core.records import InstanceRecord, Workload
from cross_instance.daemon.disconnect import ClientGone, until_disconnect
from cross_instance.daemon.hosted import Hosted, HostedSession, grant_json, hosted_of
from cross_instance.daemon.state import Daemon
from cross_instance.errors import InvalidArgument, LockLostError, NotRegisteredError


class ErrorOut(BaseModel):
    """Every error (4xx): a stable ``code``, a message, and the fields the code defines."""
    model_config = ConfigDict(extra="allow")
    code: str
    message: str
    retryable: bool


# errors are ErrorOut with status 400 (invalid_request), never FastAPI's 422 body
router = APIRouter(prefix="/v1", responses={"4XX": {"model": ErrorOut,
                                                    "description": "JSON error with a code"}})
RequestId = Annotated[str | None, Header(alias="X-Pi-Request-Id", max_length=128)]
Name = Annotated[str, Field(min_length=1, max_length=1024)]
MAX_COUNT = 2**53 - 1


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=False,
                              strict=True)


def _daemon(request: Request) -> Daemon:
    return request.app.state.daemon  # type: ignore[no-any-return]


def _hosted(request: Request) -> Hosted:
    return hosted_of(_daemon(request))


# --- instances ------------------------------------------------------------------------------
class RegisterIn(Body):
    instance_id: Name | None = None
    session_id: Annotated[str, Field(max_length=128)] = ""
    pid: Annotated[int, Field(ge=0, le=2**31)] = 0
    host: Annotated[str, Field(max_length=255)] | None = None
    cwd: Annotated[str, Field(max_length=4096)] = ""
    lease_ms: Annotated[int, Field(ge=1000, le=3_600_000)] | None = None


class InstanceOut(BaseModel):
    instanceId: str
    leaseMs: int
    heartbeatIntervalMs: int
    priority: int
    reservedCapacity: int


class HeartbeatIn(Body):
    instance_id: Name
    # counts a store keeps exactly everywhere (Redis scripts hold numbers as doubles)
    pending_tasks: Annotated[int, Field(ge=0, le=MAX_COUNT)] = 0
    avg_latency_ms: Annotated[float, Field(ge=0, le=1e12, allow_inf_nan=False)] | None = None
    active_orchestrations: Annotated[int, Field(ge=0, le=MAX_COUNT)] = 0


class InstanceIn(Body):
    instance_id: Name


@router.post("/instances/register", tags=["instances"])
async def register(body: RegisterIn, request: Request) -> InstanceOut:
    """Register an instance (id chosen by the daemon when not given). Its lease is kept by
    heartbeats; a client on another host or in another language is judged by its lease."""
    daemon = _daemon(request)
    cfg = daemon.config
    iid = body.instance_id or f"http-{os.urandom(6).hex()}"
    problem = instance_id_problem(iid)
    if problem is not None:
        raise InvalidArgument(f"instanceId: {problem}")
    client = request.client.host if request.client else "unknown"
    policy = cfg.policy_for(iid)
    lease_ms = body.lease_ms or cfg.heartbeat_timeout_ms
    record = InstanceRecord(
        instance_id=iid, domain=Domain(body.host or client, UNKNOWN_BOOT, f"http:{client}"),
        pid=body.pid, start_ticks=0, session_id=body.session_id, cwd=body.cwd,
        started_wall_ms=time.time_ns() // 10**6, lease_ns=lease_ms * 10**6,
        priority=policy.priority, reserved=policy.reserved_capacity)
    await daemon.call(daemon.store.register_instance, record)
    _hosted(request).forget(iid)
    daemon.log("Instance %s registered over HTTP from %s", iid, client)
    return InstanceOut(instanceId=iid, leaseMs=lease_ms,
                       heartbeatIntervalMs=min(cfg.heartbeat_interval_ms, lease_ms // 3),
                       priority=policy.priority, reservedCapacity=policy.reserved_capacity)


@router.post("/instances/heartbeat", tags=["instances"])
async def heartbeat(body: HeartbeatIn, request: Request) -> dict[str, bool]:
    """Renew the lease; ``not_registered`` (404) when the instance was judged dead: register
    again, its permits are gone."""
    return await instance_heartbeat(_daemon(request), body, None)


async def instance_heartbeat(daemon: Daemon, body: HeartbeatIn, request_id: str | None
                             ) -> dict[str, bool]:
    alive = await daemon.call(daemon.store.heartbeat, body.instance_id, Workload(
        body.pending_tasks, body.avg_latency_ms, body.active_orchestrations))
    if not alive:
        hosted_of(daemon).forget(body.instance_id)
        raise NotRegisteredError(f"instance {body.instance_id} is not registered (judged dead "
                                 "or never registered): register again")
    return {"ok": True}


@router.post("/instances/unregister", tags=["instances"])
async def unregister(body: InstanceIn, request: Request) -> dict[str, bool]:
    """Remove the instance and free everything it held. Idempotent."""
    daemon = _daemon(request)
    await daemon.call(daemon.store.unregister_instance, body.instance_id)
    _hosted(request).forget(body.instance_id)
    _hosted(request).freed()
    return {"ok": True}


# --- permits --------------------------------------------------------------------------------
class AcquireIn(Body):
    instance_id: Name
    provider: Annotated[str, Field(min_length=1, max_length=64)]
    model: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    tokens: Annotated[int, Field(ge=0, le=10**9)] | None = None
    timeout_ms: Annotated[int, Field(ge=0, le=300_000)] = 30_000
    release: Annotated[list[Annotated[int, Field(ge=1, lt=2**63)]],
                       Field(max_length=1000)] = []
    reports: bool = False


class PermitOut(BaseModel):
    permitId: int
    instanceId: str
    provider: str
    model: str | None
    tokens: int
    usage: int
    limit: int
    waitedMs: float


class ReleaseIn(Body):
    instance_id: Name
    permit_ids: Annotated[list[Annotated[int, Field(ge=1, lt=2**63)]],
                          Field(min_length=1, max_length=1000)]


class ReportIn(Body):
    instance_id: Name
    permit_id: Annotated[int, Field(ge=1, lt=2**63)]
    status: Annotated[int, Field(ge=0, le=999)] | None = None
    headers: Annotated[dict[Annotated[str, Field(max_length=256)],
                            Annotated[str, Field(max_length=8192)]],
                       Field(max_length=200)] | None = None
    usage_tokens: Annotated[int, Field(ge=0, le=10**9)] | None = None
    body: Annotated[str, Field(max_length=65536)] | None = None


@router.post("/permits/acquire", tags=["permits"], response_model=PermitOut,
             responses={429: {"description": "RATE_LIMIT_EXCEEDED with retryAfter (s)"}})
async def acquire(body: AcquireIn, request: Request, request_id: RequestId = None
                  ) -> Response:
    """Wait for a permit (long-poll, at most ``timeoutMs``), first come first served with
    every waiter of the store. ``release`` frees permits first, in the same step.
    ``reports: true`` promises a report of every answer: a bucket nobody has heard from yet
    then starts slowly (one call per interval) until the first answer states its limit."""
    # the document shows PermitOut; the reply is built directly (the permit path's hottest
    # route: validating what grant_json built would cost as much as the store's decision)
    return Response(json.dumps(await permit_acquire(_daemon(request), body, request_id),
                               separators=(",", ":")), media_type="application/json")


async def permit_acquire(daemon: Daemon, body: AcquireIn, request_id: str | None
                         ) -> dict[str, Any]:
    hosted = hosted_of(daemon)
    plan = hosted.plan(body.instance_id, body.provider, body.model, body.tokens, body.reports)
    granted, waited = await hosted.acquire(plan, body.timeout_ms / 1000, request_id,
                                           body.release)
    return grant_json(granted, plan, waited)


@router.post("/permits/release", tags=["permits"])
async def release(body: ReleaseIn, request: Request) -> dict[str, int]:
    """Free permits; ``released`` counts those the instance still held (a permit released
    twice, or another instance's, counts 0 and changes nothing)."""
    return await permit_release(_daemon(request), body, None)


async def permit_release(daemon: Daemon, body: ReleaseIn, request_id: str | None
                         ) -> dict[str, int]:
    return {"released": await hosted_of(daemon).release(body.instance_id, body.permit_ids)}


@router.post("/permits/report", tags=["permits"])
async def report(body: ReportIn, request: Request) -> dict[str, bool]:
    """What the call made under a permit met: HTTP ``status``, response ``headers`` (rate-limit
    headers, ``retry-after``), ``usageTokens`` actually used. 429s and stated limits are shared
    with every instance at once."""
    return await permit_report(_daemon(request), body, None)


async def permit_report(daemon: Daemon, body: ReportIn, request_id: str | None
                        ) -> dict[str, bool]:
    known = await hosted_of(daemon).report(body.instance_id, body.permit_id, body.status,
                                           body.headers, body.usage_tokens, body.body)
    return {"applied": known}


# --- status and limits ------------------------------------------------------------------------
@router.get("/status", tags=["status"])
async def status(request: Request) -> dict[str, Any]:
    """What ``pi-xi status --json`` prints."""
    from cross_instance.views.status import build_status

    daemon = _daemon(request)
    return await daemon.run(build_status, daemon.store, daemon.config)


@router.get("/limits", tags=["status"])
async def limits(request: Request, provider: str | None = None) -> dict[str, Any]:
    """What ``pi-xi limits --json`` prints (``provider``: only that one)."""
    from cross_instance.views.limits import build_limits
    from cross_instance.views.status import build_status

    daemon = _daemon(request)
    view = await daemon.run(build_status, daemon.store, daemon.config)
    return build_limits(daemon.config, view, provider)


# --- workflows ------------------------------------------------------------------------------
class ClaimIn(Body):
    instance_id: Name
    workflow_id: Name
    auto_claim: bool = True
    force: Literal["no", "dead", "live"] = "no"


class CheckIn(Body):
    instance_id: Name
    workflow_id: Name
    auto_claim: bool = True


class WorkflowReleaseIn(Body):
    instance_id: Name
    workflow_id: Name


class StateWriteIn(Body):
    instance_id: Name
    workflow_id: Name
    epoch: Annotated[int, Field(ge=0, lt=2**63)]
    values: dict[Annotated[str, Field(max_length=1024)], Any]


class WorkflowIn(Body):
    workflow_id: Name


def _workflows(request: Request, instance_id: str) -> Any:
    from cross_instance.coordination.workflows import Workflows

    return Workflows(HostedSession(_daemon(request).store, instance_id))


@router.post("/workflows/claim", tags=["workflows"],
             responses={409: {"description": "workflow_owned_by_other (the seed's payload)"}})
async def claim_workflow(body: ClaimIn, request: Request) -> dict[str, Any]:
    """Claim a workflow (a dead owner's is taken when ``autoClaim``); ``force`` ``dead`` or
    ``live`` is a force-claim. The ``epoch`` fences every later state write."""
    wf = _workflows(request, body.instance_id)
    if body.force == "no":
        held = await _daemon(request).run(wf.claim, body.workflow_id, body.auto_claim)
    else:
        held = await _daemon(request).run(wf.force_claim, body.workflow_id,
                                          body.force == "live")
    return {"workflowId": body.workflow_id, "epoch": held.epoch, "action": held.action}


@router.post("/workflows/check", tags=["workflows"])
async def check_workflow(body: CheckIn, request: Request) -> dict[str, Any]:
    """Seed 002's check (claims a free or dead-owned workflow when ``autoClaim``)."""
    wf = _workflows(request, body.instance_id)
    return await _daemon(request).run(wf.check, body.workflow_id, body.auto_claim)


@router.post("/workflows/release", tags=["workflows"])
async def release_workflow(body: WorkflowReleaseIn, request: Request) -> dict[str, bool]:
    wf = _workflows(request, body.instance_id)
    return {"released": await _daemon(request).run(wf.release, body.workflow_id)}


@router.post("/workflows/state/write", tags=["workflows"],
             responses={409: {"description": "stale_epoch"}})
async def write_state(body: StateWriteIn, request: Request) -> dict[str, bool]:
    """A fenced write: applied only while ``instanceId`` owns the workflow at ``epoch``.
    ``values`` is JSON a store gives back as it was: no lone surrogates, no NaN or
    infinities, integers within 64 bits."""
    from cross_instance.daemon.store_routes import unstorable

    wrong = unstorable(body.values)
    if wrong is not None:
        raise InvalidArgument(f"values holds {wrong}")
    wf = _workflows(request, body.instance_id)
    await _daemon(request).run(wf.write_state, body.workflow_id, body.epoch, body.values)
    return {"ok": True}


@router.post("/workflows/state/read", tags=["workflows"])
async def read_state(body: WorkflowIn, request: Request) -> dict[str, Any]:
    daemon = _daemon(request)
    return {"values": await daemon.run(daemon.store.read_workflow_state, body.workflow_id)}


@router.get("/workflows", tags=["workflows"])
async def list_workflows(request: Request) -> dict[str, Any]:
    daemon = _daemon(request)
    records = await daemon.run(daemon.store.list_workflows)
    return {"workflows": [{
        "workflowId": w.workflow_id, "epoch": w.epoch,
        "ownerInstanceId": w.owner.instance_id if w.owner else None,
        "claimedAt": w.claimed_wall_ms, "updatedAt": w.updated_wall_ms} for w in records]}


# --- locks ----------------------------------------------------------------------------------
class LockIn(Body):
    instance_id: Name
    resource: Name
    ttl_ms: Annotated[int, Field(ge=1, le=86_400_000)] = 30_000
    timeout_ms: Annotated[int, Field(ge=0, le=300_000)] | None = None
    wait: bool = True


class RenewIn(Body):
    resource: Name
    lock_id: Annotated[str, Field(min_length=1, max_length=256)]
    ttl_ms: Annotated[int, Field(ge=1, le=86_400_000)] = 30_000


class LockReleaseIn(Body):
    resource: Name
    lock_id: Annotated[str, Field(min_length=1, max_length=256)]


def _lock_json(r: LockRecord) -> dict[str, Any]:
    return {"resource": r.resource, "lockId": r.lock_id, "holder": r.holder,
            "token": r.token, "acquiredAt": r.acquired_wall_ms, "expiresAt": r.expires_wall_ms}


@router.post("/locks/acquire", tags=["locks"],
             responses={408: {"description": "lock_timeout"}})
async def acquire_lock(body: LockIn, request: Request) -> Any:
    """Take a TTL lock with a fencing ``token``: with ``wait`` in arrival order for at most
    ``timeoutMs`` (``lock_timeout`` after it), without it ``{"lock": null}`` when taken."""
    from cross_instance.coordination.locks import Locks

    locks = Locks(HostedSession(_daemon(request).store, body.instance_id))
    ttl = body.ttl_ms / 1000
    if not body.wait:
        held = await _daemon(request).run(locks.try_acquire, body.resource, ttl)
        return {"lock": None if held is None else _lock_json(held.record)}
    timeout = 300.0 if body.timeout_ms is None else body.timeout_ms / 1000
    try:
        held = await until_disconnect(locks.aacquire(body.resource, ttl, timeout),
                                      request.receive)
    except ClientGone:  # its place in the queue went back; nobody reads this answer
        return Response(status_code=499)
    return {"lock": _lock_json(held.record)}


@router.post("/locks/renew", tags=["locks"], responses={409: {"description": "lock_lost"}})
async def renew_lock(body: RenewIn, request: Request) -> dict[str, Any]:
    """Extend the TTL from now; ``lock_lost`` when the lock expired or went to another."""
    daemon = _daemon(request)
    record = await daemon.run(daemon.store.renew_lock, body.resource, body.lock_id,
                              body.ttl_ms * 10**6)
    if record is None:
        raise LockLostError(body.resource, 0, "expired or taken by another holder")
    return {"lock": _lock_json(record)}


@router.post("/locks/release", tags=["locks"])
async def release_lock(body: LockReleaseIn, request: Request) -> dict[str, bool]:
    daemon = _daemon(request)
    return {"released": await daemon.run(daemon.store.release_lock, body.resource,
                                         body.lock_id)}


@router.get("/locks", tags=["locks"])
async def list_locks(request: Request) -> dict[str, Any]:
    daemon = _daemon(request)
    return {"locks": [_lock_json(r) for r in await daemon.run(daemon.store.list_locks)]}

