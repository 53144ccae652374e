"""Provider and model limits as plain immutable values, and their resolution for one call.

Promises: every value here is frozen; :func:`resolve_limits` is pure and picks the model entry
with :func:`~cross_instance.core.modelmatch.best_match` (most specific pattern first). Built-in
limits are conservative; a provider nobody knows gets :data:`UNKNOWN_PROVIDER_LIMITS`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from cross_instance.core.limiter import RateSpec
from cross_instance.core.modelmatch import best_match

MAX_BURST = 10_000
DEFAULT_MAX_COOLDOWN_MS = 300_000  # 5 minutes: a longer provider hint is clamped to it


def default_burst(requests_per_minute: int) -> int:
    """Burst used when ``requestsPerMinute`` is given without ``burst``: a fifth of a minute's
    requests, at least 1 and at most 10 000."""
    return max(1, min(MAX_BURST, requests_per_minute // 5))


def _rate(per_minute: int | None, burst: int | None) -> RateSpec | None:
    return None if per_minute is None or burst is None else RateSpec(per_minute, burst)


@dataclass(frozen=True, slots=True)
class ModelLimits:
    """Extra limits for models matching one pattern; None means "not limited at model level"."""

    requests_per_minute: int | None = None
    burst: int | None = None
    tokens_per_minute: int | None = None
    token_burst: int | None = None
    max_concurrency: int | None = None

    @property
    def requests(self) -> RateSpec | None:
        """The request rate, if this level limits requests."""
        return _rate(self.requests_per_minute, self.burst)

    @property
    def tokens(self) -> RateSpec | None:
        """The token rate, if this level limits tokens."""
        return _rate(self.tokens_per_minute, self.token_burst)


@dataclass(frozen=True, slots=True)
class ProviderLimits:
    """Limits shared by every instance for one provider account; ``models`` maps glob patterns to
    additional per-model limits."""

    requests_per_minute: int
    burst: int
    tokens_per_minute: int | None = None
    token_burst: int | None = None
    max_concurrency: int | None = None
    models: Mapping[str, ModelLimits] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def requests(self) -> RateSpec:
        """The provider-wide request rate."""
        return RateSpec(self.requests_per_minute, self.burst)

    @property
    def tokens(self) -> RateSpec | None:
        """The provider-wide token rate, if configured."""
        return _rate(self.tokens_per_minute, self.token_burst)


@dataclass(frozen=True, slots=True)
class ResolvedLimits:
    """Every limit that applies to one (provider, model) call."""

    provider: str
    model: str | None
    requests: RateSpec
    tokens: RateSpec | None
    max_concurrency: int | None
    model_pattern: str | None = None
    model_requests: RateSpec | None = None
    model_tokens: RateSpec | None = None
    model_max_concurrency: int | None = None

    @property
    def token_bursts(self) -> list[int]:
        """The bursts of the token buckets a call takes from (none without token limits):
        a reservation above the smallest could never be granted."""
        return [s.burst for s in (self.tokens, self.model_tokens) if s is not None]


@dataclass(frozen=True, slots=True)
class InstancePolicy:
    """Scheduling policy of one instance: higher ``priority`` wins ties; ``reserved_capacity``
    LLM slots are kept for it out of ``totalMaxLlm``."""

    priority: int = 1
    reserved_capacity: int = 0


@dataclass(frozen=True, slots=True)
class AdaptiveSettings:
    """``adaptiveRateControl``: how the shared learned rate moves (see ``core.adaptive``)."""

    enabled: bool = True
    reduction_factor: float = 0.9
    recovery_factor: float = 1.05
    min_requests_per_minute: int = 1
    max_requests_per_minute: int | None = None
    #: the longest cooldown a provider's hint (retry-after, a reset time) may impose
    max_cooldown_ms: int = DEFAULT_MAX_COOLDOWN_MS


#: Built-in limits for well-known providers (conservative published tiers).
DEFAULT_PROVIDER_LIMITS: Mapping[str, ProviderLimits] = MappingProxyType(
    {
        "openai": ProviderLimits(500, 100),
        "anthropic": ProviderLimits(50, 25),
        "deepseek": ProviderLimits(1000, 200),
        "gemini": ProviderLimits(60, 15),
    }
)
#: Limits for a provider that is neither configured nor built in.
UNKNOWN_PROVIDER_LIMITS = ProviderLimits(30, 5)


def resolve_limits(limits: ProviderLimits, provider: str, model: str | None) -> ResolvedLimits:
    """``limits`` plus those of its most specific model pattern matching ``model`` (if any)."""
    pattern = None if model is None else best_match(limits.models, model)
    entry = limits.models[pattern] if pattern is not None else ModelLimits()
    return ResolvedLimits(
        provider=provider,
        model=model,
        requests=limits.requests,
        tokens=limits.tokens,
        max_concurrency=limits.max_concurrency,
        model_pattern=pattern,
        model_requests=entry.requests,
        model_tokens=entry.tokens,
        model_max_concurrency=entry.max_concurrency,
    )
