"""The original coordinator's API (seed 001) as module-level functions, for code ported from
it: one process-wide instance, registered by ``register_instance`` and used by the rest.

New code should hold a ``Runtime`` instead (``Runtime.start()``); these functions delegate to
the process's default one. Locks (``try_acquire_lock``, ``release_lock``,
``cleanup_expired_locks``) and seed 002's ownership functions (``check_ul_workflow_ownership``,
``ul_workflow_force_claim``, ...) are here too, and seed 001's work stealing
(``safe_steal_work`` returns the moved task).
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from cross_instance.compat import seed
from cross_instance.config import env_overrides, load_config
from cross_instance.coordination.locks import HeldLock
from cross_instance.coordination.queue import RunningTask
from cross_instance.coordination.workflows import Workflow
from cross_instance.core.arguments import show
from cross_instance.core.modelmatch import matches_model_pattern
from cross_instance.core.records import InstanceRecord
from cross_instance.errors import InvalidArgument, LockRequestError, NotRegisteredError
from cross_instance.runtime import Runtime

if TYPE_CHECKING:
    from cross_instance.coordination.events import Subscription

__all__ = [
    "broadcast_queue_state",
    "check_ul_workflow_ownership",
    "claim_workflow",
    "cleanup_dead_instances",
    "cleanup_expired_locks",
    "cleanup_queue_states",
    "clear_active_model",
    "clear_all_active_models",
    "enhanced_heartbeat",
    "find_steal_candidate",
    "get_active_instance_count",
    "get_active_instances",
    "get_active_instances_for_model",
    "get_coordinator_status",
    "get_dynamic_parallel_limit",
    "get_env_overrides",
    "get_model_parallel_limit",
    "get_model_usage_summary",
    "get_my_parallel_limit",
    "get_remote_queue_states",
    "get_stealing_stats",
    "get_total_max_llm",
    "get_work_stealing_candidates",
    "get_work_stealing_summary",
    "is_coordinator_initialized",
    "matches_model_pattern",
    "register_instance",
    "release_lock",
    "release_workflow",
    "reset_stealing_stats",
    "safe_steal_work",
    "set_active_model",
    "should_attempt_work_stealing",
    "steal_work",
    "subscribe_coordinator_events",
    "try_acquire_lock",
    "ul_workflow_force_claim",
    "unregister_instance",
    "update_heartbeat",
    "update_workload_info",
]

_lock = threading.Lock()
_default: Runtime | None = None

_OVERRIDABLE = {"totalMaxLlm": "total_max_llm", "heartbeatIntervalMs": "heartbeat_interval_ms",
                "heartbeatTimeoutMs": "heartbeat_timeout_ms"}


def register_instance(session_id: str | None = None, cwd: str | None = None,
                      config_overrides: Mapping[str, int] | None = None) -> Runtime:
    """Register this process and start its heartbeat (once; later calls return the same
    runtime). ``config_overrides`` takes the seed's keys: totalMaxLlm, heartbeatIntervalMs,
    heartbeatTimeoutMs."""
    global _default
    with _lock:
        if _default is not None and not _default.closed:
            return _default
        where = cwd if cwd is not None else os.getcwd()
        config = load_config(where)
        changes: dict[str, Any] = {}
        if config_overrides is not None and not isinstance(config_overrides, Mapping):
            raise InvalidArgument(f"config_overrides must be a mapping of setting names to "
                                  f"values, or None (got {show(config_overrides)})")
        for key, value in (config_overrides or {}).items():
            if key not in _OVERRIDABLE:
                raise InvalidArgument(f"config_overrides: unknown key {key!r} "
                                 f"(allowed: {', '.join(_OVERRIDABLE)})")
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidArgument(f"config_overrides: {key} must be a positive integer "
                                 f"(got {value!r})")
            changes[_OVERRIDABLE[key]] = value
        config = dataclasses.replace(config, **changes)
        _default = Runtime.start(cwd=where, config=config, session_id=session_id)
        return _default


def unregister_instance() -> None:
    """Unregister this process (frees everything it holds). Idempotent."""
    global _default
    with _lock:
        if _default is not None:
            _default.close()
        _default = None


def _rt() -> Runtime:
    if _default is None or _default.closed:
        raise NotRegisteredError("call register_instance() first")
    return _default


def is_coordinator_initialized() -> bool:
    return _default is not None and seed.is_coordinator_initialized(_default)


def get_env_overrides() -> dict[str, object]:
    return env_overrides(os.environ)


def subscribe_coordinator_events(**callbacks: Any) -> Subscription:
    """The guide's ``subscribe_coordinator_events``: ``rt.events.subscribe(**callbacks)`` of
    the process's instance, callbacks as keywords (``on_rate_limit_warning=...``,
    ``on_instance_connected=...``); each gets the event (``docs/events.md``)."""
    return _rt().events.subscribe(**callbacks)


def update_heartbeat() -> None:
    _rt().instances.heartbeat()


def enhanced_heartbeat() -> None:
    seed.enhanced_heartbeat(_rt())


def cleanup_dead_instances() -> list[str]:
    return _rt().instances.reap()


def get_active_instances() -> list[InstanceRecord]:
    return _rt().instances.list()


def get_active_instance_count() -> int:
    return seed.get_active_instance_count(_rt())


def get_total_max_llm() -> int:
    return _rt().config.total_max_llm if _default is not None else load_config().total_max_llm


def get_my_parallel_limit() -> int:
    return _rt().instances.parallel_limit()


def get_dynamic_parallel_limit(my_pending_tasks: int) -> int:
    return _rt().instances.dynamic_parallel_limit(my_pending_tasks)


def update_workload_info(pending_task_count: int, avg_latency_ms: float | None = None) -> None:
    _rt().instances.set_workload(pending_task_count, avg_latency_ms)


def get_coordinator_status() -> dict[str, Any]:
    if _default is None or _default.closed:
        return {"registered": False, "myInstanceId": None, "activeInstanceCount": 0,
                "myParallelLimit": 1, "config": None, "instances": []}
    return seed.get_coordinator_status(_default)


def set_active_model(provider: str, model: str) -> None:
    _rt().instances.use_model(provider, model)


def clear_active_model(provider: str, model: str) -> None:
    _rt().instances.leave_model(provider, model)


def clear_all_active_models() -> None:
    _rt().instances.clear_models()


def get_active_instances_for_model(provider: str, model: str) -> int:
    return _rt().instances.using_model(provider, model)


def get_model_parallel_limit(provider: str, model: str, base_limit: int) -> int:
    return _rt().instances.model_parallel_limit(provider, model, base_limit)


def get_model_usage_summary() -> dict[str, Any]:
    return _rt().instances.model_usage()


def check_ul_workflow_ownership(ul_task_id: str, auto_claim: bool = True) -> dict[str, Any]:
    """Seed 002's ``checkUlWorkflowOwnership``: ``owned`` plus the blocking owner, if any."""
    return _rt().workflows.check(ul_task_id, auto_claim=auto_claim)


def claim_workflow(ul_task_id: str, auto_claim: bool = True) -> Workflow:
    return _rt().workflows.claim(ul_task_id, auto_claim=auto_claim)


def ul_workflow_force_claim(ul_task_id: str, allow_live: bool = False) -> Workflow:
    """Seed 002's ``ul_workflow_force_claim`` (= ``rt.workflows.force_claim``)."""
    return _rt().workflows.force_claim(ul_task_id, allow_live=allow_live)


def release_workflow(ul_task_id: str) -> bool:
    return _rt().workflows.release(ul_task_id)


def try_acquire_lock(resource: str, ttl_ms: int) -> HeldLock | None:
    """Seed 001's ``tryAcquireLock(resource, ttlMs)``."""
    if isinstance(ttl_ms, bool) or not isinstance(ttl_ms, int | float):
        raise LockRequestError(f"ttl_ms must be a number of milliseconds (got {show(ttl_ms)})")
    return _rt().locks.try_acquire(resource, ttl_ms / 1000)


def release_lock(lock: HeldLock) -> None:
    """Seed 001's ``releaseLock(lock)``."""
    _rt().locks.release(lock)


def cleanup_expired_locks() -> None:
    """Seed 001's ``cleanupExpiredLocks()``."""
    _rt().locks.cleanup_expired()


# --- work stealing (seed 001): the task moves here, in one atomic store step ---------------
def broadcast_queue_state() -> None:
    _rt().queue.broadcast_queue_state()


def get_remote_queue_states() -> list[dict[str, Any]]:
    """The seed's ``BroadcastQueueState`` of every live instance."""
    return [s.to_json() for s in _rt().queue.get_remote_queue_states()]


def should_attempt_work_stealing() -> bool:
    return _rt().queue.should_attempt_work_stealing()


def get_work_stealing_candidates(top_n: int = 3) -> list[str]:
    return _rt().queue.get_work_stealing_candidates(top_n)


def find_steal_candidate() -> str | None:
    return _rt().queue.find_steal_candidate()


def safe_steal_work() -> RunningTask | None:
    """A queued task of the busiest instance, moved to this one and started (or None)."""
    return _rt().queue.safe_steal_work()


steal_work = safe_steal_work


def get_work_stealing_summary() -> dict[str, int]:
    return _rt().queue.get_work_stealing_summary()


def get_stealing_stats() -> dict[str, Any]:
    """The seed's ``StealingStats`` of this instance."""
    return _rt().queue.get_stealing_stats().to_json()


def reset_stealing_stats() -> None:
    _rt().queue.reset_stealing_stats()


def cleanup_queue_states() -> list[str]:
    return _rt().queue.cleanup_queue_states()
