"""Workflow ownership over HTTP: claim, check, release, fenced state."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Request
from pydantic import Field

from cross_instance.daemon.api.common import (
    Body,
    Name,
    daemon_of,
    router,
)
from cross_instance.daemon.hosted import HostedSession
from cross_instance.errors import InvalidArgument


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

    return Workflows(HostedSession(daemon_of(request).store, instance_id))


@router.post("/workflows/claim", tags=["workflows"],
             responses={409: {"description": "workflow_owned_by_other (the seed's payload)"}})
async def claim_workflow(body: ClaimIn, request: Request) -> dict[str, Any]:
    """Claim a workflow (a dead owner's is taken when ``autoClaim``); ``force`` ``dead`` or
    ``live`` is a force-claim. The ``epoch`` fences every later state write."""
    wf = _workflows(request, body.instance_id)
    if body.force == "no":
        held = await daemon_of(request).run(wf.claim, body.workflow_id, body.auto_claim)
    else:
        held = await daemon_of(request).run(wf.force_claim, body.workflow_id,
                                          body.force == "live")
    return {"workflowId": body.workflow_id, "epoch": held.epoch, "action": held.action}


@router.post("/workflows/check", tags=["workflows"])
async def check_workflow(body: CheckIn, request: Request) -> dict[str, Any]:
    """Seed 002's check (claims a free or dead-owned workflow when ``autoClaim``)."""
    wf = _workflows(request, body.instance_id)
    return await daemon_of(request).run(wf.check, body.workflow_id, body.auto_claim)


@router.post("/workflows/release", tags=["workflows"])
async def release_workflow(body: WorkflowReleaseIn, request: Request) -> dict[str, bool]:
    wf = _workflows(request, body.instance_id)
    return {"released": await daemon_of(request).run(wf.release, body.workflow_id)}


@router.post("/workflows/state/write", tags=["workflows"],
             responses={409: {"description": "stale_epoch"}})
async def write_state(body: StateWriteIn, request: Request) -> dict[str, bool]:
    """A fenced write: applied only while ``instanceId`` owns the workflow at ``epoch``.
    ``values`` is JSON a store gives back as it was: no lone surrogates, no NaN or
    infinities, integers within 64 bits."""
    from cross_instance.core.jsonvalues import unstorable

    wrong = unstorable(body.values)
    if wrong is not None:
        raise InvalidArgument(f"values holds {wrong}")
    wf = _workflows(request, body.instance_id)
    await daemon_of(request).run(wf.write_state, body.workflow_id, body.epoch, body.values)
    return {"ok": True}


@router.post("/workflows/state/read", tags=["workflows"])
async def read_state(body: WorkflowIn, request: Request) -> dict[str, Any]:
    daemon = daemon_of(request)
    return {"values": await daemon.run(daemon.store.read_workflow_state, body.workflow_id)}


@router.get("/workflows", tags=["workflows"])
async def list_workflows(request: Request) -> dict[str, Any]:
    daemon = daemon_of(request)
    records = await daemon.run(daemon.store.list_workflows)
    return {"workflows": [{
        "workflowId": w.workflow_id, "epoch": w.epoch,
        "ownerInstanceId": w.owner.instance_id if w.owner else None,
        "claimedAt": w.claimed_wall_ms, "updatedAt": w.updated_wall_ms} for w in records]}
