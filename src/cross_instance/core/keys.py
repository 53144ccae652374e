"""Names of buckets and slot groups, and the request a permit makes (pure).

Buckets: ``r:<provider>`` requests, ``t:<provider>`` tokens, and ``r:<provider>/<model>``,
``t:<provider>/<model>`` when the model's pattern sets limits: a per-model limit applies to
each concrete model name, as providers count them. Slot groups: ``*`` (totalMaxLlm),
``p:<provider>`` and ``m:<provider>/<model>`` (maxConcurrency).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cross_instance.core.arbiter import GLOBAL_GROUP
from cross_instance.core.limiter import RateSpec
from cross_instance.core.limits import ResolvedLimits
from cross_instance.core.modelmatch import pattern_problem
from cross_instance.core.records import PermitRequest
from cross_instance.errors import PermitRequestError

PROVIDER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def permit_groups(provider: str, model: str | None) -> tuple[str, ...]:
    """The slot groups a held permit occupies: a permit without a model is in no model group
    (no model limit applies to it; a model named "None" is a model like any other)."""
    if model is None:
        return (GLOBAL_GROUP, f"p:{provider}")
    return (GLOBAL_GROUP, f"p:{provider}", f"m:{provider}/{model}")


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
    rates: dict[str, RateSpec] = {f"r:{p}": limits.requests}
    costs: list[tuple[str, int]] = [(f"r:{p}", 1)]
    groups: dict[str, int] = {GLOBAL_GROUP: total_max_llm}
    if limits.model_requests is not None:
        rates[f"r:{p}/{m}"] = limits.model_requests
        costs.append((f"r:{p}/{m}", 1))
    if tokens:
        for key, spec in ((f"t:{p}", limits.tokens), (f"t:{p}/{m}", limits.model_tokens)):
            if spec is None:
                continue
            if tokens > spec.burst:
                raise PermitRequestError(
                    f"{tokens} tokens requested but the token bucket {key} holds at most "
                    f"{spec.burst}; split the call or raise tokenBurst")
            rates[key] = spec
            costs.append((key, tokens))
    if limits.max_concurrency is not None:
        groups[f"p:{p}"] = limits.max_concurrency
    if limits.model_max_concurrency is not None:
        groups[f"m:{p}/{m}"] = limits.model_max_concurrency
    request = PermitRequest(instance_id, p, m, tuple(costs), tuple(groups), tokens or 0, reports)
    return Plan(request, rates, groups)
