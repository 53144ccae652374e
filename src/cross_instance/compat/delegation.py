"""The ownership guard of seed 002's delegation tools (``subagent_run``,
``subagent_run_parallel``, ``subagent_run_dag``, ``agent_team_run``,
``agent_team_run_parallel``, ``loop_run``), for any tool in any framework.

Given the call's ``ul_task_id`` (``ulTaskId``), ``guard`` returns None when the tool may run
(this instance owns the workflow, or claimed it because it was free or its owner is dead), and
otherwise the seed's tool result, unchanged in names and fields, for the tool to return as is::

    {"content": [{"type": "text",
                  "text": "error: UL workflow <id> is owned by another instance (<owner>)."}],
     "details": {"error": "ul_workflow_not_owned", "ulTaskId": ..., "ownerInstanceId": ...,
                 "ownerPid": ..., "outcomeCode": "NONRETRYABLE_FAILURE", "retryRecommended": False}}
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from cross_instance.runtime import Runtime

DELEGATION_TOOLS = ("subagent_run", "subagent_run_parallel", "subagent_run_dag",
                    "agent_team_run", "agent_team_run_parallel", "loop_run")
F = TypeVar("F", bound=Callable[..., Any])


def not_owned_result(task_id: str, owner_instance_id: str | None,
                     owner_pid: int | None) -> dict[str, Any]:
    """The seed's ``ul_workflow_not_owned`` tool result."""
    text = f"error: UL workflow {task_id} is owned by another instance ({owner_instance_id})."
    return {"content": [{"type": "text", "text": text}],
            "details": {"error": "ul_workflow_not_owned", "ulTaskId": task_id,
                        "ownerInstanceId": owner_instance_id, "ownerPid": owner_pid,
                        "outcomeCode": "NONRETRYABLE_FAILURE", "retryRecommended": False}}


def guard(rt: Runtime, ul_task_id: str | None, auto_claim: bool = True
          ) -> dict[str, Any] | None:
    """None when the tool may run for ``ul_task_id`` (no id: no check), else the error result."""
    if ul_task_id is None:
        return None
    check = rt.workflows.check(ul_task_id, auto_claim=auto_claim)
    if check["owned"]:
        return None
    return not_owned_result(ul_task_id, check["ownerInstanceId"], check["ownerPid"])


def guarded(rt: Runtime | Callable[[], Runtime], auto_claim: bool = True) -> Callable[[F], F]:
    """Decorate a tool function: a call with ``ul_task_id=`` or ``ulTaskId=`` runs only when
    ``guard`` allows it, and returns the error result otherwise."""

    def wrap(tool: F) -> F:
        @functools.wraps(tool)
        def checked(*args: Any, **kwargs: Any) -> Any:
            task = kwargs.get("ul_task_id", kwargs.get("ulTaskId"))
            runtime = rt() if callable(rt) else rt
            refused = guard(runtime, task, auto_claim)
            return refused if refused is not None else tool(*args, **kwargs)

        return checked  # type: ignore[return-value]

    return wrap


__all__ = ["DELEGATION_TOOLS", "guard", "guarded", "not_owned_result"]
