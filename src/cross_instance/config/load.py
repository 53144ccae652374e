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
    from cross_instance.config.schema import BudgetIn, LimitsIn, SectionIn

    # the gateway's and the budgets' types: imported when a config uses them (import time)
    from cross_instance.core.budgets import Budget, Budgets
    from cross_instance.core.pricing import Price
    from cross_instance.core.upstreams import GatewaySettings, Upstream
    from cross_instance.core.workqueue import QueueSettings

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
    #: Where the provider gateway forwards each provider's requests (``upstream_table``):
    #: None = the built-in providers' official base URLs; else those overlaid with
    #: ``providers.{name}.baseUrl`` / ``api``. A provider with no entry cannot be reached
    #: through the gateway.
    upstreams: Mapping[str, Upstream] | None = None
    #: The gateway's bounds (``gateway_settings``); None = the defaults.
    gateway: GatewaySettings | None = None
    #: The work queue's settings (``queue_settings``); None = the defaults.
    queue: QueueSettings | None = None
    #: Spend budgets; None = no budget (a permit then makes no store call for them).
    budgets: Budgets | None = None
    #: The price table budgets are kept with (``price_table``): None = the package's dated
    #: default (``core.pricing.DEFAULT_PRICES``, ``PRICES_DATE``), else that overlaid with
    #: ``prices``.
    prices: Mapping[str, Mapping[str, Price]] | None = None
    source: str = "defaults"

    def upstream_table(self) -> Mapping[str, Upstream]:
        if self.upstreams is not None:
            return self.upstreams
        from cross_instance.core.upstreams import DEFAULT_UPSTREAMS

        return DEFAULT_UPSTREAMS

    def gateway_settings(self) -> GatewaySettings:
        if self.gateway is not None:
            return self.gateway
        from cross_instance.core.upstreams import GatewaySettings

        return GatewaySettings()

    def queue_settings(self) -> QueueSettings:
        if self.queue is not None:
            return self.queue
        from cross_instance.core.workqueue import QueueSettings

        return QueueSettings()

    def price_table(self) -> Mapping[str, Mapping[str, Price]]:
        if self.prices is not None:
            return self.prices
        from cross_instance.core.pricing import DEFAULT_PRICES

        return DEFAULT_PRICES

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
            "providers": {name: {**_limits_json(p),
                                 **_upstream_json(self.upstream_table().get(name))}
                          for name, p in self.providers.items()},
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
            "budgets": _budgets_json(self.budgets),
            "prices": {provider: {pattern: _price_json(p) for pattern, p in table.items()}
                       for provider, table in (self.prices or {}).items()},
            "gateway": _gateway_json(self.gateway_settings()),
            "queue": _queue_json(self.queue_settings()),
            "source": self.source,
        }


def _budget_json(budget: Budget) -> dict[str, object]:
    return {"perDayUsd": budget.per_day_usd, "perMonthUsd": budget.per_month_usd}


def _gateway_json(g: GatewaySettings) -> dict[str, object]:
    return {"maxWaitMs": g.max_wait_ms, "maxBodyBytes": g.max_body_bytes,
            "upstreamTimeoutMs": g.upstream_timeout_ms}


def _queue_json(q: QueueSettings) -> dict[str, object]:
    return {"leaseMs": q.lease_ms, "maxAttempts": q.max_attempts, "minQueued": q.min_queued,
            "steal": q.steal}


def _budgets_json(b: Budgets | None) -> dict[str, object]:
    if b is None:
        from cross_instance.core.budgets import Budgets

        b = Budgets()  # none: the defaults, written out
    return {"account": None if b.account is None else _budget_json(b.account),
            "providers": {name: _budget_json(x) for name, x in b.providers.items()},
            "onExceed": b.on_exceed, "warnShare": b.warn_share}


def _price_json(p: Price) -> dict[str, object]:
    return {"input": p.input, "output": p.output, "cachedInput": p.cached_input,
            "cacheWrite": p.cache_write}


def _upstream_json(upstream: Upstream | None) -> dict[str, object]:
    if upstream is None:
        return {}
    return {"baseUrl": upstream.base_url, "api": upstream.api}


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
        upstreams=_upstreams(s, path),
        gateway=_gateway(s),
        queue=_queue(s),
        budgets=_budgets(s),
        prices=_prices(s),
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


def _queue(s: SectionIn) -> QueueSettings | None:
    from cross_instance.config.schema import QueueIn

    q = s.queue
    if q == QueueIn():  # the defaults: kept as None (see Config.queue)
        return None
    from cross_instance.core.workqueue import QueueSettings

    return QueueSettings(q.lease_ms, q.max_attempts, q.min_queued, q.steal)


def _gateway(s: SectionIn) -> GatewaySettings | None:
    from cross_instance.config.schema import GatewayIn

    g = s.gateway
    if g == GatewayIn():  # the defaults: kept as None (see Config.gateway)
        return None
    from cross_instance.core.upstreams import GatewaySettings

    return GatewaySettings(g.max_wait_ms, g.max_body_bytes, g.upstream_timeout_ms)


def _budgets(s: SectionIn) -> Budgets | None:
    b = s.budgets
    if b.account is None and not b.providers:
        return None
    from cross_instance.core.budgets import Budget, Budgets

    def one(x: BudgetIn) -> Budget:
        return Budget(x.per_day_usd, x.per_month_usd)

    return Budgets(None if b.account is None else one(b.account),
                   MappingProxyType({name: one(x) for name, x in b.providers.items()}),
                   b.on_exceed, float(b.warn_share))


def _prices(s: SectionIn) -> Mapping[str, Mapping[str, Price]] | None:
    """The default table (dated ``PRICES_DATE``) with the configured entries over it: a
    configured pattern replaces the default of the same pattern and, being named, is as
    specific as any (the most specific pattern matching a model wins)."""
    if not s.prices:
        return None
    from cross_instance.core.pricing import DEFAULT_PRICES, Price
    out = {name: dict(table) for name, table in DEFAULT_PRICES.items()}
    for provider, table in s.prices.items():
        mine = out.setdefault(provider, {})
        for pattern, p in table.items():
            mine[pattern] = Price(float(p.input), float(p.output),
                                  None if p.cached_input is None else float(p.cached_input),
                                  None if p.cache_write is None else float(p.cache_write))
    if out == {name: dict(table) for name, table in DEFAULT_PRICES.items()}:
        return None  # the defaults, written out (see Config.prices)
    return MappingProxyType({k: MappingProxyType(v) for k, v in out.items()})


def _upstreams(s: SectionIn, source: str) -> Mapping[str, Upstream] | None:
    if all(p.base_url is None and p.api is None for p in s.providers.values()):
        return None
    from cross_instance.core.upstreams import DEFAULT_UPSTREAMS, Upstream, default_api

    out = dict(DEFAULT_UPSTREAMS)
    for name, p in s.providers.items():
        base = out.get(name)
        if p.base_url is None and base is None:
            continue  # limits only: not reachable through the gateway
        if name == "v1":  # /v1/... is the daemon's own API
            raise ConfigError(source, key_path((_SECTION, "providers", name, "baseUrl")),
                              'the provider name "v1" cannot have a gateway route (the '
                              "daemon's API is /v1/...): choose another name")
        url = p.base_url if p.base_url is not None else base.base_url if base else ""
        api = p.api or (base.api if base is not None else default_api(name))
        out[name] = Upstream(api, url.rstrip("/"))
    return None if out == dict(DEFAULT_UPSTREAMS) else MappingProxyType(out)


def _model(m: LimitsIn) -> ModelLimits:
    rpm, tpm = m.requests_per_minute, m.tokens_per_minute
    return ModelLimits(
        requests_per_minute=rpm,
        burst=m.burst if m.burst is not None or rpm is None else default_burst(rpm),
        tokens_per_minute=tpm,
        token_burst=m.token_burst if m.token_burst is not None else tpm,
        max_concurrency=m.max_concurrency,
    )
