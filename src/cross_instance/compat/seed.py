"""The original coordinator's method names on a ``Runtime`` (seed 001 and 002, snake_case),
built on the facade's parts: ``rt.claim_workflow(...)`` is ``rt.workflows.claim(...)``.

``Runtime`` forwards these names here, so code ported from the original (and code written
against earlier releases) keeps working unchanged. New code uses the parts; type checkers see
only the parts (the forwarded names are resolved at run time).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cross_instance.runtime.facade import Runtime

# old name -> (part, name on the part)
MOVED: dict[str, tuple[str, str]] = {
    # workflows (seed 002)
    "workflow": ("workflows", "hold"),
    "claim_workflow": ("workflows", "claim"),
    "force_claim_workflow": ("workflows", "force_claim"),
    "check_workflow_ownership": ("workflows", "check"),
    "release_workflow": ("workflows", "release"),
    "get_workflow": ("workflows", "get"),
    "write_workflow_state": ("workflows", "write_state"),
    # locks (seed 001)
    "try_acquire_lock": ("locks", "try_acquire"),
    "acquire_lock": ("locks", "acquire"),
    "aacquire_lock": ("locks", "aacquire"),
    "lock": ("locks", "hold"),
    "alock": ("locks", "ahold"),
    "release_lock": ("locks", "release"),
    "cleanup_expired_locks": ("locks", "cleanup_expired"),
    "list_locks": ("locks", "list"),
    # registry and shares (seed 001)
    "update_heartbeat": ("instances", "heartbeat"),
    "cleanup_dead_instances": ("instances", "reap"),
    "get_active_instances": ("instances", "list"),
    "get_my_parallel_limit": ("instances", "parallel_limit"),
    "update_workload_info": ("instances", "set_workload"),
    "get_dynamic_parallel_limit": ("instances", "dynamic_parallel_limit"),
    "set_active_model": ("instances", "use_model"),
    "clear_active_model": ("instances", "leave_model"),
    "clear_all_active_models": ("instances", "clear_models"),
    "get_active_instances_for_model": ("instances", "using_model"),
    "get_model_parallel_limit": ("instances", "model_parallel_limit"),
    "get_model_usage_summary": ("instances", "model_usage"),
    # the work queue and work stealing (seed 001)
    "broadcast_queue_state": ("queue", "broadcast_queue_state"),
    "get_remote_queue_states": ("queue", "get_remote_queue_states"),
    "should_attempt_work_stealing": ("queue", "should_attempt_work_stealing"),
    "get_work_stealing_candidates": ("queue", "get_work_stealing_candidates"),
    "find_steal_candidate": ("queue", "find_steal_candidate"),
    "steal_work": ("queue", "steal_work"),
    "safe_steal_work": ("queue", "safe_steal_work"),
    "get_work_stealing_summary": ("queue", "get_work_stealing_summary"),
    "get_stealing_stats": ("queue", "get_stealing_stats"),
    "reset_stealing_stats": ("queue", "reset_stealing_stats"),
    "cleanup_queue_states": ("queue", "cleanup_queue_states"),
    # monitoring (the user guide's subscribe_coordinator_events)
    "subscribe_coordinator_events": ("events", "subscribe"),
}


def enhanced_heartbeat(rt: Runtime) -> None:
    """Seed ``enhancedHeartbeat``: a heartbeat, then the cleanup the original does with it,
    freeing locks past their TTL or held by dead instances. The original also cleans its
    queue-state files; here the heartbeat's reap hands the queued work of dead instances on."""
    rt.instances.heartbeat()
    rt.locks.cleanup_expired()


def get_active_instance_count(rt: Runtime) -> int:
    return len(rt.instances.list())


def get_total_max_llm(rt: Runtime) -> int:
    return rt.config.total_max_llm


def get_coordinator_status(rt: Runtime) -> dict[str, Any]:
    """Seed ``getCoordinatorStatus``: registration, the live instances, this one's share."""
    active = rt.instances.list() if rt.store is not None else []
    membership = rt.session.membership
    return {"registered": membership is not None and membership.registered,
            "myInstanceId": rt.instance_id, "activeInstanceCount": len(active),
            "myParallelLimit": rt.instances.parallel_limit() if active else 1,
            "config": {"totalMaxLlm": rt.config.total_max_llm,
                       "heartbeatIntervalMs": rt.config.heartbeat_interval_ms,
                       "heartbeatTimeoutMs": rt.config.heartbeat_timeout_ms},
            "instances": [r.instance_id for r in active]}


def is_coordinator_initialized(rt: Runtime) -> bool:
    membership = rt.session.membership
    return not rt.closed and membership is not None and membership.registered


# old name -> function of the runtime, for the names that are not one part's method
COMPOSED: dict[str, Callable[..., Any]] = {
    "enhanced_heartbeat": enhanced_heartbeat,
    "get_active_instance_count": get_active_instance_count,
    "get_total_max_llm": get_total_max_llm,
    "get_coordinator_status": get_coordinator_status,
    "is_coordinator_initialized": is_coordinator_initialized,
}

NAMES = frozenset(MOVED) | frozenset(COMPOSED)


def resolve(rt: Runtime, name: str) -> Any:
    """The bound callable an old method name stands for on ``rt``; ``AttributeError`` for any
    other name (as a missing attribute would)."""
    moved = MOVED.get(name)
    if moved is not None:
        part, new = moved
        return getattr(getattr(rt, part), new)
    composed = COMPOSED.get(name)
    if composed is not None:
        return functools.partial(composed, rt)
    raise AttributeError(f"'Runtime' object has no attribute {name!r}")
