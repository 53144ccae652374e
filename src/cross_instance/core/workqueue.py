"""The shared work queue's decisions, pure: which task runs or is stolen next, who may steal
from whom, what happens to a task whose worker lost its lease, and the stealing statistics.

Why here and not in each store: the SQLite store, the Redis functions and the daemon must
agree on every one of these choices (a task stolen by one store's rule and not by another's
would be run twice or never), so the rules are written once and the stores' tests hold them
to these functions.

Promises:

- **Order.** A worker takes, and a thief steals, the queued task of highest priority, then the
  oldest, then the smallest id (``run_order``): a total order, the same in every store.
- **Only queued tasks move.** A running task is never a candidate (``next_task``); it is the
  lease's to keep or lose.
- **Stealing is for the idle.** An instance with nothing queued or running may steal
  (``should_attempt_work_stealing``) from a live instance with more than ``min_queued`` tasks
  queued; the busiest first (``steal_candidates``: most queued, then least recently stolen
  from, then id).
- **Nothing lost.** A task whose worker's lease ran out goes back to the queue with one more
  attempt, or is failed once it has had ``max_attempts`` (``after_lost_lease``); the fencing
  token moves on either way, so the old worker can complete nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal

TaskState = Literal["queued", "running", "done", "failed"]
STATES: tuple[TaskState, ...] = ("queued", "running", "done", "failed")
DEFAULT_MIN_QUEUED = 2  # a victim must have more than this many tasks queued
DEFAULT_MAX_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class Task:
    """One task of the queue. ``owner``: the instance whose queue holds it (a thief becomes
    its owner). ``fence``: the fencing token of its current run (0 before the first), which
    ``complete``/``fail`` must show. ``lease_until_ns``: on the store's clock, while running.
    ``payload``, ``result`` and ``error`` are JSON text."""

    task_id: str
    owner: str
    tool_name: str
    priority: int
    payload: str
    enqueued_wall_ms: int
    seq: int  # the store's enqueue counter: ties of the same millisecond keep their order
    attempts: int = 0
    state: TaskState = "queued"
    fence: int = 0
    lease_until_ns: int | None = None
    result: str | None = None
    error: str | None = None

    def stealable_entry(self) -> dict[str, Any]:
        """The seed's ``StealableQueueEntry`` (priority as text, as it was there)."""
        return {"id": self.task_id, "toolName": self.tool_name, "priority": str(self.priority),
                "instanceId": self.owner, "enqueuedAt": _iso(self.enqueued_wall_ms)}


def run_order(task: Task) -> tuple[int, int, int, str]:
    """Sort key: highest priority first, then the oldest, then the smallest id."""
    return (-task.priority, task.enqueued_wall_ms, task.seq, task.task_id)


def next_task(tasks: Iterable[Task]) -> Task | None:
    """The queued task to take or steal next (running, done and failed ones never)."""
    queued = [t for t in tasks if t.state == "queued"]
    return min(queued, key=run_order) if queued else None


@dataclass(frozen=True, slots=True)
class QueueState:
    """What an instance publishes about its queue with its heartbeat (the seed's
    ``BroadcastQueueState``). ``running``: tasks it runs now; ``stolen_from_ms``: when a
    thief last took one of its tasks (0: never)."""

    instance_id: str
    pending: int
    running: int
    avg_latency_ms: float | None
    active_orchestrations: int
    wall_ms: int
    stolen_from_ms: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"instanceId": self.instance_id, "timestamp": _iso(self.wall_ms),
                "pendingTaskCount": self.pending, "runningTaskCount": self.running,
                "avgLatencyMs": self.avg_latency_ms,
                "activeOrchestrations": self.active_orchestrations}


def should_attempt_work_stealing(mine: QueueState, others: Sequence[QueueState],
                                 min_queued: int = DEFAULT_MIN_QUEUED) -> bool:
    """Idle (nothing queued, nothing running) while some other live instance has more than
    ``min_queued`` tasks queued."""
    if mine.pending or mine.running:
        return False
    return any(s.pending > min_queued for s in others if s.instance_id != mine.instance_id)


def steal_candidates(me: str, states: Sequence[QueueState], top_n: int | None = None,
                     min_queued: int = DEFAULT_MIN_QUEUED) -> list[str]:
    """The instances worth stealing from, busiest first (the seed's
    ``getWorkStealingCandidates``): more than ``min_queued`` queued; ties go to the one
    stolen from longest ago, then by id."""
    victims = sorted((s for s in states if s.instance_id != me and s.pending > min_queued),
                     key=lambda s: (-s.pending, s.stolen_from_ms, s.instance_id))
    names = [s.instance_id for s in victims]
    return names if top_n is None else names[:max(top_n, 0)]


def after_lost_lease(task: Task, max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> Task:
    """A running task whose worker's lease ran out (or whose instance died): queued again
    with one more attempt, or failed once it has had ``max_attempts``. Its fence moves on
    (the next run's token is larger), so the worker that lost it can complete nothing."""
    if task.state != "running":
        return task
    attempts = task.attempts + 1
    if attempts >= max_attempts:
        return replace(task, attempts=attempts, state="failed", lease_until_ns=None,
                       fence=task.fence + 1,
                       error=task.error or '"lease lost on every attempt"')
    return replace(task, attempts=attempts, state="queued", lease_until_ns=None,
                   fence=task.fence + 1)


def may_settle(task: Task, fence: int) -> bool:
    """Whether a worker holding ``fence`` may complete or fail ``task``: it still runs it."""
    return task.state == "running" and task.fence == fence


@dataclass(frozen=True, slots=True)
class StealingStats:
    """Stealing counted across every instance (kept in the store); the seed's names."""

    total_attempts: int = 0
    successful_steals: int = 0
    failed_attempts: int = 0
    total_latency_ms: float = 0.0  # of the successful steals

    @property
    def success_rate(self) -> float:
        return self.successful_steals / self.total_attempts if self.total_attempts else 0.0

    @property
    def avg_latency_ms(self) -> float:
        return (self.total_latency_ms / self.successful_steals
                if self.successful_steals else 0.0)

    def counted(self, stolen: bool, latency_ms: float) -> StealingStats:
        """These stats with one more attempt."""
        if stolen:
            return replace(self, total_attempts=self.total_attempts + 1,
                           successful_steals=self.successful_steals + 1,
                           total_latency_ms=self.total_latency_ms + max(latency_ms, 0.0))
        return replace(self, total_attempts=self.total_attempts + 1,
                       failed_attempts=self.failed_attempts + 1)

    def to_json(self) -> dict[str, Any]:
        return {"totalAttempts": self.total_attempts,
                "successfulSteals": self.successful_steals,
                "failedAttempts": self.failed_attempts,
                "successRate": round(self.success_rate, 4),
                "avgLatencyMs": round(self.avg_latency_ms, 3)}


def stealing_summary(me: str, states: Sequence[QueueState],
                     min_queued: int = DEFAULT_MIN_QUEUED) -> dict[str, int]:
    """The seed's ``getWorkStealingSummary`` over the live instances' states."""
    remote = [s for s in states if s.instance_id != me]
    return {"remoteInstances": len(remote),
            "totalPendingTasks": sum(s.pending for s in remote),
            "stealableTasks": sum(s.pending for s in remote if s.pending > min_queued),
            "idleInstances": sum(1 for s in remote if not s.pending and not s.running),
            "busyInstances": sum(1 for s in remote if s.pending > min_queued)}


def _iso(wall_ms: int) -> str:
    return datetime.fromtimestamp(wall_ms / 1000, UTC).isoformat(timespec="milliseconds")
