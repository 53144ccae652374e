"""Configuration: ``.pi/config.json`` (key ``crossInstance``) plus ``PI_*`` environment overrides.

Promises:

* :func:`load_config` returns a fully validated, immutable :class:`Config`, or raises exactly one
  :class:`~cross_instance.errors.ConfigError` naming the file or environment variable, the
  camelCase key (``crossInstance.providers.openai.burst``) and the problem with the bad value.
* Loading only reads; it never creates or writes any file or directory.
* A missing file means defaults. Environment overrides beat the file; cross-field rules
  (heartbeat timeout, reservations) are checked after overrides and blame the environment
  variable when it supplied the value.
* Limits for a provider never default to something generous: unknown providers get
  :data:`UNKNOWN_PROVIDER_LIMITS`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

from cross_instance.config.rules import (
    BOUNDS,
    addr_problem,
    instance_id_problem,
    key_path,
    read_section,
    runtime_dir_problem,
    show,
    store_url_problem,
)
from cross_instance.core.limits import (
    DEFAULT_PROVIDER_LIMITS,
    UNKNOWN_PROVIDER_LIMITS,
    AdaptiveSettings,
    InstancePolicy,
    ModelLimits,
    ProviderLimits,
    ResolvedLimits,
    default_burst,
    resolve_limits,
)
from cross_instance.errors import ConfigError

if TYPE_CHECKING:  # the schema (pydantic) is imported when a section is validated
    from cross_instance.config.schema import LimitsIn, SectionIn

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

DEFAULT_RUNTIME_DIR = "~/.pi/runtime"
_SECTION = "crossInstance"

#: camelCase setting -> environment variable that overrides it.
ENV_VARS: Mapping[str, str] = MappingProxyType(
    {
        "enabled": "PI_CROSS_INSTANCE_ENABLED",
        "coordinatorPort": "PI_COORDINATOR_PORT",
        "coordinatorAddr": "PI_COORDINATOR_ADDR",
        "instanceId": "PI_INSTANCE_ID",
        "totalMaxLlm": "PI_TOTAL_MAX_LLM",
        "heartbeatIntervalMs": "PI_HEARTBEAT_INTERVAL_MS",
        "heartbeatTimeoutMs": "PI_HEARTBEAT_TIMEOUT_MS",
        "runtimeDir": "PI_RUNTIME_DIR",
        "store": "PI_STORE_URL",
        "whenStoreDown": "PI_WHEN_STORE_DOWN",
    }
)
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


def _default_runtime_dir() -> Path:
    return Path(os.path.expanduser(DEFAULT_RUNTIME_DIR)).absolute()


@dataclass(frozen=True, slots=True)
class Config:
    """The effective configuration (``Config()`` is the all-defaults one).

    ``runtime_dir`` is absolute with ``~`` expanded; ``providers`` holds the built-in providers
    overlaid with the configured ones (omitted fields filled in); ``source`` is the config file
    path used, or ``"defaults"`` when there was none."""

    enabled: bool = True
    coordinator_port: int = 8765
    #: A coordinator daemon (``pi-xi serve``) at host:port: when set, ``Runtime`` uses it as
    #: its store (``stores.remote``); None = the store below, opened in-process.
    coordinator_addr: str | None = None
    instance_id: str | None = None
    total_max_llm: int = 6
    heartbeat_interval_ms: int = 2000
    heartbeat_timeout_ms: int = 10000
    runtime_dir: Path = field(default_factory=_default_runtime_dir)
    #: The shared store's URL; None = the embedded SQLite store in ``runtime_dir``.
    store: str | None = None
    #: ``"fail"`` (default): no permit without the store; ``"local-share"``: see ``degraded``.
    when_store_down: str = "fail"
    #: Usage (share of a limit, in the last minute) above which a ``rate_limit_warning`` event
    #: is written: at most once a minute per bucket and process (``core.events``).
    rate_limit_warning_share: float = 0.8
    providers: Mapping[str, ProviderLimits] = field(default_factory=lambda: DEFAULT_PROVIDER_LIMITS)
    instances: Mapping[str, InstancePolicy] = field(default_factory=lambda: MappingProxyType({}))
    adaptive: AdaptiveSettings = field(default_factory=AdaptiveSettings)
    source: str = "defaults"

    def provider_limits(self, provider: str) -> ProviderLimits:
        """Configured, else built-in, else :data:`UNKNOWN_PROVIDER_LIMITS` (names are exact)."""
        return self.providers.get(provider, UNKNOWN_PROVIDER_LIMITS)

    def resolve(self, provider: str, model: str | None) -> ResolvedLimits:
        """Provider limits plus those of the most specific model pattern matching ``model``."""
        return resolve_limits(self.provider_limits(provider), provider, model)

    def policy_for(self, instance_id: str) -> InstancePolicy:
        """The configured policy of ``instance_id``, else priority 1 with nothing reserved."""
        return self.instances.get(instance_id, InstancePolicy())

    def to_json(self) -> dict[str, object]:
        """JSON-ready camelCase view; without ``source`` it is a valid ``crossInstance`` section
        that loads back to an equal configuration."""
        a = self.adaptive
        return {
            "enabled": self.enabled,
            "coordinatorPort": self.coordinator_port,
            "coordinatorAddr": self.coordinator_addr,
            "instanceId": self.instance_id,
            "totalMaxLlm": self.total_max_llm,
            "heartbeatIntervalMs": self.heartbeat_interval_ms,
            "heartbeatTimeoutMs": self.heartbeat_timeout_ms,
            "runtimeDir": str(self.runtime_dir),
            "store": self.store,
            "whenStoreDown": self.when_store_down,
            "rateLimitWarningShare": self.rate_limit_warning_share,
            "providers": {name: _limits_json(p) for name, p in self.providers.items()},
            "instances": {
                i: {"priority": p.priority, "reservedCapacity": p.reserved_capacity}
                for i, p in self.instances.items()
            },
            "adaptiveRateControl": {
                "enabled": a.enabled,
                "reductionFactor": a.reduction_factor,
                "recoveryFactor": a.recovery_factor,
                "minRequestsPerMinute": a.min_requests_per_minute,
                "maxRequestsPerMinute": a.max_requests_per_minute,
                "maxCooldownMs": a.max_cooldown_ms,
            },
            "source": self.source,
        }


def _limits_json(limits: ProviderLimits | ModelLimits) -> dict[str, object]:
    out: dict[str, object] = {
        "requestsPerMinute": limits.requests_per_minute,
        "burst": limits.burst,
        "tokensPerMinute": limits.tokens_per_minute,
        "tokenBurst": limits.token_burst,
        "maxConcurrency": limits.max_concurrency,
    }
    if isinstance(limits, ProviderLimits):
        out["models"] = {pat: _limits_json(m) for pat, m in limits.models.items()}
    return out


def validate_instance_id(value: str, source: str, key: str) -> str:
    """``value`` if it is a valid instance id (1-128 of ``A-Z a-z 0-9 . _ : @ -``, starting with
    a letter or digit); otherwise raises ConfigError(source, key, ...)."""
    problem = instance_id_problem(value)
    if problem is not None:
        raise ConfigError(source, key, problem)
    return value


def env_overrides(env: Mapping[str, str]) -> dict[str, object]:
    """The settings that ``env`` overrides, parsed, keyed by camelCase name (empty = unset).

    Raises ConfigError(variable name, ``crossInstance.<key>``, problem) for a bad value.
    """
    out: dict[str, object] = {}
    for key, var in ENV_VARS.items():
        raw = env.get(var)
        if raw:
            out[key] = _parse_env(key, var, raw)
    return out


def _parse_env(key: str, var: str, raw: str) -> object:
    path = f"{_SECTION}.{key}"
    problem: str | None
    if key == "instanceId":
        return validate_instance_id(raw, var, path)
    if key == "enabled":
        word = raw.strip().lower()
        if word in _TRUE or word in _FALSE:
            return word in _TRUE
        raise ConfigError(var, path, f"expected true/false/1/0/yes/no/on/off (got {show(raw)})")
    if key == "coordinatorAddr":
        problem = addr_problem(raw)
    elif key == "runtimeDir":
        problem = runtime_dir_problem(raw)
    elif key == "store":
        problem = store_url_problem(raw)
    elif key == "whenStoreDown":
        problem = (None if raw in ("fail", "local-share")
                   else f'expected "fail" or "local-share" (got {show(raw)})')
    else:
        return _parse_env_int(var, path, raw, *BOUNDS[key])
    if problem is not None:
        raise ConfigError(var, path, problem)
    return raw


def _parse_env_int(var: str, path: str, raw: str, lo: int, hi: int) -> int:
    text = raw.strip()
    negative = text.startswith("-")
    digits = text[1:] if text.startswith(("+", "-")) else text
    if not (digits.isascii() and digits.isdigit()):
        raise ConfigError(var, path, f"expected an integer (got {show(raw)})")
    if len(digits) > 18:  # far outside every bound; do not bother converting
        bound = f"must be >= {lo}" if negative else f"must be <= {hi}"
        raise ConfigError(var, path, f"{bound} (got {show(raw)})")
    value = int(text)
    if value < lo:
        raise ConfigError(var, path, f"must be >= {lo} (got {value})")
    if value > hi:
        raise ConfigError(var, path, f"must be <= {hi} (got {value})")
    return value


def load_config(
    cwd: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> Config:
    """Load ``<cwd>/.pi/config.json`` (default: the current directory) and apply overrides from
    ``env`` (default: ``os.environ``). Raises exactly one ConfigError on invalid input.

    A relative ``runtimeDir`` is relative to ``cwd``; ``~`` expands from the process's HOME.
    """
    base = Path(os.path.abspath(os.fspath(cwd) if cwd is not None else os.getcwd()))
    path = str(base / ".pi" / "config.json")
    raw = read_section(path, _SECTION)
    from cross_instance.config.schema import SectionIn, validate_section  # ~100 ms: only here

    file_section = validate_section(raw if raw is not None else {}, path, _SECTION)
    overrides = env_overrides(os.environ if env is None else env)
    snake = {f.alias: name for name, f in SectionIn.model_fields.items() if f.alias}
    s = file_section.model_copy(update={snake[k]: v for k, v in overrides.items()})

    def origin(*keys: str) -> str:
        """Who supplied the first of ``keys`` that came from somewhere: env beats the file."""
        for k in keys:
            if k in overrides:
                return ENV_VARS[k]
        return path if raw is not None and any(k in raw for k in keys) else "defaults"

    if s.heartbeat_timeout_ms < 2 * s.heartbeat_interval_ms:
        raise ConfigError(
            origin("heartbeatTimeoutMs", "heartbeatIntervalMs"),
            f"{_SECTION}.heartbeatTimeoutMs",
            f"must be >= 2 * heartbeatIntervalMs = {2 * s.heartbeat_interval_ms}"
            f" (got {s.heartbeat_timeout_ms})",
        )
    _check_reservations(s, origin("totalMaxLlm", "instances"))
    ad = s.adaptive_rate_control
    return Config(
        enabled=s.enabled,
        coordinator_port=s.coordinator_port,
        coordinator_addr=s.coordinator_addr,
        instance_id=s.instance_id,
        total_max_llm=s.total_max_llm,
        heartbeat_interval_ms=s.heartbeat_interval_ms,
        heartbeat_timeout_ms=s.heartbeat_timeout_ms,
        runtime_dir=base / os.path.expanduser(s.runtime_dir or DEFAULT_RUNTIME_DIR),
        store=s.store,
        when_store_down=s.when_store_down,
        rate_limit_warning_share=float(s.rate_limit_warning_share),
        providers=_providers(s),
        instances=MappingProxyType(
            {i: InstancePolicy(p.priority, p.reserved_capacity) for i, p in s.instances.items()}
        ),
        adaptive=AdaptiveSettings(
            ad.enabled,
            float(ad.reduction_factor),
            float(ad.recovery_factor),
            ad.min_requests_per_minute,
            ad.max_requests_per_minute,
            ad.max_cooldown_ms,
        ),
        source=path if raw is not None else "defaults",
    )


def _check_reservations(s: SectionIn, source: str) -> None:
    for instance_id, policy in s.instances.items():
        if policy.reserved_capacity > s.total_max_llm:
            raise ConfigError(
                source,
                key_path((_SECTION, "instances", instance_id, "reservedCapacity")),
                f"must be <= totalMaxLlm {s.total_max_llm} (got {policy.reserved_capacity})",
            )
    reserved = sum(p.reserved_capacity for p in s.instances.values())
    if reserved > s.total_max_llm:
        raise ConfigError(
            source,
            f"{_SECTION}.instances",
            f"reservedCapacity sums to {reserved}, more than totalMaxLlm {s.total_max_llm}",
        )


def _providers(s: SectionIn) -> Mapping[str, ProviderLimits]:
    out = dict(DEFAULT_PROVIDER_LIMITS)
    for name, p in s.providers.items():
        base = out.get(name, UNKNOWN_PROVIDER_LIMITS)
        rpm = base.requests_per_minute if p.requests_per_minute is None else p.requests_per_minute
        if p.burst is not None:
            burst = p.burst
        else:
            burst = base.burst if p.requests_per_minute is None else default_burst(rpm)
        tpm: int | None
        token_burst: int | None
        if p.tokens_per_minute is not None:
            tpm, token_burst = p.tokens_per_minute, p.token_burst or p.tokens_per_minute
        else:
            tpm, token_burst = base.tokens_per_minute, base.token_burst
        concurrency = base.max_concurrency if p.max_concurrency is None else p.max_concurrency
        out[name] = ProviderLimits(
            requests_per_minute=rpm,
            burst=burst,
            tokens_per_minute=tpm,
            token_burst=token_burst,
            max_concurrency=concurrency,
            models=MappingProxyType({pat: _model(m) for pat, m in p.models.items()}),
        )
    return MappingProxyType(out)


def _model(m: LimitsIn) -> ModelLimits:
    rpm, tpm = m.requests_per_minute, m.tokens_per_minute
    return ModelLimits(
        requests_per_minute=rpm,
        burst=m.burst if m.burst is not None or rpm is None else default_burst(rpm),
        tokens_per_minute=tpm,
        token_burst=m.token_burst if m.token_burst is not None else tpm,
        max_concurrency=m.max_concurrency,
    )
