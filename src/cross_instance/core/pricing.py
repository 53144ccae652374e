"""What a provider call costs, in exact integers (pure).

Why: spend budgets (``core.budgets``) are kept by every store as integer nano-dollars, so a
call's cost must come out as one exact integer, the same on every instance. A price is USD per
million tokens of each kind; a call's usage is read from the provider's own response
(``usage_of``), split into the kinds that are priced differently: plain input, cached input
(read from a prompt cache), cache writes (Anthropic's cache creation) and output.

``usage_of`` understands the same responses as ``core.usage`` (which counts total tokens for
rate limits), but keeps the kinds apart:

- OpenAI chat completions (also DeepSeek): ``usage.prompt_tokens`` (cached included, so the
  cached part is taken out), ``completion_tokens`` (reasoning included),
  ``prompt_tokens_details.cached_tokens`` (DeepSeek: ``prompt_cache_hit_tokens``);
- OpenAI Responses: ``usage.input_tokens`` (cached included), ``output_tokens``,
  ``input_tokens_details.cached_tokens``;
- OpenAI embeddings: ``usage.prompt_tokens``, no output;
- Anthropic: ``usage.input_tokens`` (cache excluded), ``output_tokens``,
  ``cache_read_input_tokens``, ``cache_creation_input_tokens``;
- Gemini: ``usageMetadata.promptTokenCount`` (cached included), ``candidatesTokenCount``
  plus ``thoughtsTokenCount`` (billed as output), ``cachedContentTokenCount``;
- server-sent events: OpenAI chat's final chunk with ``usage`` (``stream_options.include_usage``),
  the Responses ``response.completed`` event's ``response.usage`` (also ``response.incomplete``
  and ``response.failed``, which are billed too), Anthropic's ``message_start``
  (``message.usage``) and ``message_delta`` usage (counts so far, not increments), and Gemini's
  chunks (the last ``usageMetadata``).

Anything unreadable gives ``None``, never an exception, whatever the bytes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from types import MappingProxyType
from typing import Any

from cross_instance.core.modelmatch import best_match

NANO_PER_USD = 10**9
TOKENS_PER_PRICE_UNIT = 10**6  # prices are per million tokens
CACHE_WRITE_FACTOR = Fraction(5, 4)  # Anthropic's 5-minute cache write: 1.25 x input


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens. ``cached_input``: tokens read from a prompt cache (None: the
    input price); ``cache_write``: tokens written to one, Anthropic's cache creation (None:
    1.25 x the input price, its 5-minute cache)."""

    input: float
    output: float
    cached_input: float | None = None
    cache_write: float | None = None


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """The tokens of one call by how they are priced. ``input`` excludes the cached and the
    cache-write tokens (each is counted in exactly one field)."""

    input: int
    output: int
    cached_input: int = 0
    cache_write: int = 0


# --- the default price table ------------------------------------------------------------------
PRICES_DATE = "2026-12-07"


def _p(input: float, output: float, cached: float | None = None,
       write: float | None = None) -> Price:
    return Price(input, output, cached, write)


_DEFAULT: dict[str, dict[str, Price]] = {
    "openai": {
        "gpt-4o": _p(2.50, 10.00, 1.25),
        "gpt-4o-20*": _p(2.50, 10.00, 1.25),  # dated snapshots (gpt-4o-2024-08-06, ...)
        "gpt-4o-mini": _p(0.15, 0.60, 0.075),
        "gpt-4o-mini-20*": _p(0.15, 0.60, 0.075),
        "gpt-4.1*": _p(2.00, 8.00, 0.50),
        "gpt-4.1-mini*": _p(0.40, 1.60, 0.10),
        "gpt-4.1-nano*": _p(0.10, 0.40, 0.025),
        "o3*": _p(2.00, 8.00, 0.50),
        "o3-mini*": _p(1.10, 4.40, 0.55),
        "o3-pro*": _p(20.00, 80.00),  # no cached-input discount listed
        "o4-mini*": _p(1.10, 4.40, 0.275),
        # gpt-5 and its point releases (gpt-5.1, ...) at gpt-5's price: unsure for releases
        # newer than gpt-5.1; check the price page
        "gpt-5*": _p(1.25, 10.00, 0.125),
        "gpt-5*-mini*": _p(0.25, 2.00, 0.025),
        "gpt-5*-nano*": _p(0.05, 0.40, 0.005),
        "gpt-5*-pro*": _p(15.00, 120.00),  # unsure
        "text-embedding-3-small": _p(0.02, 0.0),
        "text-embedding-3-large": _p(0.13, 0.0),
    },
    "anthropic": {
        # cache reads 0.1 x input, 5-minute cache writes 1.25 x input (1-hour writes cost
        # 2 x input: not told apart by the usage, so counted at 1.25 x)
        "claude-opus-4*": _p(15.00, 75.00, 1.50, 18.75),  # Opus 4 and 4.1
        "claude-opus-4-5*": _p(5.00, 25.00, 0.50, 6.25),
        # Sonnet 4 / 4.5 up to 200k prompt tokens; longer prompts cost 6 / 22.50 (not modelled)
        "claude-sonnet-4*": _p(3.00, 15.00, 0.30, 3.75),
        "claude-3-7-sonnet*": _p(3.00, 15.00, 0.30, 3.75),
        "claude-3-5-haiku*": _p(0.80, 4.00, 0.08, 1.00),
        "claude-haiku-4*": _p(1.00, 5.00, 0.10, 1.25),
    },
    "deepseek": {
        # unsure: the V3.2 prices (from 2025-09-29, the same for both models); earlier models
        # cost more (chat 0.27 / 1.10, reasoner 0.55 / 2.19)
        "deepseek-chat": _p(0.28, 0.42, 0.028),
        "deepseek-reasoner": _p(0.28, 0.42, 0.028),
    },
    "gemini": {
        # prompts up to 200k tokens (longer: 2.50 / 15.00, cached 0.25: not modelled);
        # unsure: the cached-input prices (cache storage per hour is billed apart)
        "gemini-2.5-pro*": _p(1.25, 10.00, 0.125),
        "gemini-2.5-flash*": _p(0.30, 2.50, 0.03),
        "gemini-2.5-flash-lite*": _p(0.10, 0.40, 0.01),  # unsure
    },
}

DEFAULT_PRICES: Mapping[str, Mapping[str, Price]] = MappingProxyType(
    {provider: MappingProxyType(models) for provider, models in _DEFAULT.items()})
"""Provider -> model glob pattern -> ``Price``, USD per million tokens, as the providers'
public price pages listed them (standard tier, no batch or priority discounts) when the table
was written (``PRICES_DATE``). It is a default only: prices change, so check them against the
providers' price pages and override them in the config (``prices``). Patterns are
``core.modelmatch`` globs; the most specific one that matches a model gives its price."""


# --- prices -----------------------------------------------------------------------------------
def price_for(prices: Mapping[str, Mapping[str, Price]], provider: str,
              model: str) -> Price | None:
    """The price of ``model`` at ``provider``: its most specific matching pattern's
    (``modelmatch.best_match``), or None when no pattern matches."""
    table = prices.get(provider)
    if not table:
        return None
    pattern = best_match(table, model)
    return None if pattern is None else table[pattern]


def _exact(usd: float) -> Fraction:
    """A price as the decimal it was written as (0.1 is one tenth, not the nearest double)."""
    if not math.isfinite(usd) or usd < 0:
        raise ValueError(f"a price must be a finite number >= 0, got {usd!r}")
    return Fraction(Decimal(repr(float(usd))))


def _nano(total_usd_tokens: Fraction) -> int:
    """USD x tokens per million as nano-dollars, rounded up."""
    return math.ceil(total_usd_tokens * NANO_PER_USD / TOKENS_PER_PRICE_UNIT)


def _count(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a token count >= 0, got {value!r}")
    return value


def cost_nano_usd(price: Price, usage: TokenUsage) -> int:
    """What ``usage`` costs at ``price``, in nano-dollars, rounded up (once, over the whole
    call). ``ValueError`` for a negative count or price."""
    cached = price.input if price.cached_input is None else price.cached_input
    write = (_exact(price.input) * CACHE_WRITE_FACTOR if price.cache_write is None
             else _exact(price.cache_write))
    total = (_exact(price.input) * _count("input", usage.input)
             + _exact(price.output) * _count("output", usage.output)
             + _exact(cached) * _count("cached_input", usage.cached_input)
             + write * _count("cache_write", usage.cache_write))
    return _nano(total)


def estimate_cost_nano_usd(price: Price, input_tokens: int, max_output_tokens: int) -> int:
    """What a call may cost before it is made: every input token at the input price and the
    whole output allowance at the output price, rounded up. An upper bound unless the call
    writes a prompt cache (Anthropic: up to 1.25 x input on the written part) or the input
    estimate is short; a budget's bound counts that excess (``core.budgets``)."""
    return _nano(_exact(price.input) * _count("input_tokens", input_tokens)
                 + _exact(price.output) * _count("max_output_tokens", max_output_tokens))


# --- usage from a response --------------------------------------------------------------------
def _int(data: Any, name: str) -> int | None:
    """A count field: an integer >= 0 (not a bool), else None."""
    if not isinstance(data, dict):
        return None
    value = data.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def _openai(usage: dict[str, Any]) -> TokenUsage | None:
    """Chat completions, embeddings (no output), and DeepSeek's cache fields."""
    prompt = _int(usage, "prompt_tokens")
    if prompt is None:
        return None
    cached = _int(usage.get("prompt_tokens_details"), "cached_tokens")
    hit = _int(usage, "prompt_cache_hit_tokens")  # DeepSeek
    cached = min(max(cached or 0, hit or 0), prompt)
    return TokenUsage(prompt - cached, _int(usage, "completion_tokens") or 0, cached)


def _responses(usage: dict[str, Any]) -> TokenUsage | None:
    given = _int(usage, "input_tokens")
    output = _int(usage, "output_tokens")
    if given is None or output is None:
        return None
    cached = min(_int(usage.get("input_tokens_details"), "cached_tokens") or 0, given)
    return TokenUsage(given - cached, output, cached)


def _anthropic(usage: dict[str, Any]) -> TokenUsage | None:
    given = _int(usage, "input_tokens")
    output = _int(usage, "output_tokens")
    if given is None or output is None:
        return None
    return TokenUsage(given, output, _int(usage, "cache_read_input_tokens") or 0,
                      _int(usage, "cache_creation_input_tokens") or 0)


def _gemini(meta: Any) -> TokenUsage | None:
    prompt = _int(meta, "promptTokenCount")
    if prompt is None:
        return None
    cached = min(_int(meta, "cachedContentTokenCount") or 0, prompt)
    output = (_int(meta, "candidatesTokenCount") or 0) + (_int(meta, "thoughtsTokenCount") or 0)
    return TokenUsage(prompt - cached, output, cached)


def _from_usage(usage: Any) -> TokenUsage | None:
    """A ``usage`` object of OpenAI (chat, embeddings, Responses) or Anthropic, told apart by
    its fields."""
    if not isinstance(usage, dict):
        return None
    if "prompt_tokens" in usage:
        return _openai(usage)
    if "cache_read_input_tokens" in usage or "cache_creation_input_tokens" in usage:
        return _anthropic(usage)
    if "input_tokens_details" in usage or "total_tokens" in usage:
        return _responses(usage)  # OpenAI Responses (input includes the cached tokens)
    return _anthropic(usage)  # Anthropic without cache fields: the same two counts


def _from_object(data: Any) -> TokenUsage | None:
    if not isinstance(data, dict):
        return None
    if "usage" in data:
        return _from_usage(data["usage"])
    if "usageMetadata" in data:
        return _gemini(data["usageMetadata"])
    return None


def _from_events(text: str) -> TokenUsage | None:
    start: Any = None  # Anthropic message_start usage
    delta: dict[str, int] = {}  # Anthropic message_delta counts (so far, not increments)
    found: TokenUsage | None = None  # OpenAI chat, Responses, Gemini: the last one given
    for line in text.splitlines():
        if not line.startswith("data:"):
            continue
        try:
            event = json.loads(line[5:].strip())
        except (ValueError, RecursionError):
            continue
        if not isinstance(event, dict):
            continue
        kind = event.get("type")
        if kind == "message_start" and isinstance(event.get("message"), dict):
            start = event["message"].get("usage")
        elif kind == "message_delta":
            usage = event.get("usage")
            if isinstance(usage, dict):
                for k in usage:
                    value = _int(usage, k)
                    if value is not None:
                        delta[k] = max(value, delta.get(k, 0))
        elif kind in ("response.completed", "response.incomplete", "response.failed"):
            response = event.get("response")
            usage = _from_usage(response.get("usage")) if isinstance(response, dict) else None
            found = usage or found
        elif event.get("usage") is not None or "usageMetadata" in event:
            found = _from_object(event) or found
    if isinstance(start, dict) or delta:
        merged = dict(start) if isinstance(start, dict) else {}
        for k, value in delta.items():  # cumulative: the larger count is the later one
            merged[k] = max(value, _int(merged, k) or 0)
        if "input_tokens" not in merged:
            merged["input_tokens"] = 0  # a delta alone: its output is still worth counting
        return _anthropic(merged)
    return found


def usage_of(body: bytes, content_type: str) -> TokenUsage | None:
    """The tokens a provider's response says its call used, by kind, from a JSON body or an
    event stream (``content_type`` holding ``event-stream``); None when it does not say or
    cannot be read. Never raises, whatever ``body`` holds."""
    try:
        text = body.decode("utf-8")
        if "event-stream" in str(content_type).lower():
            return _from_events(text)
        return _from_object(json.loads(text))
    except (ValueError, RecursionError, TypeError, AttributeError):
        return None
