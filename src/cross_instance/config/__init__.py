"""Configuration: ``.pi/config.json`` (key ``crossInstance``) plus ``PI_*`` environment
overrides, loaded into one immutable, validated :class:`Config` (``load``); the rules each
value must follow (``rules``) and the pydantic schema that applies them (``schema``, imported
only when a file or an override is validated)."""

from cross_instance.config.load import (
    DEFAULT_PROVIDER_LIMITS,
    DEFAULT_RUNTIME_DIR,
    ENV_VARS,
    UNKNOWN_PROVIDER_LIMITS,
    AdaptiveSettings,
    Config,
    InstancePolicy,
    ModelLimits,
    ProviderLimits,
    ResolvedLimits,
    default_burst,
    env_overrides,
    load_config,
    validate_instance_id,
)

__all__ = [
    "DEFAULT_PROVIDER_LIMITS",
    "DEFAULT_RUNTIME_DIR",
    "ENV_VARS",
    "UNKNOWN_PROVIDER_LIMITS",
    "AdaptiveSettings",
    "Config",
    "InstancePolicy",
    "ModelLimits",
    "ProviderLimits",
    "ResolvedLimits",
    "default_burst",
    "env_overrides",
    "load_config",
    "validate_instance_id",
]
