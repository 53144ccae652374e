"""TTL locks with fencing tokens over HTTP."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Request, Response
from pydantic import Field

from cross_instance.core.locking import LockRecord
from cross_instance.daemon.api.common import (
    Body,
    Name,
    daemon_of,
    router,
)
from cross_instance.daemon.disconnect import ClientGone, until_disconnect
from cross_instance.daemon.hosted import HostedSession
from cross_instance.daemon.replies import CLIENT_GONE
from cross_instance.errors import LockLostError


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

    locks = Locks(HostedSession(daemon_of(request).store, body.instance_id))
    ttl = body.ttl_ms / 1000
    if not body.wait:
        held = await daemon_of(request).run(locks.try_acquire, body.resource, ttl)
        return {"lock": None if held is None else _lock_json(held.record)}
    timeout = 300.0 if body.timeout_ms is None else body.timeout_ms / 1000
    try:
        held = await until_disconnect(locks.aacquire(body.resource, ttl, timeout),
                                      request.receive)
    except ClientGone:  # its place in the queue went back; nobody reads this answer, and
        return Response(status_code=CLIENT_GONE)  # it is not kept for a resend (``replies``)
    return {"lock": _lock_json(held.record)}


@router.post("/locks/renew", tags=["locks"], responses={409: {"description": "lock_lost"}})
async def renew_lock(body: RenewIn, request: Request) -> dict[str, Any]:
    """Extend the TTL from now; ``lock_lost`` when the lock expired or went to another."""
    daemon = daemon_of(request)
    record = await daemon.run(daemon.store.renew_lock, body.resource, body.lock_id,
                              body.ttl_ms * 10**6)
    if record is None:
        raise LockLostError(body.resource, None, "expired or taken by another holder")
    return {"lock": _lock_json(record)}


@router.post("/locks/release", tags=["locks"])
async def release_lock(body: LockReleaseIn, request: Request) -> dict[str, bool]:
    daemon = daemon_of(request)
    return {"released": await daemon.run(daemon.store.release_lock, body.resource,
                                         body.lock_id)}


@router.get("/locks", tags=["locks"])
async def list_locks(request: Request) -> dict[str, Any]:
    daemon = daemon_of(request)
    return {"locks": [_lock_json(r) for r in await daemon.run(daemon.store.list_locks)]}
