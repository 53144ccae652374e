"""The shared work queue's decisions, pure: which task runs or is stolen next, who may steal
from whom, what happens to a task whose worker lost its lease, and the stealing statistics.

Why here and not in each store: the SQLite store, the Redis functions and the daemon must
agree on every one of these choices (a task stolen by one store's rule and not by another's
would be run twice or never), so the rules are written once and the stores' tests hold them
to these functions.

Promises:

- **Order.** A worker takes, and a thief steals, the queued task of highest priority, then
  the first enqueued (``run_order``: the store's enqueue sequence, unique, so a total order,
  the same in every store; a wall clock that steps back changes nothing).
- **Only queued tasks move.** A running task is never a candidate (``next_task``); it is the
  lease's to keep or lose.
- **Stealing is for the idle.** An instance with nothing queued or running may steal
  (``should_attempt_work_stealing``) from a live instance with more than ``min_queued`` tasks
  queued; the busiest first (``steal_candidates``: most queued, then least recently stolen
  from, then id).
- **Runs are counted and fenced.** Every run (a take or a steal) adds one to ``attempts`` and
  to the fencing token (``start_run``); only the worker showing the current token may complete
  or fail it (``settle``), so a task is settled once even if it ran twice.
- **Nothing lost.** A task whose worker's lease ran out goes back to the queue, or is failed
  once it has had ``max_attempts`` runs (``after_lost_lease``); the fencing token moves on
  either way, so the old worker can complete nothing. The queued and running tasks of an
  instance that is gone go to the shared pool (owner ``ORPHANED``), from which every
  instance's ``take`` draws.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal

from cross_instance.core.arguments import is_unicode
from cross_instance.core.jsonvalues import check_text, shown
from cross_instance.errors import InvalidArgument

TaskState = Literal["queued", "running", "done", "failed"]
STATES: tuple[TaskState, ...] = ("queued", "running", "done", "failed")
Outcome = Literal["done", "failed", "retry"]
OUTCOMES: tuple[Outcome, ...] = ("done", "failed", "retry")
DEFAULT_MIN_QUEUED = 2  # a victim must have more than this many tasks queued
DEFAULT_MAX_ATTEMPTS = 3
ORPHANED = ""  # the owner of tasks whose instance is gone: every instance takes from it
MIN_PRIORITY, MAX_PRIORITY = -1000, 1000
MAX_TASK_ID = 256  # characters
MAX_TOOL_NAME = 256  # characters
MAX_TEXT = 1 << 20  # bytes of a payload, result or error (JSON text)
MAX_ATTEMPTS_BOUND = 1000
_SEQ_SPAN = 1 << 42  # enqueue sequence numbers below this keep ``queue_score`` exact


@dataclass(frozen=True, slots=True)
class QueueSettings:
    """The ``queue`` section of the config: a run's lease (renewed in the background while
    it runs), the runs a task gets before it fails, how many queued tasks an instance must
    hold before others steal from it, and whether an idle instance steals at all."""

    lease_ms: int = 30_000
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    min_queued: int = DEFAULT_MIN_QUEUED
    steal: bool = True


@dataclass(frozen=True, slots=True)
class Task:
    """One task of the queue. ``owner``: the instance whose queue holds it (a thief becomes
    its owner). ``fence``: the fencing token of its current run (0 before the first), which
    ``complete``/``fail`` must show. ``lease_until_ns``: on the store's clock, while running.
    ``payload``, ``result`` and ``error`` are JSON text. ``attempts``: runs started;
    ``max_attempts``: after that many the task fails instead of going back to the queue.
    ``enqueued_ns``: the store clock when it was put (how long a stolen task waited)."""

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
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    enqueued_ns: int = 0

    def to_json(self) -> dict[str, Any]:
        """The task as the daemon's API and ``pi-xi queue list --json`` show it: camelCase,
        payload, result and error as JSON values, ``leaseUntilNs`` on the store's clock,
        ``enqueuedAt`` in wall-clock ms."""
        return {"taskId": self.task_id, "owner": self.owner, "toolName": self.tool_name,
                "priority": self.priority, "payload": shown(self.payload),
                "state": self.state, "attempts": self.attempts,
                "maxAttempts": self.max_attempts, "fence": self.fence,
                "leaseUntilNs": self.lease_until_ns,
                "result": None if self.result is None else shown(self.result),
                "error": None if self.error is None else shown(self.error),
                "enqueuedAt": self.enqueued_wall_ms}

    def stealable_entry(self) -> dict[str, Any]:
        """The seed's ``StealableQueueEntry`` (priority as text, as it was there)."""
        return {"id": self.task_id, "toolName": self.tool_name, "priority": str(self.priority),
                "instanceId": self.owner, "enqueuedAt": _iso(self.enqueued_wall_ms)}


def run_order(task: Task) -> tuple[int, int]:
    """Sort key: highest priority first, then the first enqueued (sequence numbers are unique
    per store, so no two tasks tie)."""
    return (-task.priority, task.seq)


def queue_score(priority: int, seq: int) -> int:
    """``run_order`` as one number, exact in a double (a Redis sorted set's score): lower
    runs first."""
    return (MAX_PRIORITY - priority) * _SEQ_SPAN + seq


def check_new_task(task_id: str, tool_name: str, priority: int, payload: str,
                   max_attempts: int) -> None:
    """``InvalidArgument`` naming the first part of a new task no store may keep."""
    _check_text("task_id", task_id, MAX_TASK_ID, empty=False)
    _check_text("tool_name", tool_name, MAX_TOOL_NAME, empty=True)
    _check_int("priority", priority, MIN_PRIORITY, MAX_PRIORITY)
    _check_int("max_attempts", max_attempts, 1, MAX_ATTEMPTS_BOUND)
    check_json_text("payload", payload)


def check_lookup(task_id: object = "-", owner: object = None) -> None:
    """``InvalidArgument`` for a task id or owner (None: any; "": the pool) that is not text a
    store can look up."""
    _check_text("task_id", task_id, MAX_TASK_ID, empty=False)
    if owner is not None:
        _check_text("owner", owner, MAX_TASK_ID, empty=True)


def check_json_text(name: str, text: str) -> None:
    """``InvalidArgument`` unless ``text`` is JSON text of at most ``MAX_TEXT`` bytes that
    every store and reader keeps as it is (``core.jsonvalues``)."""
    check_text(name, text, MAX_TEXT)


def _check_text(name: str, value: object, most: int, empty: bool) -> None:
    if not isinstance(value, str):
        raise InvalidArgument(f"{name} must be text, got {value!r}")
    if not value and not empty:
        raise InvalidArgument(f"{name} must not be empty")
    if len(value) > most:
        raise InvalidArgument(f"{name} is {len(value)} characters, more than {most}")
    if "\x00" in value:
        raise InvalidArgument(f"{name} must not hold a NUL character, got {value!r}")
    if not is_unicode(value):
        raise InvalidArgument(f"{name} must be Unicode text (no lone surrogate), "
                              f"got {value!r}")


def _check_int(name: str, value: object, least: int, most: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not least <= value <= most:
        raise InvalidArgument(f"{name} must be an integer {least}..{most}, got {value!r}")


def start_run(task: Task, owner: str, lease_until_ns: int) -> Task:
    """A queued task taken (or stolen) by ``owner``: running under a lease, one more attempt,
    a new fencing token."""
    return replace(task, owner=owner, state="running", attempts=task.attempts + 1,
                   fence=task.fence + 1, lease_until_ns=lease_until_ns)


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


def after_lost_lease(task: Task, owner: str | None = None) -> Task:
    """A running task whose worker's lease ran out (or whose instance is gone): queued again
    (under ``owner`` when given), or failed once it has had ``max_attempts`` runs. Its fence
    moves on, so the worker that lost it can complete nothing."""
    if task.state != "running":
        return task
    moved = task.owner if owner is None else owner
    if task.attempts >= task.max_attempts:
        return replace(task, owner=moved, state="failed", lease_until_ns=None,
                       fence=task.fence + 1,
                       error=task.error or '"the lease was lost on every attempt"')
    return replace(task, owner=moved, state="queued", lease_until_ns=None,
                   fence=task.fence + 1)


def may_settle(task: Task, fence: int, now: int) -> bool:
    """Whether a worker holding ``fence`` may renew, complete or fail ``task`` at ``now``
    (store clock): it still runs it, and its lease has not ended. A run holds its task until
    its lease ends, whether or not the store has queued it again yet: one rule for renewing
    and settling."""
    return task.state == "running" and task.fence == fence \
        and task.lease_until_ns is not None and task.lease_until_ns > now


def settle(task: Task, fence: int, outcome: Outcome, text: str, now: int) -> Task | None:
    """The task after its worker (holding ``fence``) reports ``outcome``: ``done`` with
    ``text`` as result, ``failed`` with ``text`` as error, or ``retry`` (queued again with
    ``text`` as the last error, or failed once it has had ``max_attempts`` runs). The same
    report sent again (a lost reply) gets the same task back; None when the worker may not
    at ``now`` (``may_settle``: its lease ended, another run holds a newer token, or the task
    went back)."""
    if task.fence == fence and task.state != "running":
        repeated = {"done": task.state == "done" and task.result == text,
                    "failed": task.state == "failed" and task.error == text,
                    "retry": task.error == text and task.state in ("queued", "failed")}
        return task if repeated[outcome] else None
    if not may_settle(task, fence, now):
        return None
    if outcome == "done":
        return replace(task, state="done", result=text, lease_until_ns=None)
    if outcome == "failed" or task.attempts >= task.max_attempts:
        return replace(task, state="failed", error=text, lease_until_ns=None)
    return replace(task, state="queued", error=text, lease_until_ns=None)


@dataclass(frozen=True, slots=True)
class StealingStats:
    """Stealing counted per thief (kept in the store); the seed's names. ``avg_latency_ms``:
    how long a stolen task had waited in its old queue before it was stolen (store clock),
    on average: how late stealing comes to the rescue."""

    total_attempts: int = 0
    successful_steals: int = 0
    failed_attempts: int = 0
    total_latency_ms: float = 0.0  # how long the stolen tasks had waited, added up

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


@dataclass(frozen=True, slots=True)
class OwnerCounts:
    """One instance's share of the queue, as the store keeps it (``pi-xi queue stats``):
    tasks it holds queued and running now, tasks it settled, and its stealing as a thief.
    ``stolen_from_ns``: the store clock when a thief last took one of its tasks (0: never)."""

    instance_id: str
    queued: int = 0
    running: int = 0
    done: int = 0
    failed: int = 0
    stealing: StealingStats = StealingStats()
    stolen_from_ns: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"instanceId": self.instance_id, "queued": self.queued,
                "running": self.running, "done": self.done, "failed": self.failed,
                "stealing": self.stealing.to_json()}


def steal_victim(thief: str, counts: Iterable[OwnerCounts],
                 min_queued: int = DEFAULT_MIN_QUEUED) -> str | None:
    """Whose queue a thief's steal takes from, as every store decides it: the instance (not
    the thief, not the shared pool) with the most tasks queued, more than ``min_queued``;
    ties go to the one stolen from longest ago, then the smallest id."""
    victims = [c for c in counts if c.instance_id not in (thief, ORPHANED)
               and c.queued > min_queued]
    if not victims:
        return None
    return min(victims, key=lambda c: (-c.queued, c.stolen_from_ns, c.instance_id)).instance_id


def total_stealing(counts: Iterable[OwnerCounts]) -> StealingStats:
    """Every thief's stealing added up."""
    out = StealingStats()
    for c in counts:
        s = c.stealing
        out = StealingStats(out.total_attempts + s.total_attempts,
                            out.successful_steals + s.successful_steals,
                            out.failed_attempts + s.failed_attempts,
                            out.total_latency_ms + s.total_latency_ms)
    return out


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
