"""Errors raised by pi-cross-instance: one hierarchy, every class exported from the package.

Every error carries a stable ``code`` (for programs and the wire) and the fields that name
what went wrong, so callers never parse messages. Codes are lower snake_case, except the
three the original coordinator defined, kept as written (``RATE_LIMIT_EXCEEDED``,
``workflow_owned_by_other``, ``ul_workflow_not_owned``)::

    CrossInstanceError              cross_instance_error
    ├── ConfigError                 config_invalid: bad config file or environment variable
    ├── RateLimitExceeded           RATE_LIMIT_EXCEEDED: no permit before the timeout
    ├── DuplicateInstanceError      duplicate_instance: a live instance holds this id
    ├── NotRegisteredError          not_registered: the runtime is closed or was never started
    ├── Cancelled                   cancelled: the caller's cancel event ended a wait
    ├── InvalidArgument             invalid_argument: a public call got a bad argument (names
    │   │                           it and the value); also a ValueError and a TypeError
    │   ├── PermitRequestError      permit_request_invalid: bad, or can never be granted
    │   ├── LockRequestError        lock_request_invalid: a bad lock resource or ttl
    │   └── WorkflowRequestError    workflow_request_invalid: a bad workflow id or state key
    ├── WorkflowOwnedError          workflow_owned_by_other: another live instance owns it
    ├── StaleEpochError             stale_epoch: the caller's ownership was superseded
    ├── LockLostError               lock_lost: a held lock expired or was taken over
    ├── LockTimeoutError            lock_timeout: the lock was not free before the timeout
    └── StoreError                  store_error: the shared store failed
        ├── StoreUnavailable        store_unavailable, retryable: disk full, locked, unreachable
        ├── StoreCorrupt            store_corrupt: the database cannot be trusted (names it)
        ├── UnsupportedLocation     store_location_unsupported: a network file system
        └── UnsupportedPlatform     platform_unsupported: native Windows

(``ul_workflow_not_owned`` is a tool result of the original's API, not an exception:
:mod:`cross_instance.compat.delegation`.)
"""

from __future__ import annotations


class CrossInstanceError(Exception):
    """Base class: ``code`` is stable, ``str(err)`` is a one-line human message."""

    code = "cross_instance_error"
    retryable = False


class ConfigError(CrossInstanceError):
    """Invalid configuration. ``source`` is the file path or environment variable name."""

    code = "config_invalid"

    def __init__(self, source: str, key: str, problem: str) -> None:
        self.source = source
        self.key = key
        self.problem = problem
        where = f"{source}: {key}" if key else source
        super().__init__(f"{where}: {problem}")


class RateLimitExceeded(CrossInstanceError):
    """No permit could be had before the caller's timeout.

    ``retry_after`` (seconds) is the runtime's best estimate of when a permit would be granted.
    """

    code = "RATE_LIMIT_EXCEEDED"
    retryable = True

    def __init__(self, provider: str, model: str | None, retry_after: float, reason: str) -> None:
        self.provider = provider
        self.model = model
        self.retry_after = max(0.0, retry_after)
        self.reason = reason
        target = provider if model is None else f"{provider}/{model}"
        super().__init__(
            f"rate limit exceeded for {target}: {reason}; retry after {self.retry_after:.3f}s"
        )


class BudgetExceeded(CrossInstanceError):
    """A spend budget (``budgets`` in the config) has no room for the call.

    ``retry_after`` (seconds) is when the period that frees it begins, or None when the
    call can never fit (its estimated cost alone is above the budget) or ``onExceed`` is
    ``refuse``; ``reason`` names the budget, what it has spent and its limit."""

    code = "budget_exceeded"
    retryable = False

    def __init__(self, provider: str, model: str | None, retry_after: float | None,
                 reason: str) -> None:
        self.provider = provider
        self.model = model
        self.retry_after = None if retry_after is None else max(0.0, retry_after)
        self.reason = reason
        self.retryable = retry_after is not None
        super().__init__(f"spend budget exceeded: {reason}")


class DuplicateInstanceError(CrossInstanceError):
    """A live instance already holds the requested id."""

    code = "duplicate_instance"

    def __init__(self, instance_id: str, holder_pid: int, holder_host: str) -> None:
        self.instance_id = instance_id
        self.holder_pid = holder_pid
        self.holder_host = holder_host
        super().__init__(
            f"instance id {instance_id!r} is held by a live instance "
            f"(pid {holder_pid} on {holder_host}); choose another PI_INSTANCE_ID"
        )


class NotRegisteredError(CrossInstanceError):
    code = "not_registered"

    @classmethod
    def instance(cls, instance_id: str) -> NotRegisteredError:
        """The refusal of a step by ``instance_id`` when the store holds no record of it."""
        return cls(f"instance {instance_id!r} is not registered (it was judged dead or never "
                   "started); start the runtime again")


class Cancelled(CrossInstanceError):
    """The caller's cancel event was set while it waited (for a permit or a lock); its place
    in the queue was given back."""

    code = "cancelled"


class InvalidArgument(CrossInstanceError, ValueError, TypeError):
    """A public call was given an argument it cannot use; the message names the parameter and
    what was given. Both a ``ValueError`` and a ``TypeError``, so either ``except`` finds it."""

    code = "invalid_argument"


class PermitRequestError(InvalidArgument):
    """A bad permit or report argument, or a request that can never be granted as asked (for
    example more tokens than the burst)."""

    code = "permit_request_invalid"


class LockRequestError(InvalidArgument):
    code = "lock_request_invalid"


class WorkflowRequestError(InvalidArgument):
    code = "workflow_request_invalid"


class WorkflowOwnedError(CrossInstanceError):
    """Seed 002's ``workflow_owned_by_other``: another instance owns the workflow and is alive
    (or cannot be told dead). Not retryable: wait for it to finish, or force-claim it."""

    code = "workflow_owned_by_other"

    def __init__(self, workflow_id: str, owner_instance_id: str, owner_pid: int,
                 owner_host: str, reason: str) -> None:
        self.workflow_id = workflow_id
        self.owner_instance_id = owner_instance_id
        self.owner_pid = owner_pid
        self.owner_host = owner_host
        self.reason = reason
        super().__init__(
            f"UL workflow {workflow_id} is owned by another instance ({owner_instance_id}, "
            f"pid {owner_pid} on {owner_host}): {reason}")

    def payload(self) -> dict[str, object]:
        """The seed's structured error (``details`` of a tool result)."""
        return {"error": self.code, "ulTaskId": self.workflow_id,
                "ownerInstanceId": self.owner_instance_id, "ownerPid": self.owner_pid,
                "outcomeCode": "NONRETRYABLE_FAILURE", "retryRecommended": False}


class StaleEpochError(CrossInstanceError):
    """A fenced operation carried an epoch that is no longer the workflow's (someone claimed it
    since, or the caller released it). The caller must stop acting for the workflow."""

    code = "stale_epoch"

    def __init__(self, workflow_id: str, epoch: int, current_epoch: int,
                 current_owner: str | None) -> None:
        self.workflow_id = workflow_id
        self.epoch = epoch
        self.current_epoch = current_epoch
        self.current_owner = current_owner
        owner = f"owned by {current_owner}" if current_owner else "released"
        super().__init__(f"stale epoch {epoch} for workflow {workflow_id}: it is now at epoch "
                         f"{current_epoch}, {owner}")


class LockLostError(CrossInstanceError):
    """A held lock ended without its holder releasing it (expired, or taken after expiry)."""

    code = "lock_lost"

    def __init__(self, resource: str, token: int | None, reason: str) -> None:
        self.resource = resource
        self.token = token  # None when the one who noticed does not know it (a renew by id)
        self.reason = reason
        held = "" if token is None else f" (token {token})"
        super().__init__(f"lock on {resource!r}{held} was lost: {reason}")


class TaskLostError(CrossInstanceError):
    """A worker's run of a queued task ended without it: its lease ran out (or its instance
    was judged dead) and the task went back to the queue, or it was settled already. The
    worker may not complete or fail it any more."""

    code = "task_lost"

    def __init__(self, task_id: str, fence: int, reason: str) -> None:
        self.task_id = task_id
        self.fence = fence
        self.reason = reason
        super().__init__(f"task {task_id!r} (run {fence}) was lost: {reason}")


class LockTimeoutError(CrossInstanceError):
    """A waiting lock acquire reached its timeout; ``holder`` held the lock then (if known)."""

    code = "lock_timeout"
    retryable = True

    def __init__(self, resource: str, holder: str | None, waited_s: float) -> None:
        self.resource = resource
        self.holder = holder
        self.waited_s = waited_s
        by = f" (held by {holder})" if holder else ""
        super().__init__(f"lock on {resource!r} not acquired within {waited_s:.3f}s{by}")


class StoreError(CrossInstanceError):
    code = "store_error"

    def __init__(self, message: str, *, location: str = "") -> None:
        self.location = location
        super().__init__(message)


class StoreUnavailable(StoreError):
    """The store did not answer in time. ``undecided_permit``: the id of a permit that the
    unanswered call may have granted (its reply lost); the runtime releases it later, so a
    grant nobody received does not hold its slot for as long as the instance lives."""

    code = "store_unavailable"
    retryable = True
    undecided_permit: int | None = None


class StoreCorrupt(StoreError):
    code = "store_corrupt"


class UnsupportedLocation(StoreError):
    code = "store_location_unsupported"


class UnsupportedPlatform(StoreError):
    """The embedded store cannot run on this operating system (native Windows); the message
    says what works instead."""

    code = "platform_unsupported"
