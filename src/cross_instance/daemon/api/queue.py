"""The shared work queue over HTTP: put, take, steal, renew, complete, fail, and the views.

What a worker in any language does: ``put`` tasks on its instance's queue, ``take`` the next
one (its own or the shared pool's) under a lease, ``renew`` the lease while it runs, then
``complete`` or ``fail`` it showing the run's ``fence``. A worker whose lease ran out (or
whose task was settled already) gets ``task_lost`` (409) and must drop the task: it went
back to the queue, and another run holds it now. An idle instance may ``steal`` the next
queued task of the busiest one. The rules are ``core.workqueue``'s, applied by the store.

Payloads, results and errors are any JSON value a store gives back as it was (no NaN or
infinities, no lone surrogates, integers within 64 bits, at most 100 levels deep:
``core.jsonvalues``).
A ``put`` without ``taskId`` gets a new id; sent again with the same ``X-Pi-Request-Id`` it
is the same task, as is a put of a ``taskId`` the store holds already.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import HTTPException, Query, Request
from pydantic import Field
from starlette.convertors import Convertor, register_url_convertor

from cross_instance.coordination.queue import new_task_id
from cross_instance.core.jsonvalues import to_text as json_text
from cross_instance.core.workqueue import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MIN_QUEUED,
    MAX_ATTEMPTS_BOUND,
    MAX_PRIORITY,
    MAX_TASK_ID,
    MAX_TOOL_NAME,
    MIN_PRIORITY,
    Task,
    total_stealing,
)
from cross_instance.core.workqueue import Outcome as TaskOutcome
from cross_instance.daemon.api.common import Body, Name, daemon_of, router
from cross_instance.errors import InvalidArgument, TaskLostError

MAX_LIST = 10_000  # tasks in one answer of GET /v1/queue/tasks
DAY_MS = 86_400_000

TaskId = Annotated[str, Field(min_length=1, max_length=MAX_TASK_ID)]
LeaseMs = Annotated[int, Field(ge=1, le=DAY_MS)]
Fence = Annotated[int, Field(ge=0, lt=2**63)]
_CAMEL = {"task_id": "taskId", "tool_name": "toolName", "max_attempts": "maxAttempts"}


class QueuePutIn(Body):
    instance_id: Name
    payload: Any
    tool_name: Annotated[str, Field(max_length=MAX_TOOL_NAME)] = ""
    priority: Annotated[int, Field(ge=MIN_PRIORITY, le=MAX_PRIORITY)] = 0
    task_id: TaskId | None = None
    max_attempts: Annotated[int, Field(ge=1, le=MAX_ATTEMPTS_BOUND)] = DEFAULT_MAX_ATTEMPTS


class QueueTakeIn(Body):
    instance_id: Name
    lease_ms: LeaseMs = 30_000


class QueueStealIn(Body):
    instance_id: Name
    lease_ms: LeaseMs = 30_000
    min_queued: Annotated[int, Field(ge=0, le=1_000_000)] = DEFAULT_MIN_QUEUED


class QueueRenewIn(Body):
    task_id: TaskId
    fence: Fence
    lease_ms: LeaseMs = 30_000


class QueueCompleteIn(Body):
    task_id: TaskId
    fence: Fence
    result: Any = None


class QueueFailIn(Body):
    task_id: TaskId
    fence: Fence
    error: Any = None
    retry: bool = False


class QueueStatsResetIn(Body):
    instance_id: Name | None = None


def _lost_reason(task: Task | None, fence: int) -> str:
    """Why a run's fence no longer holds its task (read after the refusal: for the message)."""
    if task is None:
        return "no such task"
    if task.state in ("done", "failed"):
        return f"it was settled already ({task.state})"
    if task.state == "running" and task.fence != fence:
        return f"another run (fence {task.fence}) holds it now"
    if task.state == "running":
        return "its lease ran out"
    return "its lease ran out: it went back to the queue"


async def _task_lost(request: Request, task_id: str, fence: int) -> TaskLostError:
    """``task_lost`` (409, with ``taskId``, ``fence`` and ``reason``) for a refused run."""
    daemon = daemon_of(request)
    reason = _lost_reason(await daemon.run(daemon.store.get_task, task_id), fence)
    return TaskLostError(task_id, fence, reason)


@router.post("/queue/put", tags=["queue"])
async def put_task(body: QueuePutIn, request: Request) -> dict[str, Any]:
    """Queue a task on ``instanceId``'s queue (a registered instance), after every task of
    its ``priority`` (-1000..1000, higher first) queued before it. A ``taskId`` the store
    holds already is not queued again: that task is the answer."""
    payload = json_text("payload", body.payload)
    task_id = body.task_id if body.task_id is not None else new_task_id()
    daemon = daemon_of(request)
    try:
        task = await daemon.run(daemon.store.put_task, body.instance_id, task_id,
                                body.tool_name, body.priority, payload, body.max_attempts)
    except InvalidArgument as err:  # the store's check, named as this API names it
        name, _, rest = str(err).partition(" ")
        raise InvalidArgument(f"{_CAMEL.get(name, name)} {rest}") from None
    return {"task": task.to_json()}


@router.post("/queue/take", tags=["queue"])
async def take_task(body: QueueTakeIn, request: Request) -> dict[str, Any]:
    """Start the next queued task of ``instanceId``'s queue or the shared pool under a lease
    of ``leaseMs``; ``{"task": null}`` when both are empty. Keep the ``fence``: renewing,
    completing and failing need it."""
    daemon = daemon_of(request)
    task = await daemon.run(daemon.store.take_task, body.instance_id, body.lease_ms * 10**6)
    return {"task": None if task is None else task.to_json()}


@router.post("/queue/steal", tags=["queue"])
async def steal_task(body: QueueStealIn, request: Request) -> dict[str, Any]:
    """Move the next queued task of the busiest other instance (more than ``minQueued``
    queued) to ``instanceId`` and start it there; ``{"task": null}`` when none is that busy.
    Counted in ``instanceId``'s stealing stats either way."""
    daemon = daemon_of(request)
    task = await daemon.run(daemon.store.steal_task, body.instance_id, body.lease_ms * 10**6,
                            body.min_queued)
    return {"task": None if task is None else task.to_json()}


@router.post("/queue/renew", tags=["queue"], responses={409: {"description": "task_lost"}})
async def renew_task(body: QueueRenewIn, request: Request) -> dict[str, Any]:
    """Extend the run's lease to now + ``leaseMs``; ``task_lost`` when the run is over."""
    daemon = daemon_of(request)
    task = await daemon.run(daemon.store.renew_task, body.task_id, body.fence,
                            body.lease_ms * 10**6)
    if task is None:
        raise await _task_lost(request, body.task_id, body.fence)
    return {"task": task.to_json()}


async def _settle(request: Request, task_id: str, fence: int, outcome: TaskOutcome,
                  text: str) -> dict[str, Any]:
    daemon = daemon_of(request)
    task = await daemon.run(daemon.store.settle_task, task_id, fence, outcome, text)
    if task is None:
        raise await _task_lost(request, task_id, fence)
    return {"task": task.to_json()}


@router.post("/queue/complete", tags=["queue"], responses={409: {"description": "task_lost"}})
async def complete_task(body: QueueCompleteIn, request: Request) -> dict[str, Any]:
    """The run holding ``fence`` is done with ``result``; sent again, the same answer.
    ``task_lost`` when that run no longer holds the task."""
    return await _settle(request, body.task_id, body.fence, "done",
                         json_text("result", body.result))


@router.post("/queue/fail", tags=["queue"], responses={409: {"description": "task_lost"}})
async def fail_task(body: QueueFailIn, request: Request) -> dict[str, Any]:
    """The run holding ``fence`` failed with ``error``: the task fails, or with ``retry``
    goes back to the queue while it has runs left. ``task_lost`` as for complete."""
    return await _settle(request, body.task_id, body.fence, "retry" if body.retry else "failed",
                         json_text("error", body.error))


@router.get("/queue/tasks", tags=["queue"])
async def list_tasks(request: Request, owner: str | None = None,
                     state: Literal["queued", "running", "done", "failed"] | None = None,
                     limit: Annotated[int, Query(ge=1, le=MAX_LIST)] = 100) -> dict[str, Any]:
    """Up to ``limit`` tasks (of ``owner`` when given, ``owner=`` empty: the shared pool; in
    ``state`` when given): queued ones in run order, running ones by lease end, done and
    failed ones the latest first."""
    daemon = daemon_of(request)
    tasks = await daemon.run(daemon.store.list_tasks, owner, state, limit)
    return {"tasks": [t.to_json() for t in tasks]}


class AnyText(Convertor[str]):
    """A path parameter holding any text: ``/`` and line breaks too (``path`` stops at a
    line break, and a task id may hold one)."""

    regex = r"[\s\S]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("anytext", AnyText())


@router.get("/queue/tasks/{task_id:anytext}", tags=["queue"],
            responses={404: {"description": "not_found: no such task"}})
async def get_task(task_id: str, request: Request) -> dict[str, Any]:
    """One task (its id percent-encoded in the path as UTF-8; ``/`` and line breaks
    allowed)."""
    daemon = daemon_of(request)
    task = await daemon.run(daemon.store.get_task, task_id)
    if task is None:
        raise HTTPException(404, f"no task {task_id!r}")
    return {"task": task.to_json()}


@router.get("/queue/stats", tags=["queue"])
async def queue_stats(request: Request) -> dict[str, Any]:
    """Per instance that ever held a task (and the shared pool, ``instanceId`` ""): tasks
    queued, running, done and failed, and its stealing; ``stealing``: every thief's added
    up (the seed's names)."""
    daemon = daemon_of(request)
    counts = await daemon.run(daemon.store.queue_counts)
    return {"instances": [c.to_json() for c in counts],
            "stealing": total_stealing(counts).to_json()}


@router.post("/queue/stats/reset", tags=["queue"])
async def reset_stats(body: QueueStatsResetIn, request: Request) -> dict[str, bool]:
    """Zero the stealing stats of ``instanceId``, or of every instance without it."""
    daemon = daemon_of(request)
    await daemon.run(daemon.store.reset_stealing_stats, body.instance_id)
    return {"ok": True}
