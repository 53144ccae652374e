"""The original coordinator's registry and limit functions (seed 001) as ``Runtime`` methods,
under their snake_case names and with their documented meaning."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cross_instance.core import parallel
from cross_instance.core.arguments import check_int, check_name, check_seconds
from cross_instance.core.records import InstanceRecord, Workload
from cross_instance.hostfacts import identity as hostinfo

if TYPE_CHECKING:
    from cross_instance.config import Config
    from cross_instance.runtime.membership import Membership
    from cross_instance.stores.base import Store


def _check_model(provider: object, model: object) -> None:
    check_name("provider", provider, limit=64)
    check_name("model", model)


class SeedFunctions:
    """Mixed into ``Runtime``; relies on its config, instance id and store."""

    config: Config
    instance_id: str
    store: Store | None
    _membership: Membership | None
    closed: bool

    def _require_store(self) -> Store:
        raise NotImplementedError

    def _require_membership(self) -> Membership:
        raise NotImplementedError

    def update_heartbeat(self) -> None:
        self._require_membership().beat()

    def enhanced_heartbeat(self) -> None:
        """Seed ``enhancedHeartbeat``: a heartbeat, then the cleanup the original does with it,
        freeing locks past their TTL or held by dead instances (as ``cleanup_expired_locks``).
        The original also cleans its queue-state files; this runtime keeps no such files."""
        self._require_membership().beat()
        self._require_store().cleanup_expired_locks()

    def cleanup_dead_instances(self) -> list[str]:
        return self._require_store().reap()

    def get_active_instances(self) -> list[InstanceRecord]:
        store = self._require_store()
        now = store.now_ns()
        return [r for r in store.list_instances() if not hostinfo.verdict(r, now).is_dead]

    def get_active_instance_count(self) -> int:
        return len(self.get_active_instances())

    def get_total_max_llm(self) -> int:
        return self.config.total_max_llm

    def get_my_parallel_limit(self) -> int:
        active = self.get_active_instances()
        priorities = [r.priority for r in active]
        mine = next((r.priority for r in active if r.instance_id == self.instance_id), 1)
        if len(set(priorities)) <= 1:
            return parallel.my_parallel_limit(self.config.total_max_llm, len(active))
        return parallel.weighted_share(self.config.total_max_llm, mine, priorities)

    def update_workload_info(self, pending_task_count: int, avg_latency_ms: float | None = None,
                             active_orchestrations: int = 0) -> None:
        check_int("pending_task_count", pending_task_count)
        check_seconds("avg_latency_ms", avg_latency_ms, unit="milliseconds")
        check_int("active_orchestrations", active_orchestrations)
        membership = self._require_membership()
        membership.workload = Workload(pending_task_count, avg_latency_ms, active_orchestrations)
        self._require_store().heartbeat(self.instance_id, membership.workload)

    def get_dynamic_parallel_limit(self, my_pending_tasks: int) -> int:
        check_int("my_pending_tasks", my_pending_tasks)
        others = [r.workload.pending_tasks for r in self.get_active_instances()
                  if r.instance_id != self.instance_id]
        return parallel.dynamic_parallel_limit(self.config.total_max_llm, my_pending_tasks,
                                               [my_pending_tasks, *others])

    def set_active_model(self, provider: str, model: str) -> None:
        _check_model(provider, model)
        self._require_store().set_active_model(self.instance_id, provider, model, 1)

    def clear_active_model(self, provider: str, model: str) -> None:
        _check_model(provider, model)
        self._require_store().set_active_model(self.instance_id, provider, model, -1)

    def clear_all_active_models(self) -> None:
        self._require_store().clear_active_models(self.instance_id)

    def get_active_instances_for_model(self, provider: str, model: str) -> int:
        _check_model(provider, model)
        return sum(1 for r in self.get_active_instances()
                   if any(p == provider and m == model and c > 0 for p, m, c in r.active_models))

    def get_model_parallel_limit(self, provider: str, model: str, base_limit: int) -> int:
        check_int("base_limit", base_limit, 1)
        return parallel.model_parallel_limit(
            base_limit, max(1, self.get_active_instances_for_model(provider, model)))

    def get_model_usage_summary(self) -> dict[str, Any]:
        counts: dict[tuple[str, str], int] = {}
        active = self.get_active_instances()
        for r in active:
            for p, m, c in r.active_models:
                if c > 0:
                    counts[(p, m)] = counts.get((p, m), 0) + 1
        return {"models": [{"provider": p, "model": m, "instanceCount": n}
                           for (p, m), n in sorted(counts.items())],
                "instances": [r.instance_id for r in active]}

    def get_coordinator_status(self) -> dict[str, Any]:
        active = self.get_active_instances() if self.store is not None else []
        return {"registered": self._membership is not None and self._membership.registered,
                "myInstanceId": self.instance_id, "activeInstanceCount": len(active),
                "myParallelLimit": self.get_my_parallel_limit() if active else 1,
                "config": {"totalMaxLlm": self.config.total_max_llm,
                           "heartbeatIntervalMs": self.config.heartbeat_interval_ms,
                           "heartbeatTimeoutMs": self.config.heartbeat_timeout_ms},
                "instances": [r.instance_id for r in active]}

    def is_coordinator_initialized(self) -> bool:
        return not self.closed and self._membership is not None and self._membership.registered
