"""Errors raised by pi-cross-instance.

Every error carries a stable ``code`` (for programs and the wire) and the fields that name
what went wrong, so callers never parse messages::

    CrossInstanceError
    ├── ConfigError                 bad config file or environment variable (names file/var, key)
    ├── RateLimitExceeded           RATE_LIMIT_EXCEEDED: no permit before the timeout
    ├── DuplicateInstanceError      another live instance holds this instance id
    ├── NotRegisteredError          the runtime is closed or was never started
    ├── PermitRequestError          a permit that can never be granted (cost above the burst)
    └── StoreError                  the shared store failed
        ├── StoreUnavailable        retryable: disk full, locked, unreachable
        ├── StoreCorrupt            the database file is damaged; restore or quarantine it
        └── UnsupportedLocation     the state directory is on a network file system
"""

from __future__ import annotations


class CrossInstanceError(Exception):
    """Base class: ``code`` is stable, ``str(err)`` is a one-line human message."""

    code = "CROSS_INSTANCE_ERROR"
    retryable = False


class ConfigError(CrossInstanceError):
    """Invalid configuration. ``source`` is the file path or environment variable name."""

    code = "CONFIG_INVALID"

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


class DuplicateInstanceError(CrossInstanceError):
    """A live instance already holds the requested id."""

    code = "DUPLICATE_INSTANCE"

    def __init__(self, instance_id: str, holder_pid: int, holder_host: str) -> None:
        self.instance_id = instance_id
        self.holder_pid = holder_pid
        self.holder_host = holder_host
        super().__init__(
            f"instance id {instance_id!r} is held by a live instance "
            f"(pid {holder_pid} on {holder_host}); choose another PI_INSTANCE_ID"
        )


class NotRegisteredError(CrossInstanceError):
    code = "NOT_REGISTERED"


class PermitRequestError(CrossInstanceError, ValueError):
    """The request can never be granted as asked (for example more tokens than the burst)."""

    code = "PERMIT_REQUEST_INVALID"


class StoreError(CrossInstanceError):
    code = "STORE_ERROR"

    def __init__(self, message: str, *, location: str = "") -> None:
        self.location = location
        super().__init__(message)


class StoreUnavailable(StoreError):
    code = "store_unavailable"
    retryable = True


class StoreCorrupt(StoreError):
    code = "STORE_CORRUPT"


class UnsupportedLocation(StoreError):
    code = "STORE_LOCATION_UNSUPPORTED"
