"""The store protocol: every coordination step as one atomic operation.

Three implementations share it: ``sqlite`` (embedded default, one host), ``redis`` (many hosts)
and ``remote`` (a client of the coordinator daemon). Each method is one transaction / one
script / one request: no caller ever composes a read and a write across two calls. The same
behaviour suite runs against every store; a store may be faster, never different.

Time is the store's own (``now_ns``): one clock decides for every instance of a store.

A wait (for a permit or a lock) is known by its ``ticket``: a random number its caller chose
(``permit_ids.new_ticket``) and sends with every attempt of that wait, or None on a first
attempt, for which the store picks one (then sent as part of that call, so a resent call
carries it too). An attempt sent twice, as after a lost reply, queues once, and once granted
is answered with the same grant: a permit granted to a ticket has the ticket as its id, a
lock remembers the ticket it went to. The queue's order is the store's, never the ticket's.

Every name (instance id, workflow id, lock resource, provider, model, bucket key) is kept
as given: no store joins names with a separator a name could hold.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from cross_instance.core.arguments import is_unicode
from cross_instance.core.limiter import RateSpec
from cross_instance.core.limits import AdaptiveSettings
from cross_instance.core.locking import LockRecord, LockWaiting
from cross_instance.core.ownership import Claim, Force, WorkflowRecord
from cross_instance.core.records import (
    MAX_COUNT,
    Adjustment,
    Event,
    Granted,
    InstanceRecord,
    Outcome,
    PermitRequest,
    PermitState,
    Snapshot,
    Waiting,
    Workload,
)
from cross_instance.core.workqueue import (
    OUTCOMES,
    STATES,
    OwnerCounts,
    Task,
    TaskState,
    check_json_text,
)
from cross_instance.core.workqueue import Outcome as TaskOutcome
from cross_instance.errors import InvalidArgument

#: What a store can do; a feature that needs a missing capability is refused at start.
CAP_PERMITS = "permits"
CAP_REGISTRY = "registry"
CAP_EVENTS = "events"
CAP_PID_LIVENESS = "pid-liveness"  # can check pids of same-host instances
CAP_WORKFLOWS = "workflows"
CAP_LOCKS = "locks"
CAP_QUEUE = "queue"


class FreedSlots(Protocol):
    """A store's announcements of freed slots to the waiting processes of every host."""

    refused: str | None  # why this account may not use them (then: doorbells, polling)

    def check(self) -> str | None:
        """Whether announcements work here (at start): None, or why not (also ``refused``)."""
        ...

    def set_waiting(self, waiting: Callable[[], bool]) -> None:
        """Listen while ``waiting()`` (this process has slot waiters)."""
        ...

    def close(self) -> None:
        ...


def checked_spend(changes: Sequence[tuple[str, int, int]]) -> list[tuple[str, int, int]]:
    """``add_spend``'s changes as a list, or ``InvalidArgument`` naming the first that no
    store may apply (every store checks the same way, before anything is written)."""
    out = []
    for change in changes:
        if not isinstance(change, tuple | list) or len(change) != 3:
            raise InvalidArgument(f"a spend change must be (key, nano_usd, expires_at_ns), "
                                  f"got {change!r}")
        key, amount, expires = change
        checked_spend_keys([key])
        if isinstance(amount, bool) or not isinstance(amount, int) \
                or not 0 <= amount <= MAX_COUNT:
            raise InvalidArgument(f"a spend amount must be an integer 0..{MAX_COUNT} "
                                  f"nano-dollars, got {amount!r} for {key!r}")
        if isinstance(expires, bool) or not isinstance(expires, int) \
                or not 0 <= expires < 2**63:
            raise InvalidArgument(f"a spend expiry must be an integer 0..2**63-1 ns, got "
                                  f"{expires!r} for {key!r}")
        out.append((key, amount, expires))
    return out


def checked_spend_keys(keys: Iterable[str]) -> list[str]:
    """``read_spend``'s keys as a list, or ``InvalidArgument`` for one that is not text a
    store can keep."""
    out = list(keys)
    for key in out:
        if not isinstance(key, str):
            raise InvalidArgument(f"a spend key must be text, got {key!r}")
        if not is_unicode(key):
            raise InvalidArgument(f"a spend key must be Unicode text (no lone surrogate), "
                                  f"got {key!r}")
    return out


FINISHED_KEPT = 10_000  # done tasks kept (and as many failed ones), the latest


def checked_lease(name: str, value: object) -> int:
    """A lease or TTL in ns: an integer from 1 ms to one day, or ``InvalidArgument``."""
    if isinstance(value, bool) or not isinstance(value, int) \
            or not 1_000_000 <= value <= 86_400_000_000_000:
        raise InvalidArgument(f"{name} must be an integer from 1 ms to one day in ns, "
                              f"got {value!r}")
    return value


def checked_settle(outcome: object, text: object) -> None:
    """``InvalidArgument`` for an outcome or a result / error text no store may keep."""
    checked_outcome(outcome)
    check_json_text("result" if outcome == "done" else "error", text)  # type: ignore[arg-type]


def checked_min_queued(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 1_000_000:
        raise InvalidArgument(f"min_queued must be an integer 0..1000000, got {value!r}")
    return value


def checked_outcome(value: object) -> None:
    if value not in OUTCOMES:
        raise InvalidArgument(f"outcome must be one of {', '.join(OUTCOMES)}, got {value!r}")


def checked_state(value: object) -> None:
    if value is not None and value not in STATES:
        raise InvalidArgument(f"state must be one of {', '.join(STATES)}, got {value!r}")


def checked_limit(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 100_000:
        raise InvalidArgument(f"limit must be an integer 1..100000, got {value!r}")
    return value


def spend_overflow(key: str, total: int) -> InvalidArgument:
    return InvalidArgument(f"the spend total of {key!r} would reach {total} nano-dollars, "
                           f"beyond {MAX_COUNT}: nothing was added")


class PermitDecisions(ABC):
    """``acquire`` and ``try_acquire`` of a store: one decision (``_decide``) with queueing on
    or off, written once for every store."""

    @abstractmethod
    def _decide(self, request: PermitRequest, ticket: int | None, queue: bool,
                release: Sequence[int]) -> Granted | Waiting | None:
        """Grant ``request`` now, or (``queue``) queue it under ``ticket`` and say how long,
        or (not ``queue``) None; ``release`` first, in the same atomic step."""

    def acquire(self, request: PermitRequest, ticket: int | None,
                release: Sequence[int] = ()) -> Granted | Waiting:
        result = self._decide(request, ticket, True, release)
        assert result is not None
        return result

    def try_acquire(self, request: PermitRequest, release: Sequence[int] = ()
                    ) -> Granted | None:
        result = self._decide(request, None, False, release)
        assert not isinstance(result, Waiting)
        return result


@runtime_checkable
class Store(Protocol):
    """Atomic coordination operations. Errors: ``StoreUnavailable`` (retryable),
    ``StoreCorrupt``, ``DuplicateInstanceError``, ``PermitRequestError``.

    Besides the operations, every store says where it is (``url``, ``prefix``: "" where keys
    have none), what it can do (``capabilities``), what it found wrong but usable when it
    opened (``warnings``: logged at start and shown by ``pi-xi status``), and, where it
    knows, how many waited in its last permit reply (``queued``; None: it does not say, and
    only this host's doorbells tell a releaser who waits)."""

    url: str
    prefix: str
    capabilities: frozenset[str]
    warnings: list[str]
    queued: int | None

    def freed_channel(self, instance_id: str, on_freed: Callable[[int], object],
                      on_subscribed: Callable[[], object]) -> FreedSlots | None:
        """Announcements of freed slots to ``instance_id``'s waiters on every host, or None
        where the store has none (then releases ring this host's doorbells, and waiters on
        other hosts poll)."""
        ...

    def now_ns(self) -> int:
        """The store clock (ns)."""
        ...

    # --- registry -------------------------------------------------------------------------
    def register_instance(self, record: InstanceRecord) -> InstanceRecord:
        """Add ``record`` (heartbeat = now). A live instance with the same id is refused
        (``DuplicateInstanceError`` naming it); a dead one is replaced and its permits freed."""
        ...

    def rejoin_instance(self, record: InstanceRecord, held: Sequence[PermitState]) -> int:
        """Register again after the record was found gone, re-declaring the permits this
        instance still holds. A store that came back without its state (Redis restarted
        empty) keeps them, with their ids and kinds, in their slots, while its restart grace
        lasts (nothing else is granted meanwhile); otherwise the record went because this
        instance was judged dead, its permits were freed then and stay freed. Returns how
        many were kept."""
        ...

    def heartbeat(self, instance_id: str, workload: Workload | None = None,
                  usage: Mapping[str, int] | None = None) -> bool:
        """Renew the lease, publishing the workload and this instance's usage per bucket over
        the last minute (for status) when given. False when the record is gone (this instance
        was judged dead and everything it held was freed): the caller must re-register and
        treat its permits as lost."""
        ...

    def unregister_instance(self, instance_id: str) -> None:
        """Remove the instance, its waiters, permits and active models. Idempotent."""
        ...

    def list_instances(self) -> list[InstanceRecord]:
        """Every instance record, alive or not yet reaped."""
        ...

    def reap(self) -> list[str]:
        """Remove every dead instance (lease expired, or same-host process gone or reused)
        with all it held; returns their ids."""
        ...

    def set_active_model(self, instance_id: str, provider: str, model: str, delta: int) -> None:
        """Add ``delta`` to the instance's use count of a model (a counter, never below 0)."""
        ...

    def clear_active_models(self, instance_id: str) -> None:
        ...

    # --- limits and permits ---------------------------------------------------------------
    def publish_limits(
        self, instance_id: str, rates: Mapping[str, RateSpec], groups: Mapping[str, int]
    ) -> None:
        """Declare the limits this instance's config gives for buckets and slot groups. The
        effective limit of each is the strictest among live instances."""
        ...

    def acquire(self, request: PermitRequest, ticket: int | None,
                release: Sequence[int] = ()) -> Granted | Waiting:
        """Release the permits ``release`` (this process's, returned since its last call), then
        grant now, first come first served, or queue (``ticket``: the wait's, see above; the
        reply's ``Waiting.ticket`` is the one to send next) and say when to ask again.
        Raises ``PermitRequestError`` when the request can never be granted (nothing released
        then: the whole operation is undone)."""
        ...

    def try_acquire(self, request: PermitRequest, release: Sequence[int] = ()
                    ) -> Granted | None:
        """Like ``acquire`` but never queues: a grant now or None. Honours earlier waiters."""
        ...

    def cancel_wait(self, ticket: int) -> None:
        """Leave the queue. Idempotent."""
        ...

    def release(self, instance_id: str, permit_ids: Sequence[int]) -> int:
        """Return the permits' slots; how many ``instance_id`` still held (a permit already
        freed, its owner judged dead, or another instance's, counts 0). Idempotent."""
        ...

    def adjust_tokens(self, changes: Sequence[tuple[str, int]]) -> None:
        """Reconcile token buckets with real usage: a negative change refunds tokens (never
        beyond a full bucket), a positive one charges them (later callers wait for them)."""
        ...

    def record_outcome(self, keys: Sequence[str], outcome: Outcome, policy: AdaptiveSettings
                       ) -> list[Adjustment]:
        """Apply what a call met (429, retry-after, stated limits, success) to the shared
        learned state of ``keys`` in one step; returns what changed."""
        ...

    # --- workflows (seed 002; rules in ``core.ownership``) ------------------------------------
    def claim_workflow(self, workflow_id: str, instance_id: str, *, take: bool = True,
                       auto_claim: bool = True, force: Force = Force.NO) -> Claim:
        """Seed 002's check flow for the registered ``instance_id``, in one step: ``take``
        claims a free workflow, and with ``auto_claim`` one whose owner is dead; ``force`` names the
        move a force-claim (``Force.LIVE``: even from a live owner). Every change of owner adds
        one to the epoch and is an event. ``NotRegisteredError`` for an unknown caller."""
        ...

    def release_workflow(self, workflow_id: str, instance_id: str,
                         epoch: int | None = None, by: str | None = None) -> bool:
        """Give up ownership (only the owner; at ``epoch`` when given). The epoch is kept.
        ``by`` names who acted for the owner (the CLI); the ``workflow_released`` event
        carries it."""
        ...

    def get_workflow(self, workflow_id: str) -> WorkflowRecord | None:
        ...

    def list_workflows(self) -> list[WorkflowRecord]:
        ...

    def write_workflow_state(self, workflow_id: str, instance_id: str, epoch: int,
                             values: Mapping[str, Any]) -> None:
        """Store JSON ``values`` under the workflow if ``instance_id`` owns it at ``epoch``,
        checked in the same step; else ``StaleEpochError`` and nothing is written."""
        ...

    def validate_epoch(self, workflow_id: str, instance_id: str, epoch: int) -> None:
        """``StaleEpochError`` unless ``instance_id`` owns the workflow at ``epoch``."""
        ...

    def read_workflow_state(self, workflow_id: str) -> dict[str, Any]:
        ...

    # --- locks (seed 001; rules in ``core.locking``) -----------------------------------------
    def acquire_lock(self, resource: str, instance_id: str, ttl_ns: int, ticket: int | None,
                     wait: bool) -> LockRecord | LockWaiting | None:
        """Grant the lock if free (released, expired or its holder dead) and nobody queued
        earlier; otherwise queue (``wait``: keep ``ticket`` and ask again) or None. The same
        ``ticket`` asking again after its grant gets that grant back."""
        ...

    def cancel_lock_wait(self, ticket: int) -> None:
        ...

    def renew_lock(self, resource: str, lock_id: str, ttl_ns: int) -> LockRecord | None:
        """Extend the TTL from now if ``lock_id`` still holds it unexpired; None: lost."""
        ...

    def release_lock(self, resource: str, lock_id: str) -> bool:
        """Free the lock if ``lock_id`` holds it; a forged or stale id changes nothing."""
        ...

    def list_locks(self) -> list[LockRecord]:
        ...

    def cleanup_expired_locks(self) -> list[LockRecord]:
        """Free expired locks and those of dead holders (a ``lock_lost`` event each)."""
        ...

    # --- observation ----------------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        ...

    def record_event(self, kind: str, instance_id: str | None, data: Mapping[str, object]) -> None:
        ...

    def events(self, after_id: int = 0, limit: int = 100) -> list[Event]:
        ...

    def reset_learned(self, keys: Iterable[str] | None = None) -> int:
        """Forget what adaptive control learned (rate, stated limit, cooldown) for all buckets
        or ``keys``; the rate limiting state itself is kept (a reset never grants a burst the
        limit would not). Returns how many buckets were reset."""
        ...

    # --- spend (budgets; keys and rules in ``core.budgets``) -------------------------------
    def add_spend(self, changes: Sequence[tuple[str, int, int]]) -> list[int]:
        """Add each change ``(key, nano_usd, expires_at_ns)`` to its key's total, all in one
        atomic step, and return the totals after each change, in order (a key given twice
        counts both). ``nano_usd``: an integer 0..``MAX_COUNT``; a total past ``MAX_COUNT``
        refuses the whole step (``InvalidArgument``), as does a bad change. The store may
        forget a key once its clock (``now_ns``) reaches its expiry, the latest any change
        gave it while it was kept; a forgotten key counts from 0 again."""
        ...

    def read_spend(self, keys: Sequence[str]) -> list[int]:
        """The totals of ``keys`` in one consistent read (0 for a key never added to or
        expired)."""
        ...

    # --- work queue (rules in ``core.workqueue``) -------------------------------------------
    def put_task(self, owner: str, task_id: str, tool_name: str, priority: int, payload: str,
                 max_attempts: int) -> Task:
        """Queue a task (checked by ``check_new_task``) on the registered ``owner``'s queue,
        after every task queued before it at its priority. A ``task_id`` the store holds
        already is not queued again: that task is returned as it is (a resent put)."""
        ...

    def take_task(self, instance_id: str, lease_ns: int) -> Task | None:
        """Start the next queued task (``run_order``) of ``instance_id``'s queue or the shared
        pool (``ORPHANED``) under a lease of ``lease_ns`` (``start_run``); None if both are
        empty. Running tasks whose lease ran out are queued again first."""
        ...

    def steal_task(self, instance_id: str, lease_ns: int, min_queued: int) -> Task | None:
        """One atomic step: move the next queued task of the victim (``steal_victim``) to
        ``instance_id`` and start it there under a lease, or None; counted in the thief's
        stealing stats either way. A running task is never stolen."""
        ...

    def renew_task(self, task_id: str, fence: int, lease_ns: int) -> Task | None:
        """Extend the run's lease to now + ``lease_ns`` while ``fence`` still runs the task
        with its lease unexpired; None: the run is over (lost, or settled)."""
        ...

    def settle_task(self, task_id: str, fence: int, outcome: TaskOutcome, text: str
                    ) -> Task | None:
        """Apply ``core.workqueue.settle``: the settled task, or None when ``fence`` may not
        (its lease was lost). ``text``: JSON, the result or the error."""
        ...

    def settle_and_take(self, task_id: str, fence: int, outcome: TaskOutcome, text: str,
                        instance_id: str, lease_ns: int) -> tuple[Task | None, Task | None]:
        """``settle_task``, then (only if it settled) ``take_task`` for ``instance_id``, in one
        atomic step: a worker's "done, next" in one call. ``(None, None)`` when the fence may
        not settle."""
        ...

    def get_task(self, task_id: str) -> Task | None:
        ...

    def list_tasks(self, owner: str | None = None, state: TaskState | None = None,
                   limit: int = 100) -> list[Task]:
        """Up to ``limit`` tasks (of ``owner``, in ``state`` when given): queued ones in run
        order, running ones by lease end, done and failed ones the latest first. The store
        keeps the latest ``FINISHED_KEPT`` done and as many failed tasks."""
        ...

    def queue_counts(self) -> list[OwnerCounts]:
        """Per instance that ever held a task (and the pool): queued, running, done, failed,
        and its stealing stats; sorted by id."""
        ...

    def reset_stealing_stats(self, instance_id: str | None = None) -> None:
        """Zero the stealing stats of ``instance_id``, or of every instance."""
        ...

    def close(self) -> None:
        ...
