"""Parallel-limit formulas of the coordinator (seed 001), pure.

Promises: every result is >= 1; shares never add up to more than ``total`` unless there are more
instances than slots (each still gets one, and the global cap is enforced by the store anyway).
"""

from __future__ import annotations

from collections.abc import Sequence


def my_parallel_limit(total: int, active: int) -> int:
    """``max(1, floor(total / active))`` (seed: getMyParallelLimit)."""
    return max(1, total // max(1, active))


def weighted_share(total: int, my_priority: int, priorities: Sequence[int]) -> int:
    """This instance's share of ``total`` slots, proportional to its priority among
    ``priorities`` (all live instances, itself included). Equal priorities share equally."""
    return share_of_weight(total, my_priority, sum(priorities))


def share_of_weight(total: int, my_priority: int, weight: int) -> int:
    """``weighted_share`` with the priorities' sum given (summed once for every instance)."""
    return max(1, total * my_priority // (weight or 1))


def dynamic_parallel_limit(total: int, my_pending: int, all_pending: Sequence[int]) -> int:
    """Slots in proportion to published pending work (seed: getDynamicParallelLimit).

    An instance with no pending work keeps one slot; the rest goes to those with work, in
    proportion to their queues. With no work published anywhere, it is the equal share.
    """
    demand = sum(max(0, p) for p in all_pending)
    if demand <= 0:
        return my_parallel_limit(total, len(all_pending))
    busy = sum(1 for p in all_pending if p > 0)
    idle = len(all_pending) - busy
    spare = max(busy, total - idle)
    return max(1, spare * max(0, my_pending) // demand)


def model_parallel_limit(base_limit: int, instances_using_model: int) -> int:
    """``base_limit`` split among the instances using the model (seed: getModelParallelLimit)."""
    return max(1, base_limit // max(1, instances_using_model))
