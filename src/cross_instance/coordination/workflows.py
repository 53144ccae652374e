"""Workflow ownership for users: claim, hold, write fenced state, release (seed 002).

``rt.workflows.hold(task_id)`` claims a workflow (auto-claim from a dead owner by default) and
releases it on exit; the handle's ``epoch`` is its fencing token. Every state write goes
through ``handle.write(...)``, which the store accepts only while this process still owns the
workflow at that epoch (checked in the same atomic step), after this process has made sure its
own lease has not run out (self-fencing: a process resumed from a pause heartbeats first).
``handle.ensure()`` is the same check for side effects outside the store: call it before each.
"""

from __future__ import annotations

import builtins
import collections
import json
import threading
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

from cross_instance.core.arguments import check_bool, check_int, is_unicode, show
from cross_instance.core.ownership import (
    Action,
    Claim,
    Force,
    WorkflowRecord,
    check_workflow_id,
)
from cross_instance.errors import (
    CrossInstanceError,
    StaleEpochError,
    WorkflowOwnedError,
    WorkflowRequestError,
)

if TYPE_CHECKING:
    from cross_instance.runtime.session import Session


class Workflow:
    """Ownership of one workflow at one epoch, held by this process. A context manager that
    releases on exit (``keep=True`` leaves it owned, e.g. to hand it to a later run of this
    instance)."""

    def __init__(self, session: Session, workflow_id: str, epoch: int, action: str,
                 keep: bool = False, nested: bool = False,
                 on_end: Callable[[str], None] | None = None) -> None:
        self._session = session
        self.workflow_id = workflow_id
        self.epoch = epoch
        self.action = action  # how it was obtained: claimed, auto_claimed, force_claimed, owned
        self.keep = keep
        self.released = False
        self._nested = nested  # a hold inside a live hold or claim of this process
        self._on_end = on_end  # told once this handle no longer holds (``Workflows._open``)

    def __repr__(self) -> str:
        return f"<Workflow {self.workflow_id!r} epoch {self.epoch} ({self.action})>"

    def ensure(self) -> None:
        """Raise ``StaleEpochError`` unless this process still owns the workflow at ``epoch``
        (after confirming its own lease). Call it before acting outside the store."""
        self._session.confirm_lease()
        self._session.require_store().validate_epoch(self.workflow_id,
                                                     self._session.instance_id, self.epoch)

    def write(self, values: Mapping[str, Any] | None = None, **more: Any) -> None:
        """Persist JSON values under the workflow, fenced by the epoch: ``StaleEpochError``
        and nothing written when another owner took it (or it was released)."""
        if values is not None and not isinstance(values, Mapping):
            raise WorkflowRequestError(f"values must be a mapping of state keys to JSON values "
                                       f"(got {show(values)})")
        data = {**(values or {}), **more}
        for key, value in data.items():
            if not isinstance(key, str) or not key or len(key) > 256:
                raise WorkflowRequestError(f"state key must be a string of 1-256 characters, "
                                           f"got {key!r}")
            if not is_unicode(key):
                raise WorkflowRequestError(f"state key must be Unicode text (no lone "
                                           f"surrogate), got {key!r}")
            try:
                json.dumps(value)
            except (TypeError, ValueError) as err:
                raise WorkflowRequestError(f"state value of {key!r} is not JSON: {err}") from err
        self._session.confirm_lease()
        self._session.require_store().write_workflow_state(
            self.workflow_id, self._session.instance_id, self.epoch, data)

    def read(self) -> dict[str, Any]:
        """Everything written under the workflow (by any owner)."""
        return self._session.require_store().read_workflow_state(self.workflow_id)

    def release(self) -> bool:
        """Give ownership up; False when it was no longer ours at this epoch. Idempotent once
        it went through; when the store did not answer, the error is raised and ``release``
        may be called again."""
        if self.released:
            return False
        freed = self._session.require_store().release_workflow(
            self.workflow_id, self._session.instance_id, self.epoch)
        self.released = True
        self._end()
        return freed

    def _end(self) -> None:
        on_end, self._on_end = self._on_end, None
        if on_end is not None:
            on_end(self.workflow_id)

    def __enter__(self) -> Workflow:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.keep:
            if self._nested:
                self._end()  # the outer hold or claim still holds it
            return
        try:
            self.release()
        except CrossInstanceError:
            self._end()  # this hold is over: a later hold of the workflow releases it
            if et is None:
                raise  # (``release()`` may be called again)
            # the block's own exception is the one to see; ``release()`` may be called again


class Workflows:
    """``rt.workflows``: the ownership API of seed 002. One owner per workflow across every
    instance; a claim bumps the workflow's epoch, which fences every later write."""

    def __init__(self, session: Session) -> None:
        self._session = session
        # live handles of this process per workflow: holds inside their block, claims not
        # released; a hold finding the workflow owned is nested only while one is live
        self._open: collections.Counter[str] = collections.Counter()
        self._open_lock = threading.Lock()

    def _ended(self, workflow_id: str) -> None:
        with self._open_lock:
            self._open[workflow_id] -= 1
            if self._open[workflow_id] <= 0:
                del self._open[workflow_id]

    def _claim(self, workflow_id: str, *, take: bool = True, auto_claim: bool = True,
               force: Force = Force.NO) -> Claim:
        check_workflow_id(workflow_id)
        check_bool("auto_claim", auto_claim, WorkflowRequestError)
        self._session.confirm_lease()
        return self._session.require_store().claim_workflow(
            workflow_id, self._session.instance_id, take=take, auto_claim=auto_claim,
            force=force)

    def _held(self, claim: Claim, workflow_id: str, keep: bool = False,
              hint: str = "") -> Workflow:
        """The handle of an allowed claim; ``WorkflowOwnedError`` naming the owner otherwise
        (its reason followed by ``hint``)."""
        if not claim.allowed:
            owner = claim.before.owner if claim.before is not None else None
            raise WorkflowOwnedError(workflow_id, owner.instance_id if owner else "",
                                     owner.pid if owner else 0,
                                     owner.domain.host if owner else "",
                                     claim.decision.reason + hint)
        # a hold of a workflow a live hold or claim of this process holds (a nested hold, a
        # hold after claim) leaves it owned on exit: a hold releases only what it claimed
        # itself; owned with no live handle (left over by a failed release), it takes over
        with self._open_lock:
            nested = claim.decision.action is Action.OWNED and self._open[workflow_id] > 0
            self._open[workflow_id] += 1
        return Workflow(self._session, workflow_id, claim.epoch, claim.decision.action.value,
                        keep or nested, nested, self._ended)

    def hold(self, task_id: str, auto_claim: bool = True, keep: bool = False) -> Workflow:
        """Claim ``task_id`` and hold it: ``with rt.workflows.hold(task_id) as wf:
        wf.write(...)``. A free workflow is claimed; one whose owner is dead is taken when
        ``auto_claim``; a live owner raises ``WorkflowOwnedError`` (code
        ``workflow_owned_by_other``). Released on leaving the ``with`` unless ``keep``."""
        check_bool("keep", keep, WorkflowRequestError)
        return self._held(self._claim(task_id, auto_claim=auto_claim), task_id, keep)

    def claim(self, task_id: str, auto_claim: bool = True) -> Workflow:
        """Like ``hold`` but kept until ``release`` (or the handle's release)."""
        return self.hold(task_id, auto_claim=auto_claim, keep=True)

    def force_claim(self, task_id: str, allow_live: bool = False) -> Workflow:
        """Take ``task_id`` whatever its owner's state when that owner is gone (seed
        ``ul_workflow_force_claim``); with ``allow_live`` also from a live owner, whose next
        fenced write is then rejected. Recorded as a ``workflow_force_claimed`` event."""
        check_bool("allow_live", allow_live, WorkflowRequestError)
        claim = self._claim(task_id, force=Force.LIVE if allow_live else Force.DEAD)
        return self._held(claim, task_id, keep=True, hint="; force with allow_live=True "
                          "(CLI: --live) to take it from a live owner")

    def check(self, task_id: str, auto_claim: bool = True) -> dict[str, Any]:
        """Seed 002's check: ``owned`` is True when this instance may act for the workflow
        (it owns it, claimed it now, or nobody owns it and ``auto_claim`` is off); otherwise
        the owner that blocks it. With ``auto_claim`` a free or dead-owned workflow is claimed."""
        claim = self._claim(task_id, take=auto_claim, auto_claim=auto_claim)
        record = claim.after if claim.allowed else claim.before
        owner = record.owner if record is not None else None
        return {"owned": claim.allowed, "ulTaskId": task_id,
                "ownerInstanceId": owner.instance_id if owner else None,
                "ownerPid": owner.pid if owner else None,
                "ownerHost": owner.domain.host if owner else None,
                "epoch": claim.epoch, "action": claim.decision.action.value,
                "reason": claim.decision.reason}

    def release(self, task_id: str) -> bool:
        """Give up ``task_id`` if this instance owns it; False otherwise (nothing changes)."""
        check_workflow_id(task_id)
        freed = self._session.require_store().release_workflow(task_id,
                                                               self._session.instance_id)
        with self._open_lock:
            self._open.pop(task_id, None)  # every handle of it is stale now (fenced)
        return freed

    def get(self, task_id: str) -> WorkflowRecord | None:
        """The workflow's owner and epoch (None when it was never claimed)."""
        check_workflow_id(task_id)
        return self._session.require_store().get_workflow(task_id)

    def list(self) -> builtins.list[WorkflowRecord]:
        """Every workflow the store knows, by id."""
        return self._session.require_store().list_workflows()

    def write_state(self, task_id: str, epoch: int, values: Mapping[str, Any]) -> None:
        """A fenced write for callers that keep only the epoch (not the handle)."""
        check_int("epoch", epoch, 0, WorkflowRequestError)
        Workflow(self._session, check_workflow_id(task_id), epoch, "owned",
                 keep=True).write(values)


__all__ = ["StaleEpochError", "Workflow", "WorkflowOwnedError", "Workflows"]
