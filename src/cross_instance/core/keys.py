"""Names of buckets and slot groups, and the request a permit makes (pure).

Buckets: ``r:<provider>`` requests, ``t:<provider>`` tokens, and ``r:<provider>/<model>``,
``t:<provider>/<model>`` when the model's pattern sets limits: a per-model limit applies to
each concrete model name, as providers count them. Slot groups: ``*`` (totalMaxLlm),
``p:<provider>`` and ``m:<provider>/<model>`` (maxConcurrency).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from cross_instance.core.arbiter import GLOBAL_GROUP
from cross_instance.core.limiter import RateSpec
from cross_instance.core.limits import ResolvedLimits
from cross_instance.core.modelmatch import pattern_problem
from cross_instance.core.records import PermitRequest, PermitState
from cross_instance.errors import PermitRequestError

PROVIDER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")

REQUESTS, TOKENS, PROVIDER_SLOTS, MODEL_SLOTS = "r", "t", "p", "m"
KINDS = (REQUESTS, TOKENS, PROVIDER_SLOTS, MODEL_SLOTS)


@dataclass(frozen=True, slots=True)
class Key:
    """A bucket or slot group name taken apart: ``kind`` is one of ``KINDS`` (or
    ``GLOBAL_GROUP`` for the total cap, which has no provider), ``model`` None for a
    provider-wide one. A provider name has no ``/`` (``PROVIDER_NAME``), so everything after
    the first one is the model, whatever it contains."""

    kind: str
    provider: str = ""
    model: str | None = None

    @property
    def target(self) -> str:
        """``provider`` or ``provider/model``, as logs and status show it."""
        return self.provider if self.model is None else f"{self.provider}/{self.model}"


def _key(kind: str, provider: str, model: str | None) -> str:
    return f"{kind}:{provider}" if model is None else f"{kind}:{provider}/{model}"


def requests_bucket(provider: str, model: str | None = None) -> str:
    return _key(REQUESTS, provider, model)


def tokens_bucket(provider: str, model: str | None = None) -> str:
    return _key(TOKENS, provider, model)


def provider_group(provider: str) -> str:
    return _key(PROVIDER_SLOTS, provider, None)


def model_group(provider: str, model: str) -> str:
    return _key(MODEL_SLOTS, provider, model)


def parse_key(key: str) -> Key:
    """The parts of a key built here; ``ValueError`` naming it for anything else."""
    if key == GLOBAL_GROUP:
        return Key(GLOBAL_GROUP)
    kind, sep, name = key.partition(":")
    provider, slash, model = name.partition("/")
    if not sep or kind not in KINDS or not provider or (kind == MODEL_SLOTS and not slash):
        raise ValueError(f"not a bucket or slot group key: {key!r}")
    return Key(kind, provider, model if slash else None)


def is_bucket(key: str) -> bool:
    """A rate bucket (requests or tokens), not a slot group."""
    return key.startswith((REQUESTS + ":", TOKENS + ":"))


def is_requests(key: str) -> bool:
    return key.startswith(REQUESTS + ":")


def is_tokens(key: str) -> bool:
    return key.startswith(TOKENS + ":")


def permit_groups(provider: str, model: str | None) -> tuple[str, ...]:
    """The slot groups a held permit occupies: a permit without a model is in no model group
    (no model limit applies to it; a model named "None" is a model like any other)."""
    if model is None:
        return (GLOBAL_GROUP, provider_group(provider))
    return (GLOBAL_GROUP, provider_group(provider), model_group(provider, model))


def groups_used(permits: Iterable[PermitState]) -> dict[str, int]:
    """How many slots of each group the held ``permits`` occupy (what a store's snapshot
    shows beside each group's limit)."""
    used: dict[str, int] = {}
    for p in permits:
        for group in permit_groups(p.provider, p.model):
            used[group] = used.get(group, 0) + 1
    return used


@dataclass(frozen=True, slots=True)
class Plan:
    """A request plus the limits it relies on (to publish before first use)."""

    request: PermitRequest
    rates: dict[str, RateSpec]
    groups: dict[str, int]


def plan_request(instance_id: str, limits: ResolvedLimits, tokens: int | None,
                 total_max_llm: int, reports: bool = False) -> Plan:
    """What a permit for ``limits`` takes; ``PermitRequestError`` if it can never be granted."""
    if tokens is not None and (isinstance(tokens, bool) or not isinstance(tokens, int)
                               or tokens < 0):
        raise PermitRequestError(f"tokens must be an integer >= 0 (got {tokens!r})")
    if not isinstance(limits.provider, str) or not PROVIDER_NAME.fullmatch(limits.provider):
        raise PermitRequestError(
            f"provider must be a name like 'openai' (letters, digits, '_', '.', '-'; at most "
            f"64 characters), got {limits.provider!r}")
    if limits.model is not None:
        problem = pattern_problem(limits.model) if isinstance(limits.model, str) else "not a string"
        if problem is not None:
            raise PermitRequestError(f"model {limits.model!r}: {problem.replace('pattern ', '')}")
    p, m = limits.provider, limits.model
    rates: dict[str, RateSpec] = {requests_bucket(p): limits.requests}
    costs: list[tuple[str, int]] = [(requests_bucket(p), 1)]
    groups: dict[str, int] = {GLOBAL_GROUP: total_max_llm}
    if limits.model_requests is not None:
        rates[requests_bucket(p, m)] = limits.model_requests
        costs.append((requests_bucket(p, m), 1))
    if tokens:
        for key, spec in ((tokens_bucket(p), limits.tokens),
                          (tokens_bucket(p, m), limits.model_tokens)):
            if spec is None:
                continue
            if tokens > spec.burst:
                raise PermitRequestError(
                    f"{tokens} tokens requested but the token bucket {key} holds at most "
                    f"{spec.burst}; split the call or raise tokenBurst")
            rates[key] = spec
            costs.append((key, tokens))
    if limits.max_concurrency is not None:
        groups[provider_group(p)] = limits.max_concurrency
    if limits.model_max_concurrency is not None and m is not None:
        groups[model_group(p, m)] = limits.model_max_concurrency
    request = PermitRequest(instance_id, p, m, tuple(costs), tuple(groups), tokens or 0, reports)
    return Plan(request, rates, groups)
