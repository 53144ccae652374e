"""Permits over HTTP: acquire (a long-poll in the store's queue), release, report."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import Request, Response
from pydantic import BaseModel, Field

from cross_instance.daemon.api.common import (
    Body,
    Name,
    RequestId,
    daemon_of,
    router,
)
from cross_instance.daemon.hosted import grant_json, hosted_of
from cross_instance.daemon.state import Daemon


class AcquireIn(Body):
    instance_id: Name
    provider: Annotated[str, Field(min_length=1, max_length=64)]
    model: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    tokens: Annotated[int, Field(ge=0, le=10**9)] | None = None
    timeout_ms: Annotated[int, Field(ge=0, le=300_000)] = 30_000
    release: Annotated[list[Annotated[int, Field(ge=1, lt=2**63)]],
                       Field(max_length=1000, default_factory=list)]
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
    return Response(json.dumps(await permit_acquire(daemon_of(request), body, request_id),
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
    return await permit_release(daemon_of(request), body, None)


async def permit_release(daemon: Daemon, body: ReleaseIn, request_id: str | None
                         ) -> dict[str, int]:
    return {"released": await hosted_of(daemon).release(body.instance_id, body.permit_ids)}


@router.post("/permits/report", tags=["permits"])
async def report(body: ReportIn, request: Request) -> dict[str, bool]:
    """What the call made under a permit met: HTTP ``status``, response ``headers`` (rate-limit
    headers, ``retry-after``), ``usageTokens`` actually used. 429s and stated limits are shared
    with every instance at once."""
    return await permit_report(daemon_of(request), body, None)


async def permit_report(daemon: Daemon, body: ReportIn, request_id: str | None
                        ) -> dict[str, bool]:
    known = await hosted_of(daemon).report(body.instance_id, body.permit_id, body.status,
                                           body.headers, body.usage_tokens, body.body)
    return {"applied": known}
