"""The ``crossInstance`` file schema (pydantic models) and its translation into one-line
ConfigErrors.

Internal to :mod:`cross_instance.config`, which imports it only when it validates a section
(pydantic costs about 100 ms to import; the rules that need no schema library are in
:mod:`cross_instance.config.rules`). Promise: every invalid input yields exactly one
ConfigError(file path, camelCase dotted key, problem naming the bad value).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel
from pydantic_core import ErrorDetails, PydanticCustomError

from cross_instance.config.rules import (
    BOUNDS,
    addr_problem,
    base_url_problem,
    instance_id_problem,
    key_path,
    provider_name_problem,
    runtime_dir_problem,
    show,
    store_url_problem,
)
from cross_instance.core.limits import DEFAULT_MAX_COOLDOWN_MS
from cross_instance.core.modelmatch import pattern_problem
from cross_instance.errors import ConfigError


def _checked(problem: Callable[[str], str | None]) -> AfterValidator:
    def check(value: str) -> str:
        text = problem(value)
        if text is not None:
            raise PydanticCustomError("config_problem", "{problem}", {"problem": text})
        return value

    return AfterValidator(check)


def _b(name: str) -> Any:
    """Field constraints for the integer setting ``name`` (see BOUNDS)."""
    lo, hi = BOUNDS[name]
    return Field(ge=lo, le=hi)


class _Strict(BaseModel):
    model_config = ConfigDict(
        extra="forbid", strict=True, frozen=True, alias_generator=to_camel, allow_inf_nan=False
    )


class LimitsIn(_Strict):
    """A model entry, as written; every field optional (null = omitted)."""

    requests_per_minute: Annotated[int, _b("requestsPerMinute")] | None = None
    burst: Annotated[int, _b("burst")] | None = None
    tokens_per_minute: Annotated[int, _b("tokensPerMinute")] | None = None
    token_burst: Annotated[int, _b("tokenBurst")] | None = None
    max_concurrency: Annotated[int, _b("maxConcurrency")] | None = None


class ProviderIn(LimitsIn):
    """A provider entry, as written; omitted fields fall back to the provider's defaults."""

    models: dict[Annotated[str, _checked(pattern_problem)], LimitsIn] = {}
    # where the gateway forwards this provider's requests, and the wire format it speaks
    base_url: Annotated[str, _checked(base_url_problem)] | None = None
    api: Literal["openai", "anthropic"] | None = None


class GatewayIn(_Strict):
    max_wait_ms: Annotated[int, _b("maxWaitMs")] = 60_000
    max_body_bytes: Annotated[int, _b("maxBodyBytes")] = 32 << 20
    upstream_timeout_ms: Annotated[int, _b("upstreamTimeoutMs")] = 600_000


class QueueIn(_Strict):
    lease_ms: Annotated[int, _b("leaseMs")] = 30_000
    max_attempts: Annotated[int, _b("maxAttempts")] = 3
    min_queued: Annotated[int, _b("minQueued")] = 2
    steal: bool = True


class InstanceIn(_Strict):
    priority: Annotated[int, _b("priority")] = 1
    reserved_capacity: Annotated[int, _b("reservedCapacity")] = 0


class AdaptiveIn(_Strict):
    enabled: bool = True
    reduction_factor: Annotated[float, Field(gt=0, lt=1)] = 0.9
    recovery_factor: Annotated[float, Field(gt=1, le=2)] = 1.05
    min_requests_per_minute: Annotated[int, _b("minRequestsPerMinute")] = 1
    max_requests_per_minute: Annotated[int, _b("maxRequestsPerMinute")] | None = None
    max_cooldown_ms: Annotated[int, _b("maxCooldownMs")] = DEFAULT_MAX_COOLDOWN_MS


class BudgetIn(_Strict):
    per_day_usd: Annotated[float, Field(ge=0, le=1e9)] | None = None
    per_month_usd: Annotated[float, Field(ge=0, le=1e9)] | None = None


class BudgetsIn(_Strict):
    account: BudgetIn | None = None
    providers: dict[Annotated[str, _checked(provider_name_problem)], BudgetIn] = {}
    on_exceed: Literal["wait", "refuse"] = "refuse"
    warn_share: Annotated[float, Field(gt=0, le=1)] = 0.8


class PriceIn(_Strict):
    """USD per million tokens."""

    input: Annotated[float, Field(ge=0, le=1e6)]
    output: Annotated[float, Field(ge=0, le=1e6)]
    cached_input: Annotated[float, Field(ge=0, le=1e6)] | None = None
    cache_write: Annotated[float, Field(ge=0, le=1e6)] | None = None


class SectionIn(_Strict):
    """The ``crossInstance`` section, field by field validated (cross-field rules excluded)."""

    enabled: bool = True
    coordinator_port: Annotated[int, _b("coordinatorPort")] = 8765
    coordinator_addr: Annotated[str, _checked(addr_problem)] | None = None
    instance_id: Annotated[str, _checked(instance_id_problem)] | None = None
    total_max_llm: Annotated[int, _b("totalMaxLlm")] = 6
    heartbeat_interval_ms: Annotated[int, _b("heartbeatIntervalMs")] = 2000
    heartbeat_timeout_ms: Annotated[int, _b("heartbeatTimeoutMs")] = 10000
    runtime_dir: Annotated[str, _checked(runtime_dir_problem)] | None = None
    store: Annotated[str, _checked(store_url_problem)] | None = None
    when_store_down: Literal["fail", "local-share"] = "fail"
    rate_limit_warning_share: Annotated[float, Field(gt=0, le=1)] = 0.8
    providers: dict[Annotated[str, _checked(provider_name_problem)], ProviderIn] = {}
    instances: dict[Annotated[str, _checked(instance_id_problem)], InstanceIn] = {}
    adaptive_rate_control: AdaptiveIn = AdaptiveIn()
    gateway: GatewayIn = GatewayIn()
    queue: QueueIn = QueueIn()
    budgets: BudgetsIn = BudgetsIn()
    prices: dict[Annotated[str, _checked(provider_name_problem)],
                 dict[Annotated[str, _checked(pattern_problem)], PriceIn]] = {}


def _num(value: object) -> object:
    return int(value) if isinstance(value, float) and value.is_integer() else value


_TYPE_PROBLEMS = {
    "int_type": "expected an integer",
    "bool_type": "expected true or false",
    "string_type": "expected a string",
    "float_type": "expected a number",
    "float_parsing": "expected a number",
    "finite_number": "expected a finite number",
    "dict_type": "must be an object",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
}
_BOUND_PROBLEMS = {
    "greater_than_equal": ("ge", ">="),
    "greater_than": ("gt", ">"),
    "less_than_equal": ("le", "<="),
    "less_than": ("lt", "<"),
}


def pydantic_problem(err: ErrorDetails) -> str:
    """One short problem text for a pydantic error, naming the bad value."""
    kind, ctx = err["type"], err.get("ctx") or {}
    got = f" (got {show(err.get('input'))})"
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "config_problem":
        return str(ctx["problem"])
    if kind == "missing":
        return "is required"
    if kind in _TYPE_PROBLEMS:
        return _TYPE_PROBLEMS[kind] + got
    if kind in _BOUND_PROBLEMS:
        name, op = _BOUND_PROBLEMS[kind]
        return f"must be {op} {_num(ctx[name])}{got}"
    return err["msg"] + got


def validate_section(raw: dict[str, Any], path: str, section: str) -> SectionIn:
    """``raw`` validated field by field plus the rules local to the file (tokenBurst needs
    tokensPerMinute, a model's burst needs its requestsPerMinute, adaptive min <= max)."""
    try:
        parsed = SectionIn.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        raise ConfigError(path, key_path((section, *err["loc"])), pydantic_problem(err)) from None
    for name, provider in parsed.providers.items():
        where: tuple[str, ...] = (section, "providers", name)
        _pair_rule(provider, path, where)
        for pattern, model in provider.models.items():
            _pair_rule(model, path, (*where, "models", pattern))
            if model.burst is not None and model.requests_per_minute is None:
                raise ConfigError(
                    path,
                    key_path((*where, "models", pattern, "burst")),
                    f"needs requestsPerMinute in the same entry (got burst {model.burst} alone)",
                )
    ad = parsed.adaptive_rate_control
    if ad.max_requests_per_minute is not None and (
        ad.min_requests_per_minute > ad.max_requests_per_minute
    ):
        raise ConfigError(
            path,
            key_path((section, "adaptiveRateControl", "minRequestsPerMinute")),
            f"must be <= maxRequestsPerMinute {ad.max_requests_per_minute}"
            f" (got {ad.min_requests_per_minute})",
        )
    return parsed


def _pair_rule(limits: LimitsIn, path: str, where: tuple[str, ...]) -> None:
    if limits.token_burst is not None and limits.tokens_per_minute is None:
        raise ConfigError(
            path,
            key_path((*where, "tokenBurst")),
            f"needs tokensPerMinute in the same entry (got tokenBurst {limits.token_burst} alone)",
        )
