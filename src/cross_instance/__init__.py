"""pi-cross-instance: many agent processes, one provider account, one exact shared limit."""

from cross_instance.errors import (
    ConfigError,
    CrossInstanceError,
    DuplicateInstanceError,
    NotRegisteredError,
    PermitRequestError,
    RateLimitExceeded,
    StoreCorrupt,
    StoreError,
    StoreUnavailable,
    UnsupportedLocation,
)

__all__ = [
    "ConfigError",
    "CrossInstanceError",
    "DuplicateInstanceError",
    "NotRegisteredError",
    "PermitRequestError",
    "RateLimitExceeded",
    "StoreCorrupt",
    "StoreError",
    "StoreUnavailable",
    "UnsupportedLocation",
]
