"""Registering, heartbeats and leaving: an instance of any language joins the store."""

from __future__ import annotations

import os
from typing import Annotated

from fastapi import Request
from pydantic import BaseModel, Field

from cross_instance.config.rules import instance_id_problem
from cross_instance.core.records import MAX_COUNT, Workload
from cross_instance.daemon.api.common import (
    Body,
    Name,
    daemon_of,
    hosted_for,
    router,
)
from cross_instance.daemon.hosted import hosted_of, http_instance
from cross_instance.daemon.state import Daemon
from cross_instance.errors import InvalidArgument, NotRegisteredError


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
    daemon = daemon_of(request)
    cfg = daemon.config
    iid = body.instance_id or f"http-{os.urandom(6).hex()}"
    problem = instance_id_problem(iid)
    if problem is not None:
        raise InvalidArgument(f"instanceId: {problem}")
    client = request.client.host if request.client else "unknown"
    policy = cfg.policy_for(iid)
    lease_ms = body.lease_ms or cfg.heartbeat_timeout_ms
    record = http_instance(cfg, iid, client, lease_ms, host=body.host, pid=body.pid,
                           session_id=body.session_id, cwd=body.cwd)
    await daemon.call(daemon.store.register_instance, record)
    hosted_for(request).forget(iid)
    daemon.log("Instance %s registered over HTTP from %s", iid, client)
    return InstanceOut(instanceId=iid, leaseMs=lease_ms,
                       heartbeatIntervalMs=min(cfg.heartbeat_interval_ms, lease_ms // 3),
                       priority=policy.priority, reservedCapacity=policy.reserved_capacity)


@router.post("/instances/heartbeat", tags=["instances"])
async def heartbeat(body: HeartbeatIn, request: Request) -> dict[str, bool]:
    """Renew the lease; ``not_registered`` (404) when the instance was judged dead: register
    again, its permits are gone."""
    return await instance_heartbeat(daemon_of(request), body, None)


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
    daemon = daemon_of(request)
    await daemon.call(daemon.store.unregister_instance, body.instance_id)
    hosted_for(request).forget(body.instance_id)
    hosted_for(request).freed()
    return {"ok": True}
