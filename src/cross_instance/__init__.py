"""pi-cross-instance: many agent processes, one provider account, one exact shared limit.

Everything a user catches or starts is here: the facade (``Runtime``, ``Permit``) and every
error of the one hierarchy in :mod:`cross_instance.errors`."""

from cross_instance.errors import (
    BudgetExceeded,
    Cancelled,
    ConfigError,
    CrossInstanceError,
    DuplicateInstanceError,
    InvalidArgument,
    LockLostError,
    LockRequestError,
    LockTimeoutError,
    NotRegisteredError,
    PermitRequestError,
    RateLimitExceeded,
    StaleEpochError,
    StoreCorrupt,
    StoreError,
    StoreUnavailable,
    TaskLostError,
    UnsupportedLocation,
    UnsupportedPlatform,
    WorkflowOwnedError,
    WorkflowRequestError,
)
from cross_instance.runtime import Runtime
from cross_instance.runtime.permit import Permit

__all__ = [
    "BudgetExceeded",
    "Cancelled",
    "ConfigError",
    "CrossInstanceError",
    "DuplicateInstanceError",
    "InvalidArgument",
    "LockLostError",
    "LockRequestError",
    "LockTimeoutError",
    "NotRegisteredError",
    "Permit",
    "PermitRequestError",
    "RateLimitExceeded",
    "Runtime",
    "StaleEpochError",
    "StoreCorrupt",
    "StoreError",
    "StoreUnavailable",
    "TaskLostError",
    "UnsupportedLocation",
    "UnsupportedPlatform",
    "WorkflowOwnedError",
    "WorkflowRequestError",
]
