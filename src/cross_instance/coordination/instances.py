"""The instance registry as one runtime sees it: who is alive, what each publishes (pending
work, models in use), and the parallel shares of the original coordinator (seed 001).

The shares are advice an agent sizes its own work by; the limits themselves (the concurrency
cap, requests and tokens per minute) are enforced by the store on every permit.
"""

from __future__ import annotations

import builtins
from typing import TYPE_CHECKING, Any

from cross_instance.core import parallel
from cross_instance.core.arguments import check_int, check_name, check_seconds
from cross_instance.core.records import MAX_COUNT, InstanceRecord, Workload
from cross_instance.hostfacts import identity as hostinfo

if TYPE_CHECKING:
    from cross_instance.runtime.session import Session


class Instances:
    """``rt.instances``: the live instances sharing this runtime's store."""

    def __init__(self, session: Session, total_max_llm: int) -> None:
        self._session = session
        self._total = total_max_llm

    def list(self) -> builtins.list[InstanceRecord]:
        """Every registered instance not judged dead (by PID and start time on this host,
        by lease elsewhere)."""
        store = self._session.require_store()
        now = store.now_ns()
        return [r for r in store.list_instances() if not hostinfo.verdict(r, now).is_dead]

    def heartbeat(self) -> None:
        """Renew this instance's lease now (the runtime also does it in the background)."""
        self._session.require_membership().beat()

    def reap(self) -> builtins.list[str]:
        """Remove instances judged dead, freeing what they held; the ids removed."""
        return self._session.require_store().reap()

    def set_workload(self, pending_task_count: int, avg_latency_ms: float | None = None,
                     active_orchestrations: int = 0) -> None:
        """Publish this instance's pending work (read by ``dynamic_parallel_limit``)."""
        check_int("pending_task_count", pending_task_count, maximum=MAX_COUNT)
        check_seconds("avg_latency_ms", avg_latency_ms, unit="milliseconds")
        check_int("active_orchestrations", active_orchestrations, maximum=MAX_COUNT)
        membership = self._session.require_membership()
        membership.workload = Workload(pending_task_count, avg_latency_ms, active_orchestrations)
        self._session.require_store().heartbeat(self._session.instance_id, membership.workload)

    def use_model(self, provider: str, model: str) -> None:
        """Count one more use of ``provider``/``model`` by this instance."""
        _check_model(provider, model)
        self._session.require_store().set_active_model(self._session.instance_id, provider,
                                                       model, 1)

    def leave_model(self, provider: str, model: str) -> None:
        """Count one use fewer (never below zero)."""
        _check_model(provider, model)
        self._session.require_store().set_active_model(self._session.instance_id, provider,
                                                       model, -1)

    def clear_models(self) -> None:
        self._session.require_store().clear_active_models(self._session.instance_id)

    def using_model(self, provider: str, model: str) -> int:
        """How many live instances use ``provider``/``model`` now."""
        _check_model(provider, model)
        return sum(1 for r in self.list()
                   if any(p == provider and m == model and c > 0 for p, m, c in r.active_models))

    def parallel_limit(self) -> int:
        """This instance's share of ``totalMaxLlm``: ``max(1, floor(total / live))``,
        weighted by priority when priorities differ."""
        active = self.list()
        priorities = [r.priority for r in active]
        mine = next((r.priority for r in active if r.instance_id == self._session.instance_id),
                    1)
        if len(set(priorities)) <= 1:
            return parallel.my_parallel_limit(self._total, len(active))
        return parallel.weighted_share(self._total, mine, priorities)

    def dynamic_parallel_limit(self, my_pending_tasks: int) -> int:
        """``totalMaxLlm`` shared in proportion to published pending work (one slot for an
        instance with none)."""
        check_int("my_pending_tasks", my_pending_tasks)
        others = [r.workload.pending_tasks for r in self.list()
                  if r.instance_id != self._session.instance_id]
        return parallel.dynamic_parallel_limit(self._total, my_pending_tasks,
                                               [my_pending_tasks, *others])

    def model_parallel_limit(self, provider: str, model: str, base_limit: int) -> int:
        """``max(1, floor(base_limit / live instances using the model))``."""
        check_int("base_limit", base_limit, 1)
        return parallel.model_parallel_limit(base_limit,
                                             max(1, self.using_model(provider, model)))

    def model_usage(self) -> dict[str, Any]:
        """Which models the live instances use, and how many use each."""
        counts: dict[tuple[str, str], int] = {}
        active = self.list()
        for r in active:
            for p, m, c in r.active_models:
                if c > 0:
                    counts[(p, m)] = counts.get((p, m), 0) + 1
        return {"models": [{"provider": p, "model": m, "instanceCount": n}
                           for (p, m), n in sorted(counts.items())],
                "instances": [r.instance_id for r in active]}


def _check_model(provider: object, model: object) -> None:
    check_name("provider", provider, limit=64)
    check_name("model", model)
