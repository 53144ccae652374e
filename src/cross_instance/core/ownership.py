"""Who owns a workflow, and what a claim does: seed 002's check flow as a pure decision.

Why pure: the flow is the contract (same owner → allowed; other owner → liveness; dead and
auto-claim → ownership moves; alive → refused), and every store must apply it identically
inside one atomic step. The store supplies the record, the caller and the owner's liveness
verdict; this module says what happens. Promises:

- The epoch is the fencing token: it grows by exactly one on every change of owner (a claim
  of a free workflow included) and never otherwise, so epochs have no gaps and never repeat.
- A live owner (or one whose liveness cannot be told: ``UNKNOWN``) is never displaced except
  by an explicit force against a live owner.
- An owner is a *process*: the same instance id in another process (a restart) is a new
  owner, so the old process's epoch stops being valid.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from cross_instance.core.liveness import Domain, Verdict
from cross_instance.core.records import InstanceRecord
from cross_instance.errors import WorkflowRequestError

MAX_WORKFLOW_ID = 512


def check_workflow_id(workflow_id: object) -> str:
    """``workflow_id`` if usable (any non-empty text without control characters, as the
    seed's ``ulTaskId`` values are), else a ``WorkflowRequestError`` naming the problem."""
    if not isinstance(workflow_id, str) or not workflow_id.strip():
        raise WorkflowRequestError(
            f"a workflow id (ulTaskId) must be a non-empty string, got {workflow_id!r}")
    if len(workflow_id) > MAX_WORKFLOW_ID:
        raise WorkflowRequestError(f"workflow id is {len(workflow_id)} characters; at most "
                                   f"{MAX_WORKFLOW_ID} are allowed")
    if any(ord(c) < 32 or ord(c) == 127 for c in workflow_id):
        raise WorkflowRequestError(f"workflow id {workflow_id!r} contains a control character")
    if any("\ud800" <= c <= "\udfff" for c in workflow_id):
        raise WorkflowRequestError(f"workflow id {workflow_id!r} contains a lone surrogate "
                                   "(not Unicode text a store can keep)")
    return workflow_id


@dataclass(frozen=True, slots=True)
class Owner:
    """One process of one instance: who holds a workflow."""

    instance_id: str
    pid: int
    domain: Domain
    start_ticks: int

    @classmethod
    def of(cls, record: InstanceRecord) -> Owner:
        """The process a registry record describes."""
        return cls(record.instance_id, record.pid, record.domain, record.start_ticks)

    def same_process(self, other: Owner) -> bool:
        return (self.instance_id == other.instance_id and self.pid == other.pid
                and self.domain == other.domain and self.start_ticks == other.start_ticks)


@dataclass(frozen=True, slots=True)
class WorkflowRecord:
    """A workflow's ownership. ``owner`` None: released (the epoch is kept, never reused)."""

    workflow_id: str
    owner: Owner | None
    epoch: int
    claimed_wall_ms: int
    updated_wall_ms: int


class Force(enum.Enum):
    NO = "no"  # seed flow: auto-claim only from a dead owner
    DEAD = "dead"  # force-claim: take it from a dead owner (named as a force-claim)
    LIVE = "live"  # force-claim even from a live owner: its next fenced write is rejected


class Action(enum.Enum):
    OWNED = "owned"  # the caller already owns it: nothing changes
    UNOWNED = "unowned"  # nobody owns it and the caller did not claim: nothing changes
    CLAIMED = "claimed"  # it was free; the caller owns it now
    AUTO_CLAIMED = "auto_claimed"  # its owner was dead; ownership moved to the caller
    FORCE_CLAIMED = "force_claimed"  # taken by force
    REFUSED = "refused"  # another owner is alive (or cannot be told dead)

    @property
    def allowed(self) -> bool:
        return self is not Action.REFUSED

    @property
    def moves(self) -> bool:
        return self in (Action.CLAIMED, Action.AUTO_CLAIMED, Action.FORCE_CLAIMED)


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    epoch: int  # the epoch after the decision (the caller's fencing token when allowed)
    reason: str


@dataclass(frozen=True, slots=True)
class Claim:
    """What a store's claim step did: the decision, and the record before and after it."""

    decision: Decision
    before: WorkflowRecord | None
    after: WorkflowRecord | None

    @property
    def allowed(self) -> bool:
        return self.decision.action.allowed

    @property
    def epoch(self) -> int:
        return self.decision.epoch


def decide(current: WorkflowRecord | None, caller: Owner, owner_verdict: Verdict | None,
           claim: bool, auto_claim: bool = True, force: Force = Force.NO) -> Decision:
    """What ``caller`` asking about ``current`` gets.

    ``owner_verdict``: the liveness of the recorded owner *process* (``DEAD`` when its instance
    is gone or is now another process); ignored when there is no owner. ``claim``: take a
    free workflow (False only checks); ``auto_claim``: also take it from a dead owner.
    """
    epoch = current.epoch if current is not None else 0
    owner = current.owner if current is not None else None
    if owner is None:
        if claim or force is not Force.NO:
            return Decision(Action.CLAIMED, epoch + 1, "it had no owner")
        return Decision(Action.UNOWNED, epoch, "it has no owner")
    if owner.same_process(caller):
        return Decision(Action.OWNED, epoch, "the caller owns it")
    if owner_verdict is Verdict.DEAD:
        if force is not Force.NO:
            return Decision(Action.FORCE_CLAIMED, epoch + 1, "its owner is dead")
        if claim and auto_claim:
            return Decision(Action.AUTO_CLAIMED, epoch + 1, "its owner is dead")
        return Decision(Action.REFUSED, epoch, "its owner is dead; auto-claim is off, "
                        "force-claim it to take over")
    if force is Force.LIVE:
        return Decision(Action.FORCE_CLAIMED, epoch + 1, "taken from a live owner by force")
    state = "alive" if owner_verdict is Verdict.ALIVE else "not known to be dead"
    return Decision(Action.REFUSED, epoch, f"its owner {owner.instance_id} is {state}")
