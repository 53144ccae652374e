"""pi-cross-instance: many agent processes, one provider account, one exact shared limit."""

from cross_instance.errors import (
    ConfigError,
    CrossInstanceError,
    DuplicateInstanceError,
    InvalidArgument,
    NotRegisteredError,
    PermitRequestError,
    RateLimitExceeded,
    StoreCorrupt,
    StoreError,
    StoreUnavailable,
    UnsupportedLocation,
)
from cross_instance.runtime import Runtime
from cross_instance.runtime.permit import Permit

__all__ = [
    "ConfigError",
    "CrossInstanceError",
    "DuplicateInstanceError",
    "InvalidArgument",
    "NotRegisteredError",
    "Permit",
    "PermitRequestError",
    "RateLimitExceeded",
    "Runtime",
    "StoreCorrupt",
    "StoreError",
    "StoreUnavailable",
    "UnsupportedLocation",
]
